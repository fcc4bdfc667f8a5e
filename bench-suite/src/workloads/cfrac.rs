//! `cfrac`: single-threaded small-object churn of a bignum program (after the classic cfrac
//! factoring benchmark).
//!
//! Numbers are malloc'd limb arrays (one header word + up to a few dozen 64-bit limbs) and
//! every arithmetic result is a fresh allocation while operands die right away, which is how
//! C bignum code such as cfrac behaves: a long stream of short-lived 16–300-byte objects, all
//! on one thread. Two phases repeat:
//!
//! * Fibonacci: F(k) by repeated addition up to F(2n+1), then the identity
//!   F(n)² + F(n+1)² = F(2n+1) is checked with full-precision multiplication.
//! * A ring of 64 live numbers, each step replacing a random one with the sum or product of
//!   two others (truncated to 1–8 limbs); the low limb is checked against the same arithmetic
//!   done in wrapping `u64`.
//!
//! Stresses: the single-thread small-object fast path (malloc/free latency), LIFO-ish reuse.
//! `--threads` is ignored: it always runs on one thread.

use rand::Rng;

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "cfrac",
    summary: "single-threaded bignum arithmetic: short-lived 16-300 B objects",
    help: "cfrac: single-threaded small-object churn (a bignum workload, after cfrac).\n\
\n\
Bignums are malloc'd limb arrays and every result is a new allocation while operands are\n\
freed at once. Phases repeat: Fibonacci numbers by repeated addition with the identity\n\
F(n)^2 + F(n+1)^2 = F(2n+1) checked at full precision, and a ring of 64 live numbers\n\
replaced by sums/products (low limb checked against wrapping u64 arithmetic).\n\
\n\
Stresses: single-thread small-object malloc/free latency. --threads is ignored (1 thread).\n\
Work: 1500 rounds at --scale 1.",
    run,
    knobs: &[],
};

const BASE_ROUNDS: u64 = 1500;
const RING: usize = 64;
const RING_STEPS: usize = 20_000;

/// A bignum: word 0 is the limb count `n` (>= 1), words 1..=n are limbs, least significant
/// first. Always a fresh malloc.
#[derive(Clone, Copy)]
struct Big(*mut u64);

impl Big {
    fn alloc(n: usize) -> Big {
        let p = common::xmalloc((n + 1) * 8) as *mut u64;
        // SAFETY: p has n + 1 words.
        unsafe { *p = n as u64 };
        Big(p)
    }
    fn len(self) -> usize {
        // SAFETY: a live Big always has its header word.
        unsafe { *self.0 as usize }
    }
    fn limbs<'a>(self) -> &'a [u64] {
        // SAFETY: a live Big has len() limbs after its header.
        unsafe { std::slice::from_raw_parts(self.0.add(1), self.len()) }
    }
    fn limbs_mut<'a>(self) -> &'a mut [u64] {
        // SAFETY: as above; callers hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(1), self.len()) }
    }
    fn from_u64(x: u64) -> Big {
        let b = Big::alloc(1);
        b.limbs_mut()[0] = x;
        b
    }
    /// Drops leading zero limbs (keeps at least one) and at most `max` limbs; reallocates to
    /// the exact size, as C bignum code does after an operation.
    fn normalize(self, max: usize) -> Big {
        let l = self.limbs();
        let mut n = l.len().min(max).max(1);
        while n > 1 && l[n - 1] == 0 {
            n -= 1;
        }
        if n == l.len() {
            return self;
        }
        let r = Big::alloc(n);
        r.limbs_mut().copy_from_slice(&l[..n]);
        self.free();
        r
    }
    fn free(self) {
        // SAFETY: every Big is freed exactly once by its owner.
        unsafe { libc::free(self.0.cast()) }
    }
    fn add(a: Big, b: Big) -> Big {
        let (a, b) = if a.len() >= b.len() { (a, b) } else { (b, a) };
        let r = Big::alloc(a.len() + 1);
        let (al, bl, rl) = (a.limbs(), b.limbs(), r.limbs_mut());
        let mut carry = 0u64;
        for i in 0..al.len() {
            let (s1, c1) = al[i].overflowing_add(if i < bl.len() { bl[i] } else { 0 });
            let (s2, c2) = s1.overflowing_add(carry);
            rl[i] = s2;
            carry = u64::from(c1) + u64::from(c2);
        }
        rl[al.len()] = carry;
        r.normalize(usize::MAX)
    }
    fn mul(a: Big, b: Big) -> Big {
        let r = Big::alloc(a.len() + b.len());
        let (al, bl, rl) = (a.limbs(), b.limbs(), r.limbs_mut());
        rl.fill(0);
        for (i, &x) in al.iter().enumerate() {
            let mut carry = 0u128;
            for (j, &y) in bl.iter().enumerate() {
                let t = u128::from(x) * u128::from(y) + u128::from(rl[i + j]) + carry;
                rl[i + j] = t as u64;
                carry = t >> 64;
            }
            rl[i + bl.len()] = carry as u64;
        }
        r.normalize(usize::MAX)
    }
    fn clone_big(self) -> Big {
        let r = Big::alloc(self.len());
        r.limbs_mut().copy_from_slice(self.limbs());
        r
    }
}

fn run(p: &Params) -> Result<Outcome, String> {
    let rounds = p.scaled(BASE_ROUNDS, 2);
    let seed = p.seed;
    let r = common::run_threads(1, move |_| {
        let mut rng = common::rng(seed, 0);
        let mut checksum = 0u64;
        let mut ops = 0u64;
        for round in 0..rounds {
            // Phase 1: Fibonacci with a full-precision identity check.
            let n = rng.gen_range(300..1200);
            let (mut a, mut b) = (Big::from_u64(0), Big::from_u64(1)); // F(0), F(1)
            let (mut fn0, mut fn1) = (None, None);
            for k in 1..=2 * n + 1 {
                // invariant: a = F(k-1), b = F(k)
                if k == n + 1 {
                    fn0 = Some(a.clone_big());
                    fn1 = Some(b.clone_big());
                }
                let c = Big::add(a, b);
                a.free();
                a = b;
                b = c;
                ops += 2;
            }
            // now a = F(2n+1)
            let (f0, f1) = (fn0.unwrap(), fn1.unwrap());
            let (s0, s1) = (Big::mul(f0, f0), Big::mul(f1, f1));
            let sum = Big::add(s0, s1);
            if sum.limbs() != a.limbs() {
                common::record_error(format!("cfrac: F({n})^2 + F({})^2 != F({}) in round {round}", n + 1, 2 * n + 1));
            }
            checksum = checksum.wrapping_add(a.limbs().iter().fold(0, |x, &y| common::mix(x ^ y)));
            for x in [a, b, f0, f1, s0, s1, sum] {
                x.free();
            }
            ops += 10;

            // Phase 2: a ring of live numbers replaced by sums and products.
            let mut ring: Vec<(Big, u64)> = (0..RING)
                .map(|_| {
                    let x: u64 = rng.gen();
                    (Big::from_u64(x), x)
                })
                .collect();
            for _ in 0..RING_STEPS {
                let (i, j, k) = (rng.gen_range(0..RING), rng.gen_range(0..RING), rng.gen_range(0..RING));
                let ((x, xs), (y, ys)) = (ring[i], ring[j]);
                let (v, vs) = if rng.gen_ratio(1, 2) {
                    (Big::add(x, y), xs.wrapping_add(ys))
                } else {
                    (Big::mul(x, y), xs.wrapping_mul(ys))
                };
                let v = v.normalize(rng.gen_range(1..=8));
                if v.limbs()[0] != vs {
                    common::record_error(format!("cfrac: ring value low limb {:#x} != {vs:#x}", v.limbs()[0]));
                }
                let (old, _) = std::mem::replace(&mut ring[k], (v, vs));
                old.free();
                ops += 2;
            }
            for (x, s) in ring {
                checksum = checksum.wrapping_add(s);
                x.free();
            }
        }
        (ops, checksum)
    });
    let (ops, checksum) = r[0];
    Ok(Outcome { ops, checksum, extra: format!("rounds={rounds}") })
}
