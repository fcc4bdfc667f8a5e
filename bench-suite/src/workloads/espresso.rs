//! `espresso`: the heap behaviour of the espresso logic minimizer (mimalloc-bench's
//! `espresso largest.espresso`), one thread.
//!
//! espresso keeps covers (ON-set, OFF-set) as *set families*: a malloc'd header plus one
//! malloc'd array of fixed-size bit sets (cubes in positional notation: two bits per binary
//! variable), grown with realloc by half its capacity when full. Its passes (expand, reduce,
//! irredundant) build short-lived families (cofactors), many short-lived single sets
//! (`set_new`/`set_free` around every intersection and consensus), and pointer arrays for
//! sorting, while the covers themselves live long and change slowly. This workload does the
//! same on four problems at once with 16, 48, 100 and 200 variables (cube sets of 8 to 56
//! bytes; family arrays from a few dozen bytes to tens of KiB):
//!
//! * pick a cube `c` of the ON-set `F`; build the cofactor family of `F` against `c` (a new
//!   family grown with realloc, one temporary set per member);
//! * for cubes at distance 1 from `c`, compute the consensus in a temporary set; some of them
//!   that do not meet the OFF-set `R` join `F` (long-lived);
//! * sort the cofactor through a malloc'd pointer array (by popcount);
//! * expand `c` by one variable if the result does not meet `R`, and drop the cubes of `F`
//!   it now contains; refill `F` with fresh minterms when it gets small; free the cofactor.
//!
//! Checks: every family keeps a hash of its members (updated on every change) that is
//! recomputed from memory when it is freed; at the end no cube of `F` meets `R` (the expand
//! invariant). The final covers are the checksum.

use rand::rngs::SmallRng;
use rand::Rng;

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "espresso",
    summary: "espresso-like (1 thread): set families grown by realloc, short-lived sets and cofactors",
    help: "espresso: the heap behaviour of the espresso logic minimizer (mimalloc-bench), one thread.\n\
\n\
Covers are set families: a malloc'd header and a malloc'd array of bit sets (cubes, 2 bits per\n\
variable) grown with realloc. Four problems (16, 48, 100, 200 variables: 8-56 B sets) run\n\
round-robin. Each step: build the cofactor family of the ON-set against a cube (a short-lived\n\
family, one temporary set per member), consensus terms in temporary sets (some join the\n\
long-lived ON-set), sort through a malloc'd pointer array, expand the cube against the\n\
OFF-set and drop the cubes it contains, refill with fresh minterms, free the cofactor.\n\
\n\
Stresses: many short-lived small blocks of varied sizes among long-lived ones, realloc growth\n\
of arrays, LIFO-ish reuse (the allocation pattern of a classic C program). Checks: every family\n\
carries a hash of its members, recomputed from memory when it is freed; no ON-set cube meets\n\
the OFF-set at the end. --threads is ignored (always 1 thread).\n\
Work: 30000 steps at --scale 1.",
    run,
    knobs: &[],
};

const VARS: [usize; 4] = [16, 48, 100, 200];
const BASE_STEPS: u64 = 30_000;
const F_MIN: usize = 64;
const F_MAX: usize = 1500;
const R_SIZE: usize = 400;

/// Words (u32) of a set with `vars` variables: one size word + the bits.
fn wps(vars: usize) -> usize {
    1 + (2 * vars).div_ceil(32)
}

/// A set family: header block (count, capacity, words per set, hash) + data block.
struct Family {
    hdr: *mut u64,
    data: *mut u32,
}

impl Family {
    fn new(wps: usize, capacity: usize) -> Family {
        let hdr = common::xmalloc(4 * 8) as *mut u64;
        let data = common::xmalloc(capacity.max(1) * wps * 4) as *mut u32;
        // SAFETY: hdr holds 4 words.
        unsafe {
            hdr.write(0);
            hdr.add(1).write(capacity.max(1) as u64);
            hdr.add(2).write(wps as u64);
            hdr.add(3).write(0)
        };
        Family { hdr, data }
    }
    fn field(&self, i: usize) -> u64 {
        // SAFETY: hdr holds 4 words.
        unsafe { *self.hdr.add(i) }
    }
    fn set_field(&mut self, i: usize, v: u64) {
        // SAFETY: hdr holds 4 words.
        unsafe { *self.hdr.add(i) = v };
    }
    fn count(&self) -> usize {
        self.field(0) as usize
    }
    fn wps(&self) -> usize {
        self.field(2) as usize
    }
    fn get(&self, i: usize) -> &[u32] {
        debug_assert!(i < self.count());
        // SAFETY: set i lies inside the data block (i < count <= capacity).
        unsafe { std::slice::from_raw_parts(self.data.add(i * self.wps()), self.wps()) }
    }
    /// Appends a set (espresso's sf_addset: grow by half the capacity with realloc when full).
    fn add(&mut self, s: &[u32]) {
        let (n, cap, w) = (self.count(), self.field(1) as usize, self.wps());
        if n == cap {
            let cap = cap + cap / 2 + 1;
            // SAFETY: data is the live data block.
            self.data = unsafe { common::xrealloc(self.data.cast(), cap * w * 4) } as *mut u32;
            self.set_field(1, cap as u64);
        }
        // SAFETY: n < capacity: the slot is inside the data block.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), self.data.add(n * w), w) };
        self.set_field(0, n as u64 + 1);
        self.set_field(3, self.field(3) ^ hash(s));
    }
    /// Removes set i (the last one moves into its place).
    fn remove(&mut self, i: usize) {
        let (n, w) = (self.count(), self.wps());
        let h = hash(self.get(i));
        if i != n - 1 {
            // SAFETY: both sets are inside the data block and distinct.
            unsafe { std::ptr::copy_nonoverlapping(self.data.add((n - 1) * w), self.data.add(i * w), w) };
        }
        self.set_field(0, n as u64 - 1);
        self.set_field(3, self.field(3) ^ h);
    }
    /// Recomputes the hash from memory, checks it and the size words, and frees the family.
    fn free(self, what: &str) -> u64 {
        let h = (0..self.count()).fold(0, |h, i| h ^ hash(self.get(i)));
        let sizes_ok = (0..self.count()).all(|i| self.get(i)[0] as usize == self.wps());
        if h != self.field(3) || !sizes_ok {
            common::record_error(format!("espresso: family {what} at {:p} was corrupted", self.data));
        }
        // SAFETY: both blocks came from malloc.
        unsafe {
            libc::free(self.data.cast());
            libc::free(self.hdr.cast());
        }
        h
    }
}

fn hash(s: &[u32]) -> u64 {
    s.iter().fold(0x51_7cc1_b727_220a, |h, &w| common::mix(h ^ u64::from(w)))
}

/// A standalone set (espresso's set_new / set_free), `w` words, size word set.
struct TempSet(*mut u32, usize);

impl TempSet {
    fn new(w: usize) -> TempSet {
        let p = common::xmalloc(w * 4) as *mut u32;
        // SAFETY: p holds w >= 2 words.
        unsafe { *p = w as u32 };
        TempSet(p, w)
    }
    fn bits(&mut self) -> &mut [u32] {
        // SAFETY: words 1..w of the block.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(1), self.1 - 1) }
    }
    fn all(&self) -> &[u32] {
        // SAFETY: the whole block.
        unsafe { std::slice::from_raw_parts(self.0, self.1) }
    }
}

impl Drop for TempSet {
    fn drop(&mut self) {
        // SAFETY: the block came from malloc.
        unsafe { libc::free(self.0.cast()) };
    }
}

/// Bits of variable v (positional notation: 01 = 0, 10 = 1, 11 = either).
fn var(s: &[u32], v: usize) -> u32 {
    s[1 + 2 * v / 32] >> (2 * v % 32) & 3
}

fn set_var(s: &mut [u32], v: usize, x: u32) {
    let (w, b) = (1 + 2 * v / 32, 2 * v % 32);
    s[w] = s[w] & !(3 << b) | x << b;
}

/// The low bit of every variable's pair, for the words after the size word.
fn pair_mask(vars: usize) -> Vec<u32> {
    (0..wps(vars) - 1).map(|k| (0..16).filter(|j| k * 16 + j < vars).fold(0u32, |m, j| m | 1 << (2 * j))).collect()
}

/// Variables where a and b do not intersect (espresso's cdist).
fn distance(a: &[u32], b: &[u32], mask: &[u32]) -> u32 {
    a[1..].iter().zip(&b[1..]).zip(mask).map(|((x, y), m)| (!((x & y) | (x & y) >> 1) & m).count_ones()).sum()
}

fn contains(a: &[u32], b: &[u32]) -> bool {
    a[1..].iter().zip(&b[1..]).all(|(x, y)| x & y == *y)
}

struct Problem {
    vars: usize,
    mask: Vec<u32>,
    on: Family,
    off: Family,
}

fn minterm(vars: usize, rng: &mut SmallRng) -> Vec<u32> {
    let mut s = vec![0u32; wps(vars)];
    s[0] = wps(vars) as u32;
    for v in 0..vars {
        set_var(&mut s, v, if rng.gen() { 2 } else { 1 });
    }
    s
}

fn meets(f: &Family, s: &[u32], mask: &[u32]) -> bool {
    (0..f.count()).any(|i| distance(f.get(i), s, mask) == 0)
}

fn refill(p: &mut Problem, rng: &mut SmallRng) {
    while p.on.count() < F_MIN {
        let m = minterm(p.vars, rng);
        if !meets(&p.off, &m, &p.mask) {
            p.on.add(&m);
        }
    }
}

/// One espresso-like step on a problem; returns a value folded into the checksum.
fn step(p: &mut Problem, rng: &mut SmallRng) -> u64 {
    let (vars, w) = (p.vars, wps(p.vars));
    let ci = rng.gen_range(0..p.on.count());
    let c: Vec<u32> = p.on.get(ci).to_vec();
    // The cofactor cube: c with about three quarters of its variables raised to "either".
    let mut q = c.clone();
    for v in 0..vars {
        if rng.gen_ratio(3, 4) {
            set_var(&mut q, v, 3);
        }
    }
    // Cofactor of F against q, and consensus terms.
    let mut cof = Family::new(w, 4 + rng.gen_range(0..8));
    for i in 0..p.on.count() {
        let f = p.on.get(i);
        match distance(f, &q, &p.mask) {
            0 => {
                let mut t = TempSet::new(w);
                for (k, x) in t.bits().iter_mut().enumerate() {
                    *x = f[1 + k] | !q[1 + k];
                }
                cof.add(t.all());
            }
            1 if p.on.count() < F_MAX && rng.gen_ratio(1, 16) => {
                let mut t = TempSet::new(w);
                for (k, x) in t.bits().iter_mut().enumerate() {
                    *x = f[1 + k] & q[1 + k];
                }
                if let Some(v) = (0..vars).find(|&v| var(f, v) & var(&q, v) == 0) {
                    set_var(t.bits_all(), v, var(f, v) | var(&q, v));
                }
                let cube = t.all().to_vec();
                if !meets(&p.off, &cube, &p.mask) {
                    p.on.add(&cube);
                }
            }
            _ => {}
        }
    }
    // Sort the cofactor by popcount through a pointer array.
    let n = cof.count();
    let mut order = 0u64;
    if n > 0 {
        let arr = common::xmalloc(n * std::mem::size_of::<usize>()) as *mut usize;
        // SAFETY: arr holds n indices.
        let idx = unsafe { std::slice::from_raw_parts_mut(arr, n) };
        for (i, x) in idx.iter_mut().enumerate() {
            *x = i;
        }
        idx.sort_by_key(|&i| (cof.get(i)[1..].iter().map(|x| x.count_ones()).sum::<u32>(), i));
        order = idx.iter().take(8).fold(0, |h, &i| common::mix(h ^ i as u64));
        // SAFETY: arr came from malloc.
        unsafe { libc::free(arr.cast()) };
    }
    // Expand c by one variable if it stays off R; drop the cubes it now contains.
    let v = rng.gen_range(0..vars);
    if var(&c, v) != 3 {
        let mut e = c.clone();
        set_var(&mut e, v, 3);
        if !meets(&p.off, &e, &p.mask) {
            let mut i = 0;
            while i < p.on.count() {
                if contains(&e, p.on.get(i)) {
                    p.on.remove(i);
                } else {
                    i += 1;
                }
            }
            p.on.add(&e);
        }
    }
    refill(p, rng);
    common::mix(cof.free("cofactor") ^ order)
}

impl TempSet {
    /// The whole set including the size word (for helpers that index variables from word 1).
    fn bits_all(&mut self) -> &mut [u32] {
        // SAFETY: the whole block.
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1) }
    }
}

fn run(p: &Params) -> Result<Outcome, String> {
    let mut rng = common::rng(p.seed, 0xe5);
    let mut problems: Vec<Problem> = VARS
        .iter()
        .map(|&vars| {
            let mut off = Family::new(wps(vars), 16);
            while off.count() < R_SIZE {
                off.add(&minterm(vars, &mut rng));
            }
            let mut pr = Problem { vars, mask: pair_mask(vars), on: Family::new(wps(vars), 16), off };
            refill(&mut pr, &mut rng);
            pr
        })
        .collect();
    let steps = p.scaled(BASE_STEPS, 4);
    let mut sum = 0u64;
    for s in 0..steps {
        let pr = &mut problems[(s % VARS.len() as u64) as usize];
        sum = common::mix(sum ^ step(pr, &mut rng));
    }
    let mut sizes = Vec::new();
    for pr in problems {
        for i in 0..pr.on.count() {
            if meets(&pr.off, pr.on.get(i), &pr.mask) {
                return Err(format!("espresso: an ON-set cube of the {}-variable problem meets the OFF-set", pr.vars));
            }
        }
        sizes.push(pr.on.count());
        sum = common::mix(sum ^ pr.on.free("ON-set") ^ pr.off.free("OFF-set").rotate_left(7));
    }
    Ok(Outcome { ops: steps, checksum: sum, extra: format!("steps={steps} on_sets={sizes:?}").replace(' ', "") })
}
