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
//! blocks in their slow paths. The high-water mark [`LIVE_PEAK`] is taken at those moments, so
//! it may miss a peak by the blocks of the pages heaps hold unfolded (at most a span per class
//! per thread). The statistics' current value is exact (read from every heap and page).
//!
//! # The sampling heap profiler (`DOMALLOC_PROF=1`, or [`start`])
//! Allocations are sampled by bytes: each thread counts down a random interval (exponentially
//! distributed, mean `DOMALLOC_PROF_SAMPLE`, 512 KiB by default, so a sample stands for that
//! many bytes) and the allocation that finds it run out is sampled. Nothing is added to the
//! fast paths: small blocks are counted down where their page's counts are folded (at refills),
//! and the sample is the block the next refill hands out; large and huge blocks (always slow
//! paths) count their own size. A sampled allocation records its call stack (the frame-pointer
//! walk of [`os::frame_walk`], bounded by the thread's stack mapping: full depth needs the
//! program built with `-fno-omit-frame-pointer` / `-C force-frame-pointers=yes`), its size,
//! thread, node of the allocating CPU and time, in fixed tables mapped once at [`start`]: call
//! sites (stack -> allocated, live, live-at-peak, freed and remote-freed bytes) and live sampled
//! blocks (address -> site). A sampled small block's page gets [`PF_SAMPLED`], which sends every
//! free of that page to the slow path ([`small_freed`]), where the table is looked up, until the
//! page's last live sample is freed (a third table counts them per page); large and huge frees
//! are slow paths already. A free records the freeing node (remote when it is not the
//! allocating one) and the lifetime. With profiling off, each hook is one load of a flag that
//! is false, on paths that are slow already.
//!
//! # Periodic dumps (`DOMALLOC_PROF_INTERVAL`)
//! A thread of the profiler's own ([`start_periodic`]) calls the profile writer the statistics
//! layer installs, every interval, with every signal blocked; exit and SIGTERM wait for a dump
//! it is writing ([`stop_periodic`]); it ends when it is the last thread of the process.

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::layout::size_class::class_size;
use crate::layout::{Page, PF_SAMPLED};
use crate::sys::os::{self, Os, Sys};
use crate::sys::Lock;
use crate::sys::LockKind;

/// Live bytes as folded so far (signed: a remote free may be counted before the owner folds the
/// block's allocation).
static LIVE: AtomicI64 = AtomicI64::new(0);
/// The highest value [`LIVE`] has had.
static LIVE_PEAK: AtomicI64 = AtomicI64::new(0);

#[inline]
fn live_add(delta: i64) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed).wrapping_add(delta);
    if delta > 0 && now > LIVE_PEAK.load(Ordering::Relaxed) {
        LIVE_PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// A page's counts folded into its owner's heap: `allocs` blocks of class `c` handed out and
/// `frees` freed by the owner since the last fold.
#[inline]
pub(crate) fn fold_small(c: usize, allocs: u32, frees: u32) {
    live_add((allocs as i64 - frees as i64) * class_size(c) as i64);
    if ON.load(Ordering::Relaxed) {
        count_down(allocs as u64 * class_size(c) as u64);
    }
}

/// `n` blocks of class `c` freed by a heap that does not own their page (or a heapless thread).
#[inline]
pub(crate) fn freed_small(c: usize, n: u64) {
    live_add(-((n * class_size(c) as u64) as i64));
}

/// Large or huge block `p` of `bytes` (usable size) handed out.
#[inline]
pub(crate) fn big_allocated(p: *mut u8, bytes: usize) {
    live_add(bytes as i64);
    if ON.load(Ordering::Relaxed) {
        big_sample(p, bytes);
    }
}

/// Large or huge block `p` of `bytes` (usable size) freed (or moved away by `realloc`).
#[inline]
pub(crate) fn big_freed(p: *mut u8, bytes: usize) {
    live_add(-(bytes as i64));
    if EVER.load(Ordering::Relaxed) {
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

/// One page (span head) holding live sampled blocks, and how many (0 in `page`: free slot).
#[repr(C)]
struct SampledPage {
    page: usize,
    live: u64,
}

/// Pages the table of [`SampledPage`] holds: as many as live samples can be, at half load.
const PAGE_SLOTS: usize = SAMPLES;

/// Counters of the counting filter in front of the pages table (a power of two).
const FILTER: usize = 4096;
/// Live sampled small blocks per hash of their page, changed with the pages table (under the
/// tables' lock) and read without it: a free on a flagged page whose counter is 0 has no sample
/// to look up, and skips the lock (the producer/consumer pattern: the consumers' frees on pages
/// whose owner never frees there, so never clears their flag).
static PAGE_FILTER: [AtomicU32; FILTER] = [const { AtomicU32::new(0) }; FILTER];

fn filter_slot(page: usize) -> usize {
    ((page as u64 >> 6).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize & (FILTER - 1)
}

/// Counters of the counting filter of live sampled small blocks (a power of two).
const BLOCK_FILTER: usize = 8192;
/// Live sampled small blocks per hash of their address, changed with the samples table (under
/// the tables' lock) and read without it: a free on a page with live samples whose block's
/// counter is 0 is not a sample's, and skips the lock and the look-up (most frees on such a
/// page: 90 instructions each, 3% of all those of alloc-test1, where a page's blocks live long).
static SAMPLE_FILTER: [AtomicU32; BLOCK_FILTER] = [const { AtomicU32::new(0) }; BLOCK_FILTER];

fn block_filter_slot(addr: usize) -> usize {
    ((addr as u64 >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 51) as usize & (BLOCK_FILTER - 1)
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
    pages: *mut SampledPage,
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
        pages: core::ptr::null_mut(),
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

const TABLES_BYTES: usize = (SITES * core::mem::size_of::<Site>()
    + SAMPLES * core::mem::size_of::<Sample>()
    + PAGE_SLOTS * core::mem::size_of::<SampledPage>()
    + 0xffff)
    & !0xffff;

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
        // SAFETY: inside the mapping (TABLES_BYTES holds the three tables).
        t.samples = unsafe { m.add(SITES * core::mem::size_of::<Site>()) }.cast();
        // SAFETY: as above.
        t.pages =
            unsafe { m.add(SITES * core::mem::size_of::<Site>() + SAMPLES * core::mem::size_of::<Sample>()) }.cast();
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
const W_PENDING: usize = 3; // samples owed to the next block handed out (small classes)

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

/// Counts `bytes` allocated by this thread; a run-out interval is owed to the next block the
/// refill hands out ([`small_refilled`]).
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

/// The block `p` a refill of heap `h` just handed out: sampled if an interval ran out (see the
/// module documentation). One flag load when profiling is off.
#[inline]
pub(crate) fn small_refilled(h: *mut crate::thread::heap::Heap, p: *mut u8) {
    if ON.load(Ordering::Relaxed) && !p.is_null() {
        small_sample(h, p);
    }
}

#[cold]
#[inline(never)]
fn small_sample(h: *mut crate::thread::heap::Heap, p: *mut u8) {
    let w = words();
    let owed = core::mem::take(&mut w[W_PENDING]);
    if owed == 0 {
        return;
    }
    let Some((_, page)) = crate::layout::lookup(p) else { return };
    // SAFETY: a live page of this thread's heap (the refill handed `p` out of it).
    let pg = unsafe { &*page };
    if !pg.owned_by(h as usize) {
        return; // the orphan heap's or a pooled block's: not flagged, not sampled
    }
    let size = pg.block_size.get() as u64;
    if record(p as usize, size, owed * INTERVAL.load(Ordering::Relaxed), page as usize, os::stack_pointer()) {
        // Every free of this page now takes the slow path, where the table is looked up.
        pg.flags.set(pg.flags.get() | PF_SAMPLED);
        pg.set_owner(h as usize);
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
    record(p as usize, bytes as u64, (s / p_sampled.max(1e-12)) as u64, 0, os::stack_pointer());
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

/// Records a sample of `size` bytes at `addr` standing for `weight` bytes, a small block of
/// page `page` (0: a large or huge block); false if the tables do not exist or are full. `sp`:
/// the caller's stack pointer (the call stack is searched above it: the frames below are the
/// profiler's own).
#[inline(never)]
fn record(addr: usize, size: u64, weight: u64, page: usize, sp: usize) -> bool {
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
    if page != 0 {
        SAMPLE_FILTER[block_filter_slot(addr)].fetch_add(1, Ordering::Release);
        // SAFETY: the pages table, under the lock.
        unsafe { page_count(t.pages, page, 1) };
    }
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

/// A small block of `page` freed (any thread): looked up if the page holds sampled blocks.
#[inline]
pub(crate) fn small_freed(page: &Page, p: *mut u8) {
    if page.flags.get() & PF_SAMPLED != 0 {
        sampled_page_freed(page, p);
    }
}

/// A block of a page with [`PF_SAMPLED`] freed: recorded if it was sampled; then, when no
/// sampled block of the page lives any more and the caller's heap owns it, the page loses the
/// flag, so that its owner's frees take the fast path again (the owner alone writes `flags`;
/// a page whose last sample another thread frees is cleared at its owner's next free there).
#[cold]
#[inline(never)]
fn sampled_page_freed(page: &Page, p: *mut u8) {
    #[cfg(test)]
    FLAGGED_FREES.with(|n| n.set(n.get() + 1));
    let pg = page as *const Page as usize;
    // A sample of this page, and the sampled block, were counted (under the lock, before the
    // block was handed out) before any thread can free it. (A page whose filter counter counts
    // another page's samples keeps its flag until a free finds the counter at 0.)
    if PAGE_FILTER[filter_slot(pg)].load(Ordering::Acquire) != 0
        && (SAMPLE_FILTER[block_filter_slot(p as usize)].load(Ordering::Acquire) == 0 || freed_on(p as usize, pg) != 0)
    {
        return;
    }
    let h = crate::thread::tls::own_heap();
    if !crate::thread::tls::is_sentinel(h) && page.owned_by(h as usize) {
        page.flags.set(page.flags.get() & !PF_SAMPLED);
        page.set_owner(h as usize);
    }
}

#[cfg(test)]
thread_local! {
    /// Frees by this thread of blocks whose page had [`PF_SAMPLED`] (tests).
    static FLAGGED_FREES: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    /// Look-ups of freed blocks in the samples table by this thread, and those that found one.
    static LOOKUPS: core::cell::Cell<(u64, u64)> = const { core::cell::Cell::new((0, 0)) };
}

/// Adds `delta` (1 or -1) to page `page`'s live samples in the table at `pages`; returns them.
/// Backward-shift deletion when they reach 0, as in the samples table.
///
/// # Safety
/// `pages` is the tables' pages table, used under their lock.
unsafe fn page_count(pages: *mut SampledPage, page: usize, delta: i64) -> u64 {
    let home = |a: usize| ((a as u64 >> 6).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as usize & (PAGE_SLOTS - 1);
    let mut j = home(page);
    // SAFETY: indices masked to the table (the caller's contract); at most half its slots are
    // used (one per live sample at most), so the probe ends at a free slot.
    unsafe {
        loop {
            let a = (*pages.add(j)).page;
            if a == page || a == 0 {
                break;
            }
            j = (j + 1) & (PAGE_SLOTS - 1);
        }
        let e = &mut *pages.add(j);
        if e.page == 0 {
            if delta <= 0 {
                return 0; // no live sample there (a look-up, or a page not counted)
            }
            e.page = page;
        }
        match delta {
            1 => PAGE_FILTER[filter_slot(page)].fetch_add(1, Ordering::Release),
            -1 => PAGE_FILTER[filter_slot(page)].fetch_sub(1, Ordering::Release),
            _ => 0,
        };
        e.live = (e.live as i64 + delta).max(0) as u64;
        let left = e.live;
        if left == 0 {
            remove_probed(pages, PAGE_SLOTS, j, |e| e.page, home, |e| *e = SampledPage { page: 0, live: 0 });
        }
        left
    }
}

/// A large or huge block freed: recorded if it was sampled.
#[cold]
#[inline(never)]
fn freed(addr: usize) {
    freed_on(addr, 0);
}

/// A block freed (of page `page` when small, else 0): if it was sampled, its site's live bytes
/// go down and the free is recorded. Returns the live samples left on `page` (0 for 0).
fn freed_on(addr: usize, page: usize) -> u64 {
    #[cfg(test)]
    LOOKUPS.with(|n| n.set((n.get().0 + 1, n.get().1)));
    let mut t = TABLES.lock();
    if t.samples.is_null() {
        return 0;
    }
    let left_on_page = |t: &Tables, delta: i64| -> u64 {
        if page == 0 {
            return 0;
        }
        // SAFETY: the pages table, under the lock.
        unsafe { page_count(t.pages, page, delta) }
    };
    let (sites, samples) = (t.sites, t.samples);
    let mut j = slot_of_addr(addr);
    // SAFETY: indices masked to the tables; under the lock.
    unsafe {
        loop {
            let a = (*samples.add(j)).addr;
            if a == 0 {
                return left_on_page(&t, 0); // not sampled
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
        if page != 0 {
            SAMPLE_FILTER[block_filter_slot(addr)].fetch_sub(1, Ordering::Release);
        }
        remove_probed(samples, SAMPLES, j, |e| e.addr, slot_of_addr, |e| e.addr = 0);
    }
    left_on_page(&t, -1)
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

    /// A page keeps [`PF_SAMPLED`] only while a sampled block of it lives: once the sampled blocks
    /// are freed, its owner's frees take the fast path again. (The flag used to stay until the
    /// page was emptied and set up anew: with the default interval, most pages of a running
    /// program ended up flagged, and most frees went through the slow path and the tables' lock.)
    #[test]
    fn a_page_loses_the_sampled_flag_with_its_last_sampled_block() {
        const N: usize = 4096;
        assert!(crate::thread::ensure_init());
        let mut blocks = [core::ptr::null_mut::<u8>(); N];
        let c = crate::layout::size_class::class_of(48);
        let round = |blocks: &mut [*mut u8; N]| {
            for b in blocks.iter_mut() {
                // SAFETY: a valid class.
                *b = unsafe { crate::thread::alloc_small(c) };
                assert!(!b.is_null());
            }
            for &b in blocks.iter() {
                // SAFETY: blocks of this allocator, freed once.
                unsafe { crate::thread::free::free(b) };
            }
        };
        assert!(start(8 << 10));
        round(&mut blocks);
        stop();
        let sampled = FLAGGED_FREES.with(|n| n.get());
        assert!(sampled > 0, "4096 blocks of 48 B sampled every 8 KiB: no free found its page flagged");
        for _ in 0..4 {
            round(&mut blocks);
        }
        let later = FLAGGED_FREES.with(|n| n.get()) - sampled;
        assert_eq!(later, 0, "{later} frees after the sampled blocks were gone still found their page flagged");
    }

    /// A free on a page with a live sample looks the block up (under the tables' lock) only if it
    /// may be a sample: the other blocks of such a page used to be looked up each (90
    /// instructions a free; 3% of all of alloc-test1's).
    #[test]
    fn frees_of_unsampled_blocks_on_a_sampled_page_are_not_looked_up() {
        const N: usize = 4096;
        assert!(crate::thread::ensure_init());
        let mut blocks = [core::ptr::null_mut::<u8>(); N];
        let c = crate::layout::size_class::class_of(48);
        assert!(start(8 << 10));
        for b in blocks.iter_mut() {
            // SAFETY: a valid class.
            *b = unsafe { crate::thread::alloc_small(c) };
            assert!(!b.is_null());
        }
        stop();
        let (flagged, lookups) = (FLAGGED_FREES.with(|n| n.get()), LOOKUPS.with(|n| n.get()));
        // Last first: a sample is the first block a refill hands out, so the other blocks of its
        // page are freed while it lives.
        for &b in blocks.iter().rev() {
            // SAFETY: blocks of this allocator, freed once.
            unsafe { crate::thread::free::free(b) };
        }
        let flagged = FLAGGED_FREES.with(|n| n.get()) - flagged;
        let (looked_up, found) = LOOKUPS.with(|n| n.get());
        let (looked_up, found) = (looked_up - lookups.0, found - lookups.1);
        assert!(found > 0 && flagged > 4 * found, "{flagged} frees on sampled pages, {found} of samples");
        // (A block whose filter counter counts another live sample is looked up: rare.)
        let misses = looked_up - found;
        assert!(misses <= flagged / 16, "{misses} of {flagged} frees on sampled pages looked up a block not sampled");
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
