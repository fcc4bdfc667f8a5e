//! Helpers shared by the workloads: parameters, C heap wrappers, block stamping and checking,
//! error recording, seeded RNGs, RSS probes and pinned thread spawning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Parameters common to every workload.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of worker threads (default: the CPUs this process may run on).
    pub threads: usize,
    /// Work multiplier: 1.0 is the default amount of work, `--quick` runs use about 0.1.
    pub scale: f64,
    /// Seed of every RNG (each thread derives its own stream from it).
    pub seed: u64,
    /// Pin worker threads round-robin over cores with hwloc.
    pub pin: bool,
    /// Workload-specific knobs (`None` = the workload's default); only the workloads that list a
    /// knob in [`crate::workloads::Workload::knobs`] accept it.
    pub knobs: Knobs,
}

/// Workload-specific parameters.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// `test-stress`: the per-thread load (test-stress.c's SCALE, in percent).
    pub load: Option<u64>,
    /// `test-stress`: full iterations (all threads destroyed and recreated each time).
    pub iterations: Option<u64>,
    /// `xmalloc`: object size in bytes; -1 = the mixed sizes of xmalloc-test's `-s -1`.
    pub object_size: Option<i64>,
}

impl Params {
    /// The defaults every workload runs with when no option is given.
    pub fn defaults() -> Params {
        Params { threads: default_threads(), scale: 1.0, seed: 42, pin: false, knobs: Knobs::default() }
    }

    /// Scales a base iteration count, never below `min`.
    pub fn scaled(&self, base: u64, min: u64) -> u64 {
        ((base as f64 * self.scale).round() as u64).max(min)
    }
}

/// What a workload reports on success.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Allocation operations performed (mallocs + frees + reallocs, roughly).
    pub ops: u64,
    /// A checksum of the data read back from blocks; identical under every allocator.
    pub checksum: u64,
    /// Free-form extra facts for the RESULT line (`key=value` pairs).
    pub extra: String,
}

/// The number of CPUs this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A raw heap block handed between threads.
#[derive(Clone, Copy, Debug)]
pub struct Blk {
    /// Start of the block (from `malloc`).
    pub p: *mut u8,
    /// Requested size.
    pub size: usize,
    /// The tag stamped into it.
    pub tag: u64,
}

// SAFETY: a Blk is a plain handle to a malloc'd block; ownership moves with the value and
// malloc/free are thread-safe, which is precisely what the workloads exercise.
unsafe impl Send for Blk {}

impl Blk {
    /// An empty slot.
    pub const NULL: Blk = Blk { p: std::ptr::null_mut(), size: 0, tag: 0 };

    /// `malloc(size)`, stamped with `tag`.
    pub fn new(size: usize, tag: u64) -> Blk {
        let p = xmalloc(size);
        // SAFETY: p points to size writable bytes.
        unsafe { stamp(p, size, tag) };
        Blk { p, size, tag }
    }

    /// Whether this slot holds a block.
    pub fn is_some(&self) -> bool {
        !self.p.is_null()
    }

    /// Checks the stamp, records an error if it is damaged, frees the block and returns a
    /// checksum contribution.
    ///
    /// # Safety
    /// The block must be live and owned by the caller.
    pub unsafe fn check_free(self, what: &str) -> u64 {
        // SAFETY: forwarded from the caller.
        let ok = unsafe { verify(self.p, self.size, self.tag) };
        if !ok {
            record_error(format!("{what}: block {:p} of {} bytes lost its stamp", self.p, self.size));
        }
        // SAFETY: the block came from malloc and is owned by the caller.
        unsafe { libc::free(self.p.cast()) };
        self.tag ^ self.size as u64
    }
}

/// `malloc` that aborts the workload (exit 2) on NULL.
pub fn xmalloc(size: usize) -> *mut u8 {
    // SAFETY: plain C malloc.
    let p = unsafe { libc::malloc(size) } as *mut u8;
    if p.is_null() && size != 0 {
        oom("malloc", size);
    }
    p
}

/// `calloc` that aborts the workload (exit 2) on NULL.
pub fn xcalloc(n: usize, size: usize) -> *mut u8 {
    // SAFETY: plain C calloc.
    let p = unsafe { libc::calloc(n, size) } as *mut u8;
    if p.is_null() && n * size != 0 {
        oom("calloc", n * size);
    }
    p
}

/// `realloc` that aborts the workload (exit 2) on NULL.
///
/// # Safety
/// `p` must be NULL or a live block from malloc/calloc/realloc.
pub unsafe fn xrealloc(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: forwarded from the caller.
    let q = unsafe { libc::realloc(p.cast(), size) } as *mut u8;
    if q.is_null() && size != 0 {
        oom("realloc", size);
    }
    q
}

fn oom(what: &str, size: usize) -> ! {
    eprintln!("error: {what}({size}) returned NULL");
    std::process::exit(2);
}

/// Writes `tag` into the head (up to 8 bytes) and `!tag` into the last 8 bytes of a block.
///
/// # Safety
/// `p` must point to `size` writable bytes.
#[inline]
pub unsafe fn stamp(p: *mut u8, size: usize, tag: u64) {
    // SAFETY (whole fn): all writes stay inside [p, p + size).
    unsafe {
        if size >= 8 {
            (p as *mut u64).write_unaligned(tag);
            if size >= 16 {
                (p.add(size - 8) as *mut u64).write_unaligned(!tag);
            }
        } else {
            for i in 0..size {
                *p.add(i) = (tag >> (8 * i)) as u8;
            }
        }
    }
}

/// Checks a stamp written by [`stamp`].
///
/// # Safety
/// `p` must point to `size` readable bytes.
#[inline]
pub unsafe fn verify(p: *const u8, size: usize, tag: u64) -> bool {
    // SAFETY (whole fn): all reads stay inside [p, p + size).
    unsafe {
        if size >= 8 {
            if (p as *const u64).read_unaligned() != tag {
                return false;
            }
            if size >= 16 && (p.add(size - 8) as *const u64).read_unaligned() != !tag {
                return false;
            }
            true
        } else {
            (0..size).all(|i| *p.add(i) == (tag >> (8 * i)) as u8)
        }
    }
}

/// SplitMix64: a cheap, good 64-bit mixer for tags and seeds.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The RNG of stream `stream` (a thread index, a round, ...) under the run's seed.
pub fn rng(seed: u64, stream: u64) -> SmallRng {
    SmallRng::seed_from_u64(mix(seed ^ mix(stream.wrapping_add(1))))
}

static ERRORS: AtomicU64 = AtomicU64::new(0);
static FIRST_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records a verification failure (the first few messages are kept for the report).
pub fn record_error(msg: String) {
    let n = ERRORS.fetch_add(1, Ordering::Relaxed);
    if n < 10 {
        if let Ok(mut v) = FIRST_ERRORS.lock() {
            v.push(msg);
        }
    }
}

/// Number of verification failures so far and the first messages.
pub fn errors() -> (u64, Vec<String>) {
    let n = ERRORS.load(Ordering::Relaxed);
    let v = FIRST_ERRORS.lock().map(|v| v.clone()).unwrap_or_default();
    (n, v)
}

/// Current resident set size in bytes (from /proc/self/statm), 0 if unknown.
pub fn current_rss() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = s.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf is always safe to call.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// Peak resident set size of this process so far, in bytes.
pub fn peak_rss() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss as u64 * 1024
    }
}

/// Runs `f(i)` on `n` scoped threads, thread `i` pinned to core `i` round-robin, and collects
/// their results in order.
pub fn run_threads<T: Send, F: Fn(usize) -> T + Sync>(n: usize, f: F) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn_scoped(s, move || {
                        crate::pin::pin_current(i);
                        f(i)
                    })
                    .expect("spawn worker thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker thread panicked")).collect()
    })
}

/// Splits `total` units of work over `n` workers; worker `i` gets its share.
pub fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    let i = i as u64;
    total / n + u64::from(i < total % n)
}
