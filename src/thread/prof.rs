//! Live bytes and heap profiling: what the program holds, counted off the fast paths.
//!
//! # Live bytes
//! The usable size of every block the program holds (jemalloc's `allocated`, beside the
//! statistics' `in_use_bytes`, which is span occupancy: jemalloc's `active`). Requested sizes of
//! small blocks are not kept anywhere, so small blocks count their class's size; large and huge
//! blocks their usable size. Nothing is added to the fast paths: the owner's allocations and
//! frees are counted in the page's counts already, and reach [`LIVE`] when the page's counts are
//! folded into its heap (at every refill: one add per page's worth of blocks); frees by a heap
//! that does not own the page are counted per batch where the heap counts them; large and huge
//! blocks in their slow paths. Each heap gathers those counts in a counter of its own and adds
//! them to [`LIVE`] a MiB at a time ([`LIVE_BATCH`]), at its thread's exit and when the
//! statistics are read. The high-water
//! mark [`LIVE_PEAK`] is taken at those moments, so it may miss a peak by the blocks of the
//! pages heaps hold unfolded (at most a span per class per thread) and by less than a MiB per
//! thread. The statistics' current value is exact (read from every heap and page).
//!
//! # The sampling heap profiler (`DOMALLOC_PROF=1`, or [`start`])
//! Allocations are sampled by bytes: each thread counts down a random interval (exponentially
//! distributed, mean `DOMALLOC_PROF_SAMPLE`, 512 KiB by default, so a sample stands for that
//! many bytes) and the allocation that finds it run out is sampled. Nothing is added to the
//! fast paths: small blocks are counted down where their page's counts are folded (at refills),
//! and the sample is the allocation the next refill serves; large and huge blocks (always slow
//! paths) count their own size. A sampled allocation records its call stack (the frame-pointer
//! walk of [`os::frame_walk`], bounded by the thread's stack mapping: full depth needs the
//! program built with `-fno-omit-frame-pointer` / `-C force-frame-pointers=yes`), its size,
//! thread, node of the allocating CPU and time, in fixed tables mapped once at [`start`]: call
//! sites (stack -> allocated, live, live-at-peak, freed and remote-freed bytes) and live sampled
//! blocks (address -> site). A free records the freeing node (remote when it is not the
//! allocating one) and the lifetime. With profiling off, each hook is one load of a flag that
//! is false, on paths that are slow already.
//!
//! **Sampled small allocations are promoted** (jemalloc's word): the refill's block goes back to
//! its page (as the owner's free puts it back: [`free::free_unused`]) and the program gets a
//! large block of the heap's node instead ([`small_refilled`]), one span of whole 64 KiB pages
//! of which only the pages touched become resident (about one 4 KiB page per live sample). So a
//! small page never holds a sample and no small free looks anything up; a sampled block's free
//! is a large free, a slow path already, which looks the block up ([`big_freed`]) only when the
//! counting filter of live samples' addresses ([`SAMPLE_FILTER`]) says it may be one: the frees
//! of unsampled large blocks skip the tables' lock. What a promoted sample looks like to the
//! program and the statistics: a large block (`malloc_usable_size` is its span's size, 64 KiB
//! for any small class below it; it counts in the live bytes and `large_bytes` at that size,
//! the small block it replaced as one allocation and one free of its class); the profile
//! records it at its class's size.
//!
//! [`free::free_unused`]: crate::thread::free::free_unused
//!
//! # Periodic dumps (`DOMALLOC_PROF_INTERVAL`)
//! A thread of the profiler's own ([`start_periodic`]) calls the profile writer the statistics
//! layer installs, every interval, with every signal blocked; exit and SIGTERM wait for a dump
//! it is writing ([`stop_periodic`]); it ends when it is the last thread of the process.

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::layout::size_class::class_size;
use crate::sys::os::{self, Os, Sys};
use crate::sys::Lock;
use crate::sys::LockKind;
use crate::thread::heap::Heap;

/// Live bytes as folded so far (signed: a remote free may be counted before the owner folds the
/// block's allocation).
static LIVE: AtomicI64 = AtomicI64::new(0);
/// The highest value [`LIVE`] has had.
static LIVE_PEAK: AtomicI64 = AtomicI64::new(0);

/// Bytes a heap gathers in its own counter before adding them to [`LIVE`]: one
/// shared atomic add per MiB allocated or freed, instead of one per refill and per batch of
/// remote frees. That add, on one cache line for every thread, cost 12-23% of the time of
/// larson, rptest and sh6bench with profiling off (`bench --lib` of the commit before the live
/// bytes against the one after, and of this build with the adds taken out).
const LIVE_BATCH: u64 = 1 << 20;

#[inline]
fn live_add(delta: i64) {
    live_add_in(crate::thread::tls::own_heap(), delta);
}

/// [`live_add`] by heap `h`: gathered in its counter when it is the calling thread's own heap;
/// else (a sentinel, or a parked heap whose pages a sweep folds) added to the gauge at once.
#[inline]
fn live_add_in(h: *mut Heap, delta: i64) {
    if crate::thread::tls::is_sentinel(h) || h != crate::thread::tls::own_heap() {
        // No heap of this thread's (yet, or any more): nothing would flush its counter.
        return live_add_shared(delta);
    }
    // SAFETY: the calling thread's own heap; only this thread uses its counter.
    let c = unsafe { &(*h).live_acc };
    let acc = c.get().wrapping_add(delta);
    if acc.unsigned_abs() < LIVE_BATCH {
        c.set(acc);
        return;
    }
    c.set(0);
    live_add_shared(acc);
}

fn live_add_shared(delta: i64) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed).wrapping_add(delta);
    if delta > 0 && now > LIVE_PEAK.load(Ordering::Relaxed) {
        LIVE_PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// [`flush_live`] of the calling thread's heap.
pub(crate) fn flush_own_live() {
    flush_live(crate::thread::tls::own_heap());
}

/// Adds what heap `h` (the calling thread's, or a sentinel) gathered to [`LIVE`]: at thread
/// exit, and before the gauge is read.
pub(crate) fn flush_live(h: *mut Heap) {
    if crate::thread::tls::is_sentinel(h) {
        return;
    }
    // SAFETY: as in `live_add_in`.
    let acc = unsafe { (*h).live_acc.replace(0) };
    if acc != 0 {
        live_add_shared(acc);
    }
}

/// A page's counts folded into its owner's heap: `allocs` blocks of class `c` handed out and
/// `frees` freed by the owner since the last fold.
#[inline]
pub(crate) fn fold_small(h: *mut Heap, c: usize, allocs: u32, frees: u32) {
    live_add_in(h, (allocs as i64 - frees as i64) * class_size(c) as i64);
    if ON.load(Ordering::Relaxed) {
        count_down(allocs as u64 * class_size(c) as u64);
    }
}

/// `n` blocks of class `c` freed by a heap that does not own their page (or a heapless thread).
#[inline]
pub(crate) fn freed_small(h: *mut Heap, c: usize, n: u64) {
    live_add_in(h, -((n * class_size(c) as u64) as i64));
}

/// Large or huge block `p` of `bytes` (usable size) handed out.
#[inline]
pub(crate) fn big_allocated(p: *mut u8, bytes: usize) {
    live_add(bytes as i64);
    if ON.load(Ordering::Relaxed) {
        big_sample(p, bytes);
    }
}

/// Large or huge block `p` of `bytes` (usable size) freed (or moved away by `realloc`): looked
/// up in the samples table, under its lock, only if the filter counts a live sample at its hash
/// (a sample is counted there, under the lock, before its block is handed out, so before any
/// thread can free it).
#[inline]
pub(crate) fn big_freed(p: *mut u8, bytes: usize) {
    live_add(-(bytes as i64));
    if EVER.load(Ordering::Relaxed) && SAMPLE_FILTER[filter_slot(p as usize)].load(Ordering::Acquire) != 0 {
        freed(p as usize);
    }
}

/// The live bytes as folded so far and their high-water mark (see the module documentation).
pub(crate) fn live_folded() -> (u64, u64) {
    (LIVE.load(Ordering::Relaxed).max(0) as u64, LIVE_PEAK.load(Ordering::Relaxed).max(0) as u64)
}

// ---- the sampling profiler ----

/// Return addresses kept per call stack.
pub(crate) const MAX_FRAMES: usize = 30;
/// Call sites the table holds (a power of two; further stacks are counted in site 0).
const SITES: usize = 4096;
/// Live sampled blocks the table holds (a power of two; further samples are dropped, counted).
const SAMPLES: usize = 1 << 16;

/// One call site: its stack and what its samples add up to (bytes are sample weights).
#[repr(C)]
pub(crate) struct Site {
    /// The stack's hash (0: the slot is free; site 0 holds stacks that found no slot).
    hash: u64,
    /// Valid entries of `frames`.
    pub(crate) depth: u32,
    /// Return addresses, innermost first.
    pub(crate) frames: [usize; MAX_FRAMES],
    /// Bytes allocated (estimated from the samples) and samples taken.
    pub(crate) alloc_bytes: u64,
    /// Samples taken here.
    pub(crate) samples: u64,
    /// Bytes allocated and not yet freed.
    pub(crate) live_bytes: u64,
    /// `live_bytes` when the sampled live bytes were at their highest.
    pub(crate) peak_bytes: u64,
    /// Bytes freed, and of them those freed on another node than the allocating CPU's.
    pub(crate) freed_bytes: u64,
    /// See `freed_bytes`.
    pub(crate) remote_bytes: u64,
    /// Sum of the freed samples' lifetimes in ms, and how many there were.
    pub(crate) lifetime_ms: u64,
    /// See `lifetime_ms`.
    pub(crate) freed_samples: u64,
    /// Bytes allocated per node of the allocating CPU (slot `min(node, 3)`).
    pub(crate) node_bytes: [u64; 4],
    /// Sum of the sampled blocks' sizes (their mean: `sizes / samples`).
    pub(crate) sizes: u64,
    /// Allocating threads: bit `thread id % 64` (its population: a lower bound of how many).
    pub(crate) threads: u64,
}

/// One live sampled block.
#[repr(C)]
struct Sample {
    /// Block address (0: free slot).
    addr: usize,
    weight: u64,
    t_ms: u64,
    site: u32,
    node: u16,
    _pad: u16,
    /// The allocating thread.
    thread: u32,
    /// The block's size.
    size: u64,
}

/// Counters of the counting filter of live samples (a power of two).
const FILTER: usize = 8192;
/// Live samples (large, huge and promoted blocks) per hash of their address, changed with the
/// samples table (under the tables' lock) and read without it: a large or huge free whose
/// counter is 0 is not a sample's, and skips the lock and the look-up (rptest frees many large
/// blocks: each took the lock while profiling).
static SAMPLE_FILTER: [AtomicU32; FILTER] = [const { AtomicU32::new(0) }; FILTER];

fn filter_slot(addr: usize) -> usize {
    ((addr as u64 >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 51) as usize & (FILTER - 1)
}

/// Executable mappings the profiler knows (re-read at most once a second while sampling).
const CODE_RANGES: usize = 256;

struct Tables {
    /// Executable mappings, for telling return addresses from data in the frame walk.
    code: [(usize, usize); CODE_RANGES],
    code_len: usize,
    code_read_ms: u64,
    /// The allocator's own code's mapping.
    own: (usize, usize),
    sites: *mut Site,
    /// The slots of `sites` that have samples, in the order they got their first (the peak
    /// update and the dumps visit these, not the whole table).
    used: [u16; SITES],
    n_used: usize,
    samples: *mut Sample,
    live: u64,
    peak: u64,
    /// `live` when the sites' `peak_bytes` were last taken (taken again 1/64 above it).
    peak_taken: u64,
    live_samples: usize,
    dropped: u64,
}

// SAFETY: the tables are process-wide memory, used under the lock only.
unsafe impl Send for Tables {}

static TABLES: Lock<Tables> = Lock::new(
    LockKind::Other,
    Tables {
        code: [(0, 0); CODE_RANGES],
        code_len: 0,
        code_read_ms: 0,
        own: (0, 0),
        sites: core::ptr::null_mut(),
        used: [0; SITES],
        n_used: 0,
        samples: core::ptr::null_mut(),
        live: 0,
        peak: 0,
        peak_taken: 0,
        live_samples: 0,
        dropped: 0,
    },
);
/// Sampling on.
static ON: AtomicBool = AtomicBool::new(false);
/// The tables exist (frees of sampled blocks are looked up, even after [`stop`]).
static EVER: AtomicBool = AtomicBool::new(false);
/// Mean bytes between samples.
static INTERVAL: AtomicU64 = AtomicU64::new(512 << 10);

const TABLES_BYTES: usize =
    (SITES * core::mem::size_of::<Site>() + SAMPLES * core::mem::size_of::<Sample>() + 0xffff) & !0xffff;

/// Starts sampling every `interval` bytes on average (0: the option's value); maps the tables
/// the first time. False if they cannot be mapped.
pub(crate) fn start(interval: u64) -> bool {
    let interval = if interval == 0 { crate::config::options::get().prof_sample.max(1) } else { interval };
    INTERVAL.store(interval, Ordering::Relaxed);
    let mut t = TABLES.lock();
    if t.sites.is_null() {
        // SAFETY: a fresh anonymous mapping (zeroed: every slot free).
        let m = unsafe { os::map_aligned(TABLES_BYTES, 1 << 16) };
        if m.is_null() {
            return false;
        }
        t.sites = m.cast();
        // SAFETY: inside the mapping (TABLES_BYTES holds both tables).
        t.samples = unsafe { m.add(SITES * core::mem::size_of::<Site>()) }.cast();
        EVER.store(true, Ordering::Release);
    }
    drop(t);
    ON.store(true, Ordering::Release);
    true
}

/// Stops sampling (frees of blocks sampled so far are still recorded).
pub(crate) fn stop() {
    ON.store(false, Ordering::Release);
}

/// Whether sampling is on.
pub(crate) fn active() -> bool {
    ON.load(Ordering::Relaxed)
}

// The calling thread's profiler words (`os::tls::prof_words`).
const W_LEFT: usize = 0; // bytes left until the next sample (as i64)
const W_STACK_END: usize = 1; // end of the stack's mapping (0: not looked up; 1: none found)
const W_RNG: usize = 2; // xorshift state (0: not seeded)
const W_PENDING: usize = 3; // samples owed to the next refill's allocation (small classes)

fn words() -> &'static mut [u64; os::tls::PROF_WORDS] {
    // SAFETY: this thread's own words, used by this thread only and never across a call that
    // could use them again (no reentry: the profiler does not allocate).
    unsafe { &mut *os::tls::prof_words() }
}

/// The next interval: exponentially distributed with mean [`INTERVAL`].
fn next_interval(w: &mut [u64; os::tls::PROF_WORDS]) -> i64 {
    if w[W_RNG] == 0 {
        w[W_RNG] = Sys::random_u64() | 1;
    }
    let mut x = w[W_RNG];
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w[W_RNG] = x;
    let u = ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) + 1) as f64 / (1u64 << 53) as f64; // (0, 1]
    let mean = INTERVAL.load(Ordering::Relaxed) as f64;
    ((-ln(u) * mean) as i64).max(1)
}

/// Natural logarithm without libm (`core` has none): frexp by the exponent bits, then the
/// atanh series, to ~1e-10.
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1022;
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52)); // in [0.5, 1)
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let mut term = z;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 40.0 {
        sum += term / k;
        term *= z2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * core::f64::consts::LN_2
}

/// Counts `bytes` allocated by this thread; a run-out interval is owed to the allocation the
/// refill serves ([`small_refilled`]).
fn count_down(bytes: u64) {
    let w = words();
    if w[W_RNG] == 0 {
        w[W_LEFT] = next_interval(w) as u64;
    }
    let mut left = w[W_LEFT] as i64 - bytes as i64;
    while left <= 0 {
        w[W_PENDING] += 1;
        left += next_interval(w);
    }
    w[W_LEFT] = left as u64;
}

/// The block `p` (reading as zero: `zero`) that a refill of heap `h` (the calling thread's) just
/// handed out for an allocation: returned as it is, or, if an interval ran out, the sample: a
/// large block in its stead (see the module documentation), and whether that reads as zero.
/// One flag load when profiling is off.
#[inline]
pub(crate) fn small_refilled(h: *mut crate::thread::heap::Heap, p: *mut u8, zero: bool) -> (*mut u8, bool) {
    if ON.load(Ordering::Relaxed) && !p.is_null() {
        return promote(h, p, zero);
    }
    (p, zero)
}

/// [`small_refilled`] while sampling. A sample owed stays owed (to the next refill) when `p` is
/// not a block of `h`'s page (a placed block from a home pool: not counted in its page, so it
/// cannot go back as the owner's free would put it); it is dropped, and `p` handed out
/// unsampled, when the large block cannot be had (out of memory: trying again at every refill
/// would cost a failed allocation each) or the samples table is full (counted as dropped).
#[cold]
#[inline(never)]
fn promote(h: *mut crate::thread::heap::Heap, p: *mut u8, zero: bool) -> (*mut u8, bool) {
    #[cfg(test)]
    if !PROMOTES.with(|on| on.get()) {
        return (p, zero);
    }
    let w = words();
    let owed = w[W_PENDING];
    if owed == 0 {
        return (p, zero);
    }
    let Some((_, page)) = crate::layout::lookup(p) else { return (p, zero) };
    // SAFETY: a live page (the refill just handed `p` out of it); `h` is a real heap of this
    // thread (the caller's), whose bins only this thread reads.
    let (pg, bin) = unsafe { (&*page, (*h).bins.get((*page).class.get() as usize)) };
    // The refill hands out a block of the page at the head of the class's queue (after
    // collecting, carving or bumping: counted in the page), or one from a home pool.
    if bin.map(|b| b.page.get()) != Some(page) || !pg.owned_by(h as usize) {
        return (p, zero);
    }
    w[W_PENDING] = 0;
    let size = pg.block_size.get() as usize;
    let (q, q_zero) = crate::thread::large::alloc_uncleared(pg.node(), size);
    if q.is_null() {
        return (p, zero);
    }
    if !record(q as usize, size as u64, owed * INTERVAL.load(Ordering::Relaxed), os::stack_pointer()) {
        // SAFETY: the large block just allocated, never handed out.
        unsafe { free_large(h, q) };
        return (p, zero);
    }
    // SAFETY: `h` owns `page` (checked), `p` was just handed out of it and is counted there.
    unsafe { crate::thread::free::free_unused(h, page, p.cast()) };
    // As `big_allocated` counts a large block (without its count-down: the program's allocation
    // is the small block's, counted at the next fold), and as `big_freed` will take it off.
    live_add(crate::thread::large::usable_size(size) as i64);
    (q, q_zero)
}

/// Gives back large block `q`, allocated and never handed out (a promotion that found no room
/// for its sample).
///
/// # Safety
/// `q` is such a block; `h` the calling thread's heap.
#[cold]
unsafe fn free_large(h: *mut crate::thread::heap::Heap, q: *mut u8) {
    if let Some((_, page)) = crate::layout::lookup(q) {
        // SAFETY: the caller's contract: the live large span's head and its start.
        unsafe { crate::thread::large::free(h, page, q) };
    }
}

#[cold]
#[inline(never)]
fn big_sample(p: *mut u8, bytes: usize) {
    if p.is_null() {
        return;
    }
    let w = words();
    if w[W_RNG] == 0 {
        w[W_LEFT] = next_interval(w) as u64;
    }
    let mut left = w[W_LEFT] as i64 - bytes as i64;
    if left > 0 {
        w[W_LEFT] = left as u64;
        return;
    }
    while left <= 0 {
        left += next_interval(w);
    }
    w[W_LEFT] = left as u64;
    // A block of size s is sampled with probability 1 - exp(-s/T): it stands for s / that.
    let t = INTERVAL.load(Ordering::Relaxed) as f64;
    let s = bytes as f64;
    let x = s / t;
    let p_sampled = if x > 30.0 { 1.0 } else { 1.0 - 1.0 / exp(x) };
    record(p as usize, bytes as u64, (s / p_sampled.max(1e-12)) as u64, os::stack_pointer());
}

fn exp(x: f64) -> f64 {
    // e^x = 2^k * e^r, |r| <= ln2/2; the Taylor series of e^r.
    let k = (x / core::f64::consts::LN_2 + 0.5) as i64;
    let r = x - k as f64 * core::f64::consts::LN_2;
    let (mut term, mut sum, mut i) = (1.0, 1.0, 1.0);
    while i < 25.0 {
        term *= r / i;
        sum += term;
        i += 1.0;
    }
    sum * f64::from_bits(((k + 1023).clamp(1, 2046) as u64) << 52)
}

/// The end of the calling thread's stack mapping (cached per thread; 0 if not found). Looked up
/// at the thread's first sample: one question to the kernel ([`Os::readable_mapping_of`]), not
/// a read of every mapping of the process (which cost larson, whose threads come and go, 15%
/// of all its instructions).
fn stack_end() -> usize {
    let w = words();
    if w[W_STACK_END] == 0 {
        let sp = os::stack_pointer();
        w[W_STACK_END] = Sys::readable_mapping_of(sp).map_or(1, |(_, end)| end) as u64;
    }
    match w[W_STACK_END] as usize {
        1 => 0,
        e => e,
    }
}

fn hash_frames(frames: &[usize]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &f in frames {
        h = (h ^ f as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

fn slot_of_addr(addr: usize) -> usize {
    ((addr as u64 >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as usize & (SAMPLES - 1)
}

/// Reads the executable mappings into `t.code` (and which one holds this code into `t.own`).
fn read_code_ranges(t: &mut Tables, now: u64) {
    let here = read_code_ranges as *const () as usize;
    let (mut n, mut own) = (0, (0, 0));
    let code = &mut t.code;
    Sys::for_each_code_mapping(&mut |m| {
        if m.executable && m.readable && n < CODE_RANGES {
            code[n] = (m.start, m.end);
            n += 1;
            // The allocator's frames are told apart by their mapping when it is a shared library
            // (preloaded or linked); linked into the program, by nothing (see `os::frame_walk`).
            if m.start <= here && here < m.end && m.path.windows(3).any(|w| w == b".so") {
                own = (m.start, m.end);
            }
        }
    });
    // Sorted by start (the kernel lists mappings in address order; made sure of).
    for i in 1..n {
        let mut j = i;
        while j > 0 && code[j - 1].0 > code[j].0 {
            code.swap(j - 1, j);
            j -= 1;
        }
    }
    t.code_len = n;
    t.own = own;
    t.code_read_ms = now;
}

/// Records a sample of `size` bytes at `addr` (a large or huge block) standing for `weight`
/// bytes; false if the tables do not exist or are full. `sp`: the caller's stack pointer (the
/// call stack is searched above it: the frames below are the profiler's own).
#[inline(never)]
fn record(addr: usize, size: u64, weight: u64, sp: usize) -> bool {
    let end = stack_end();
    let node = Sys::current_cpu().and_then(|c| crate::config::topology::get().cpu_node(c)).unwrap_or(0);
    let now = Sys::now_ms();
    let thread = os::thread_id();
    let mut t = TABLES.lock();
    if t.sites.is_null() {
        return false;
    }
    if now >= t.code_read_ms + 1000 || t.code_len == 0 {
        read_code_ranges(&mut t, now);
    }
    let mut frames = [0usize; MAX_FRAMES];
    let depth = {
        let code = &t.code[..t.code_len];
        // (Asked for every word of the stack the walk scans: a binary search of the ranges,
        // which `read_code_ranges` keeps sorted and disjoint.)
        let (lo, hi) = match code {
            [] => (0, 0),
            [first, .., last] => (first.0, last.1),
            [only] => (only.0, only.1),
        };
        let is_code = |a: usize| {
            if a < lo || a >= hi {
                return false; // small numbers; stack addresses (above every library here)
            }
            let i = code.partition_point(|&(s, _)| s <= a);
            i > 0 && a < code[i - 1].1
        };
        os::frame_walk(&mut frames, sp, end, &is_code, t.own)
    };
    let frames = &frames[..depth];
    let (sites, samples) = (t.sites, t.samples);
    // The call site.
    let h = hash_frames(frames);
    let mut site = 0usize;
    let mut i = (h as usize) & (SITES - 1);
    for _ in 0..64 {
        if i != 0 {
            // SAFETY: `i < SITES`, inside the table; under the lock.
            let s = unsafe { &mut *sites.add(i) };
            if s.hash == 0 {
                s.hash = h;
                s.depth = depth as u32;
                s.frames[..depth].copy_from_slice(frames);
                site = i;
                break;
            }
            if s.hash == h && s.depth as usize == depth && s.frames[..depth] == *frames {
                site = i;
                break;
            }
        }
        i = (i + 1) & (SITES - 1);
    }
    // The block.
    if t.live_samples >= SAMPLES / 2 {
        t.dropped += 1;
        return false;
    }
    let mut j = slot_of_addr(addr);
    // SAFETY: indices masked to the table; under the lock. At most half the slots are used, so
    // a free one is found.
    unsafe {
        while (*samples.add(j)).addr != 0 {
            j = (j + 1) & (SAMPLES - 1);
        }
        *samples.add(j) =
            Sample { addr, weight, t_ms: now, site: site as u32, node: node as u16, _pad: 0, thread, size };
        let s = &mut *sites.add(site);
        let n = t.n_used;
        if s.samples == 0 && n < SITES {
            t.used[n] = site as u16;
            t.n_used = n + 1;
        }
        s.alloc_bytes += weight;
        s.samples += 1;
        s.live_bytes += weight;
        s.node_bytes[node.min(3)] += weight;
        s.sizes += size;
        s.threads |= 1 << (thread % 64);
    }
    t.live_samples += 1;
    SAMPLE_FILTER[filter_slot(addr)].fetch_add(1, Ordering::Release);
    t.live += weight;
    if t.live > t.peak {
        t.peak = t.live;
        if t.live > t.peak_taken + t.peak_taken / 64 {
            t.peak_taken = t.live;
            for &k in &t.used[..t.n_used] {
                // SAFETY: a slot of the table; under the lock.
                let s = unsafe { &mut *sites.add(k as usize) };
                s.peak_bytes = s.live_bytes;
            }
        }
    }
    true
}

#[cfg(test)]
thread_local! {
    /// Look-ups of freed blocks in the samples table by this thread, and those that found one.
    static LOOKUPS: core::cell::Cell<(u64, u64)> = const { core::cell::Cell::new((0, 0)) };
    /// Whether this thread promotes its small samples (tests: only the profiler's own threads
    /// do; the library's tests share one process, and a large block in the place of a small one
    /// would surprise a test that looks at the small blocks it allocates while sampling is on).
    static PROMOTES: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// A large or huge block freed whose filter counter is not 0: if it was sampled, its site's live
/// bytes go down and the free is recorded.
#[cold]
#[inline(never)]
fn freed(addr: usize) {
    #[cfg(test)]
    LOOKUPS.with(|n| n.set((n.get().0 + 1, n.get().1)));
    let mut t = TABLES.lock();
    if t.samples.is_null() {
        return;
    }
    let (sites, samples) = (t.sites, t.samples);
    let mut j = slot_of_addr(addr);
    // SAFETY: indices masked to the tables; under the lock.
    unsafe {
        loop {
            let a = (*samples.add(j)).addr;
            if a == 0 {
                return; // not sampled (another sample's address has the same filter counter)
            }
            if a == addr {
                break;
            }
            j = (j + 1) & (SAMPLES - 1);
        }
        let smp = &*samples.add(j);
        #[cfg(test)]
        LOOKUPS.with(|n| n.set((n.get().0, n.get().1 + 1)));
        let node = Sys::current_cpu().and_then(|c| crate::config::topology::get().cpu_node(c)).unwrap_or(0);
        let s = &mut *sites.add(smp.site as usize);
        s.live_bytes = s.live_bytes.saturating_sub(smp.weight);
        s.freed_bytes += smp.weight;
        if node != smp.node as usize {
            s.remote_bytes += smp.weight;
        }
        s.lifetime_ms += Sys::now_ms().saturating_sub(smp.t_ms);
        s.freed_samples += 1;
        t.live = t.live.saturating_sub(smp.weight);
        t.live_samples -= 1;
        SAMPLE_FILTER[filter_slot(addr)].fetch_sub(1, Ordering::Release);
        remove_probed(samples, SAMPLES, j, |e| e.addr, slot_of_addr, |e| e.addr = 0);
    }
}

/// Empties slot `j` of a linear-probing table of `len` entries (a power of two) at `table`,
/// moving the later entries of its run back (backward-shift deletion: no tombstones), so every
/// entry stays reachable from its home slot. `key(e)`: an entry's key (0: an empty slot);
/// `home(key)`: the slot its probe starts at; `clear(e)` empties an entry.
///
/// # Safety
/// `table` holds `len` entries that only the caller uses now; `j < len`.
unsafe fn remove_probed<T>(
    table: *mut T,
    len: usize,
    j: usize,
    key: impl Fn(&T) -> usize,
    home: impl Fn(usize) -> usize,
    clear: impl FnOnce(&mut T),
) {
    let mut hole = j;
    let mut k = (j + 1) & (len - 1);
    // SAFETY: indices masked to the table (the caller's contract).
    unsafe {
        loop {
            let a = key(&*table.add(k));
            if a == 0 {
                break;
            }
            let h = home(a);
            // Move `k` into the hole unless its home lies cyclically in (hole, k].
            let stays = if hole <= k { hole < h && h <= k } else { hole < h || h <= k };
            if !stays {
                core::ptr::copy_nonoverlapping(table.add(k), table.add(hole), 1);
                hole = k;
            }
            k = (k + 1) & (len - 1);
        }
        clear(&mut *table.add(hole));
    }
}

/// What the profile holds, for a dump: calls `f` with each call site that has samples (under
/// the tables' lock; `in_signal`: not if the calling thread holds it, then false). Also returns
/// the sampled live bytes, their peak and the samples dropped for want of room.
pub(crate) fn for_each_site(in_signal: bool, f: &mut dyn FnMut(&Site)) -> Option<(u64, u64, u64)> {
    if !EVER.load(Ordering::Acquire) || (in_signal && TABLES.held_by_me()) {
        return None;
    }
    let t = TABLES.lock();
    for &k in &t.used[..t.n_used] {
        // SAFETY: a slot of the table; under the lock.
        f(unsafe { &*t.sites.add(k as usize) });
    }
    Some((t.live, t.peak, t.dropped))
}

/// The profiler's lock, for the fork handlers (`init.rs`): a leaf, taken with no other lock held.
pub(crate) fn fork_lock() -> &'static Lock<impl Send> {
    &TABLES
}

/// The mean sampling interval in bytes.
pub(crate) fn interval() -> u64 {
    INTERVAL.load(Ordering::Relaxed)
}

// ---- periodic dumps (`DOMALLOC_PROF_INTERVAL`) ----
//
// A thread of the profiler's own writes them: it dumps on time whether or not the program
// allocates (an HPC code computes for minutes without a call), the program's threads pay
// nothing (no clock read, no check on any path of theirs), and it holds no lock but the
// tables' (a leaf) while it writes, with every signal blocked (`Os::spawn_thread`), so no
// handler runs on it and a dump never waits for a lock a malloc call holds. The background purge
// thread is not used: it starts only when memory waits to be purged, may be off, and sleeps
// until its own deadlines.

/// The dumper is between two dumps (also: the value its sleep waits on).
const PD_IDLE: u32 = 0;
/// The dumper is writing a profile.
const PD_DUMPING: u32 = 1;
/// The process is exiting: no dump starts any more ([`stop_periodic`]).
const PD_STOPPED: u32 = 2;
/// The dumper's state, and the futex word both sides sleep on.
static PERIODIC: AtomicU32 = AtomicU32::new(PD_IDLE);
/// The process whose dumper runs (0: none; another pid: the parent of this fork child, whose
/// dumper does not exist here).
static PERIODIC_PID: AtomicU32 = AtomicU32::new(0);
/// Writes periodic dump number `n` (installed by the layer that writes profiles).
static PERIODIC_DUMP: AtomicUsize = AtomicUsize::new(0);

/// Starts the periodic dumps if `DOMALLOC_PROF_INTERVAL` asks for them and this process has no
/// dumper yet; `dump(n)` writes dump number `n` (1, 2, ...). Starting a thread allocates: call
/// only where a nested `malloc` is safe (start-up, the API).
pub(crate) fn start_periodic(dump: fn(u32) -> bool) {
    if crate::config::options::get().prof_interval_ms == 0 {
        return;
    }
    let pid = Sys::process_id();
    if PERIODIC_PID.swap(pid, Ordering::AcqRel) == pid {
        return;
    }
    // A fork child: the parent's dumper (and whatever state it was in) is not here.
    PERIODIC.store(PD_IDLE, Ordering::Release);
    PERIODIC_DUMP.store(dump as usize, Ordering::Release);
    // The thread runs our code until the process ends: the object holding it must stay loaded.
    os::pin_once();
    if !Sys::spawn_thread(periodic_main) {
        PERIODIC_PID.store(0, Ordering::Release);
        os::eprint(format_args!(
            "domalloc: warning: cannot start the thread of DOMALLOC_PROF_INTERVAL: no periodic profiles\n"
        ));
    }
}

/// The process is exiting (or dying of SIGTERM): no periodic dump starts from now on, and one
/// being written is waited for (a second at most), so that its file is whole. Async-signal-safe;
/// `in_signal`: from a handler, which waits for nothing if its thread holds the tables' lock
/// (the dump would wait for it in turn).
pub(crate) fn stop_periodic(in_signal: bool) {
    if PERIODIC_PID.load(Ordering::Acquire) != Sys::process_id() {
        return;
    }
    let give_up = Sys::now_ms().saturating_add(1000);
    loop {
        match PERIODIC.compare_exchange(PD_IDLE, PD_STOPPED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) | Err(PD_STOPPED) => return,
            Err(_) if (in_signal && TABLES.held_by_me()) || Sys::now_ms() >= give_up => return,
            Err(_) => Sys::futex_wait(&PERIODIC, PD_DUMPING, Some(10)),
        }
    }
}

/// The dumper: every `DOMALLOC_PROF_INTERVAL` a profile while sampling is on (a dump that
/// overran the next deadline skips it). It ends when the process is exiting, and when no other
/// thread of the process lives (a program whose main thread left with `pthread_exit`: the
/// process ends with its last thread, which must not be this one).
extern "C" fn periodic_main(_: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    let every = crate::config::options::get().prof_interval_ms.max(1);
    let f = PERIODIC_DUMP.load(Ordering::Acquire);
    if f == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: a non-zero value was stored by `start_periodic` from a `fn(u32) -> bool`.
    let dump: fn(u32) -> bool = unsafe { core::mem::transmute::<usize, fn(u32) -> bool>(f) };
    let mut next = Sys::now_ms().saturating_add(every);
    let mut n = 1u32;
    loop {
        if Sys::now_ms() >= next {
            if PERIODIC.compare_exchange(PD_IDLE, PD_DUMPING, Ordering::AcqRel, Ordering::Acquire).is_err() {
                break; // stopped: the process is exiting
            }
            // A file that cannot be written (its warning printed) ends the series: one warning,
            // not one per interval from every rank of a job.
            let failed = ON.load(Ordering::Relaxed) && !dump(n);
            n = n.wrapping_add(1);
            PERIODIC.store(PD_IDLE, Ordering::Release);
            Sys::futex_wake(&PERIODIC, u32::MAX);
            if failed {
                break;
            }
            let now = Sys::now_ms();
            next = next.saturating_add(every);
            if next <= now {
                next = now.saturating_add(every);
            }
        }
        if PERIODIC.load(Ordering::Acquire) == PD_STOPPED || !others_alive() {
            break;
        }
        // Looks at least once a second whether it is alone.
        let wait = next.saturating_sub(Sys::now_ms()).clamp(1, 1000);
        Sys::futex_wait(&PERIODIC, PD_IDLE, Some(wait));
    }
    core::ptr::null_mut()
}

/// Whether a thread of the process other than the calling one lives (`Threads:` of
/// `/proc/self/status`, less the main thread when it is a zombie: it left with `pthread_exit`
/// and waits for the others). True where that cannot be read.
fn others_alive() -> bool {
    let mut buf = [0u8; 4096];
    let Some(text) = Sys::read_file(b"/proc/self/status\0", &mut buf) else { return true };
    let (mut threads, mut zombie) = (None, false);
    for line in text.split(|&c| c == b'\n') {
        if let Some(rest) = line.strip_prefix(b"Threads:") {
            threads = crate::sys::parse_u64(crate::sys::trim(rest));
        } else if let Some(rest) = line.strip_prefix(b"State:") {
            zombie = crate::sys::trim(rest).first() == Some(&b'Z');
        }
    }
    match threads {
        Some(t) => t > 1 + zombie as u64,
        None => true,
    }
}

// Tests that start threads (std, which the profiler's own code must not name: `tests/prof.rs`).
#[cfg(test)]
#[path = "prof_thread_tests.rs"]
mod thread_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::PAGE_SIZE;

    /// The tests that sample run one at a time (the interval and the switch are the process's);
    /// only their threads promote samples ([`PROMOTES`]). Held while a test runs.
    static SERIAL: Lock<()> = Lock::new(LockKind::Other, ());

    fn sampling_test() -> impl Sized {
        let g = SERIAL.lock();
        assert!(crate::thread::ensure_init());
        PROMOTES.with(|p| p.set(true));
        g
    }

    fn is_large(p: *mut u8) -> bool {
        // SAFETY: a live descriptor (lookup checked the segment map).
        crate::layout::lookup(p).is_some_and(|(_, pg)| unsafe { (*pg).kind() } == crate::layout::PageKind::Large)
    }

    /// A sampled small allocation is served from a large block of its own (promoted, as jemalloc
    /// does), so no small page holds a sample and no free of a small block looks anything up.
    /// (Before, a sampled block's page was flagged and every free on it took the slow path, and
    /// the tables' lock unless two counting filters said otherwise: larson and xmalloc paid 7-19%
    /// more instructions in malloc and free for it.)
    #[test]
    fn sampled_small_allocations_are_large_blocks_and_small_frees_look_nothing_up() {
        const N: usize = 4096;
        let _serial = sampling_test();
        let mut blocks = [core::ptr::null_mut::<u8>(); N];
        let c = crate::layout::size_class::class_of(48);
        assert!(start(8 << 10));
        for b in blocks.iter_mut() {
            // SAFETY: a valid class.
            *b = unsafe { crate::thread::alloc_small(c) };
            assert!(!b.is_null());
        }
        stop();
        let promoted = blocks.iter().filter(|&&b| is_large(b)).count() as u64;
        assert!(promoted > 0, "{N} blocks of 48 B sampled every 8 KiB: no sampled allocation was a large block");
        let before = LOOKUPS.with(|n| n.get());
        for &b in blocks.iter().filter(|&&b| !is_large(b)) {
            // SAFETY: blocks of this allocator, freed once.
            unsafe { crate::thread::free::free(b) };
        }
        let after_small = LOOKUPS.with(|n| n.get());
        assert_eq!(after_small.0 - before.0, 0, "frees of small blocks looked up the samples table");
        for &b in blocks.iter().filter(|&&b| is_large(b)) {
            assert_eq!(b as usize % PAGE_SIZE, 0, "a promoted block {b:p} is not page-aligned");
            // SAFETY: as above.
            unsafe { crate::thread::free::free(b) };
        }
        let (looked_up, found) = LOOKUPS.with(|n| n.get());
        let (looked_up, found) = (looked_up - after_small.0, found - after_small.1);
        assert_eq!(found, promoted, "{promoted} promoted samples, {found} found when freed ({looked_up} look-ups)");
    }

    /// The free of a large block that was not sampled takes neither the tables' lock nor a
    /// look-up: the counting filter of the live samples' addresses says it holds none (rptest
    /// frees many large blocks; while profiling, each took the lock).
    #[test]
    fn frees_of_unsampled_large_blocks_are_not_looked_up() {
        const N: usize = 256;
        const SIZE: usize = 100_000;
        let _serial = sampling_test();
        let node = crate::thread::alloc_node().unwrap_or(0);
        let mut blocks = [core::ptr::null_mut::<u8>(); N];
        // Sampling on, one sample per 1 TiB on average: these blocks are hardly ever sampled.
        assert!(start(1 << 40));
        words()[W_LEFT] = 1 << 40;
        for b in blocks.iter_mut() {
            *b = crate::thread::large::alloc(node, SIZE, false);
            assert!(!b.is_null());
            big_allocated(*b, crate::thread::large::usable_size(SIZE));
        }
        let before = LOOKUPS.with(|n| n.get());
        for &b in &blocks {
            // SAFETY: blocks of this allocator, freed once.
            unsafe { crate::thread::free::free(b) };
        }
        stop();
        let (looked_up, found) = LOOKUPS.with(|n| n.get());
        let (looked_up, found) = (looked_up - before.0, found - before.1);
        // (A block whose filter counter counts another live sample is looked up: rare.)
        let misses = looked_up - found;
        assert!(misses <= N as u64 / 16, "{misses} of {N} frees of unsampled large blocks were looked up");
    }

    /// A zeroed allocation that is promoted reads as zero: the large block is cleared unless its
    /// span reads as zero (fresh or purged), and a span parked in the arena after use is dirty.
    #[test]
    fn a_promoted_zeroed_allocation_reads_as_zero() {
        const SIZE: usize = 200;
        let _serial = sampling_test();
        let node = crate::thread::alloc_node().unwrap_or(0);
        let c = crate::layout::size_class::class_of(SIZE);
        assert!(start(1 << 10));
        let (mut promoted, mut on_dirty) = (0, 0);
        for _ in 0..100_000 {
            if promoted == 16 {
                break;
            }
            // A dirty span of one page, parked: the next large block of one page may be it.
            let d = crate::thread::large::alloc(node, PAGE_SIZE, false);
            assert!(!d.is_null());
            big_allocated(d, PAGE_SIZE);
            // SAFETY: the block's `PAGE_SIZE` bytes are ours; then freed once.
            unsafe {
                core::ptr::write_bytes(d, 0xa5, PAGE_SIZE);
                crate::thread::free::free(d);
            }
            for _ in 0..64 {
                // SAFETY: a valid class of at least `SIZE` bytes.
                let p = unsafe { crate::thread::alloc_small_zeroed(c, SIZE) };
                assert!(!p.is_null());
                // SAFETY: `SIZE` bytes of the block just allocated.
                let bytes = unsafe { core::slice::from_raw_parts(p, SIZE) };
                assert!(bytes.iter().all(|&x| x == 0), "a zeroed block {p:p} does not read as zero");
                let large = is_large(p);
                // SAFETY: a block of this allocator, freed once.
                unsafe { crate::thread::free::free(p) };
                if large {
                    promoted += 1;
                    on_dirty += (p == d) as u32;
                    break;
                }
            }
        }
        stop();
        assert!(promoted > 0, "no zeroed allocation of {SIZE} B was promoted at a sample every KiB");
        assert!(
            on_dirty > 0,
            "none of {promoted} promoted blocks took the dirty span just parked: not the case tested"
        );
    }

    #[test]
    fn ln_and_exp_are_accurate() {
        for x in [1e-9, 0.001, 0.3, 0.5, 0.9999, 1.0] {
            assert!((ln(x) - x.ln()).abs() < 1e-9, "ln({x})");
        }
        for x in [0.0, 0.001, 0.5, 1.0, 7.5, 29.0] {
            assert!((exp(x) / x.exp() - 1.0).abs() < 1e-9, "exp({x})");
        }
    }
}
