//! The OS layer: the only place that names an operating system.
//!
//! One trait, [`Os`], is the written contract every platform implements; one `cfg` block below
//! picks the implementation (`linux.rs`, `freebsd.rs`, `dragonfly.rs`, or `other.rs` for any other
//! Unix) and exports it as [`Sys`]. Shared POSIX pieces live in `posix.rs`. Nothing outside this
//! directory may use `target_os`.
//!
//! The thin wrappers at the bottom add what is the same on every OS (fault injection for tests,
//! accounting) so platform files stay small.

use core::sync::atomic::{AtomicU64, Ordering};

pub(crate) mod posix;
// Sysctl parsing for the BSD ports; pure, so compiled (and unit-tested) on every OS.
mod bsd_sysctl;

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;
#[cfg(target_os = "freebsd")]
#[path = "freebsd.rs"]
mod imp;
#[cfg(target_os = "dragonfly")]
#[path = "dragonfly.rs"]
mod imp;
#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "dragonfly")))]
#[path = "other.rs"]
mod imp;

/// The platform implementation selected for this build.
pub(crate) use imp::Sys;

/// How purged memory is given back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PurgeMode {
    /// Drop the pages now; on Linux they read as zero afterwards (`MADV_DONTNEED`).
    DontNeed,
    /// Let the kernel take the pages lazily (`MADV_FREE`); contents become undefined.
    Free,
}

/// Where the kernel should place the pages of a range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(dead_code)]
pub enum Placement<'a> {
    /// First touch: the node of the CPU that first writes a page (the kernel default).
    Local,
    /// Only these nodes.
    Bind(&'a NodeMask),
    /// This node if it has memory, others otherwise.
    Preferred(usize),
    /// Round-robin, page by page, over these nodes.
    Interleave(&'a NodeMask),
}

/// A fixed-size set of node ids (up to [`NodeMask::CAPACITY`]); never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NodeMask {
    bits: [u64; 16],
}

impl NodeMask {
    /// Largest node id + 1 a mask can hold (1024, as Linux's default `MAX_NUMNODES` ceiling).
    pub const CAPACITY: usize = 1024;
    /// The empty set.
    pub const fn empty() -> Self {
        Self { bits: [0; 16] }
    }
    /// Adds `node`; ids at or above [`Self::CAPACITY`] are ignored.
    pub fn insert(&mut self, node: usize) {
        if node < Self::CAPACITY {
            self.bits[node / 64] |= 1 << (node % 64);
        }
    }
    /// Whether `node` is in the set.
    pub fn contains(&self, node: usize) -> bool {
        node < Self::CAPACITY && self.bits[node / 64] & (1 << (node % 64)) != 0
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }
    /// Number of nodes in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// The node ids in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..Self::CAPACITY).filter(move |&n| self.contains(n))
    }
    /// The `i`-th node of the set (ascending order), cyclically.
    pub fn nth_cyclic(&self, i: usize) -> Option<usize> {
        let n = self.len();
        if n == 0 { None } else { self.iter().nth(i % n) }
    }
    /// The raw words, as `mbind`'s `nodemask` wants them.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn words(&self) -> &[u64; 16] {
        &self.bits
    }
    /// The raw words, mutable (filled by `get_mempolicy`).
    #[allow(dead_code)]
    pub(crate) fn words_mut(&mut self) -> &mut [u64; 16] {
        &mut self.bits
    }
}

/// Written as numactl does: ranges and single ids, comma separated (`0-2,5`).
impl core::fmt::Display for NodeMask {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        let mut n = 0;
        while n < Self::CAPACITY {
            if !self.contains(n) {
                n += 1;
                continue;
            }
            let mut end = n;
            while end + 1 < Self::CAPACITY && self.contains(end + 1) {
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == n { write!(f, "{n}")? } else { write!(f, "{n}-{end}")? }
            n = end + 1;
        }
        Ok(())
    }
}

/// A memory policy set on the process from outside (numactl, a launcher).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProcessPolicy {
    /// Memory only from these nodes.
    Bind(NodeMask),
    /// This node first.
    Preferred(usize),
    /// Round-robin over these nodes.
    Interleave(NodeMask),
}

/// Receives what the platform knows about the machine's topology. Calls come in this order:
/// `possible` once, then any number of `cpu`, `node_memory`, `distance`.
pub(crate) trait TopologySink {
    /// Highest possible CPU id + 1 and highest possible node id + 1 (not counts: ids may be sparse).
    fn possible(&mut self, cpu_ids: usize, node_ids: usize) -> bool;
    /// CPU `cpu` belongs to node `node`.
    fn cpu(&mut self, cpu: usize, node: usize);
    /// Node `node` exists and has `bytes` of memory (0 for a CPU-only node).
    fn node_memory(&mut self, node: usize, bytes: u64);
    /// The firmware distance from `from` to `to` (10 = local, as ACPI SLIT).
    fn distance(&mut self, from: usize, to: usize, d: u32);
}

/// The contract every platform implements. All functions are safe to call before any
/// constructor ran, from any thread, and never allocate through `malloc`.
pub(crate) trait Os {
    /// Platform name for reports.
    const NAME: &'static str;
    /// The granularity at which per-thread placement decides a page's node (FreeBSD's 2 MiB
    /// superpage reservations: the first fault in a 2 MiB block decides the whole block).
    const PLACEMENT_GRANULE: usize;

    /// Maps `size` bytes (a multiple of the OS page size) aligned to `align` (a power of two, at
    /// least the OS page size), readable and writable, reading as zero and not yet touched, so
    /// first touch decides placement. Returns null on failure.
    ///
    /// # Safety
    /// `size` and `align` as stated.
    unsafe fn map_aligned(size: usize, align: usize) -> *mut u8;

    /// Unmaps a range obtained from this trait.
    ///
    /// # Safety
    /// The range must be mapped by this layer and no longer in use.
    unsafe fn unmap(ptr: *mut u8, size: usize);

    /// Gives the pages of a range back to the OS, keeping the address range. Returns whether the
    /// range now reads as zero.
    ///
    /// # Safety
    /// The range must be mapped by this layer, page aligned, and hold no live data.
    unsafe fn purge(ptr: *mut u8, size: usize, mode: PurgeMode) -> bool;

    /// Makes a range inaccessible (`PROT_NONE`): any access faults. Guard pages of checked
    /// mode. Returns false on failure.
    ///
    /// # Safety
    /// The range must be mapped by this layer, page aligned, and hold nothing in use.
    #[cfg_attr(not(feature = "quarantine"), allow(dead_code))]
    unsafe fn protect_none(ptr: *mut u8, size: usize) -> bool;

    /// Asks for (or against) transparent huge pages on a range; a no-op where unsupported.
    ///
    /// # Safety
    /// The range must be mapped by this layer and page aligned.
    unsafe fn set_huge_pages(ptr: *mut u8, size: usize, enable: bool);

    /// Grows or shrinks a mapping in place; false if the OS cannot.
    ///
    /// # Safety
    /// `[ptr, ptr+old_size)` must be one mapping made by this layer; sizes page multiples.
    unsafe fn resize_in_place(ptr: *mut u8, old_size: usize, new_size: usize) -> bool;

    /// Moves a mapping to a new address aligned to `align`, with size `new_size`, without copying
    /// the pages where the OS can (Linux `mremap`). Returns null if unsupported or on failure, in
    /// which case the old mapping is untouched.
    ///
    /// # Safety
    /// As [`Os::resize_in_place`].
    unsafe fn move_mapping(ptr: *mut u8, old_size: usize, new_size: usize, align: usize) -> *mut u8;

    /// Applies a placement policy to a range before its pages are touched. Returns false where the
    /// platform has no per-range placement (the caller then falls back, see `policy.rs`).
    ///
    /// # Safety
    /// The range must be mapped by this layer and page aligned.
    unsafe fn place(ptr: *mut u8, size: usize, placement: Placement<'_>) -> bool;

    /// Runs `touch` with the calling thread's memory placement temporarily set to `node`, for
    /// platforms whose placement is per thread rather than per range. Returns false (without
    /// calling `touch`) where unsupported.
    fn with_thread_placement(node: usize, touch: &mut dyn FnMut()) -> bool;

    /// A pointer to the calling thread's kernel-maintained current-CPU word (Linux rseq `cpu_id`),
    /// valid for the thread's life, or null where there is none.
    fn cpu_id_ptr() -> *const u32;

    /// The CPU the calling thread runs on now (a system call or vDSO; slow path only).
    fn current_cpu() -> Option<usize>;

    /// Reports the topology to `sink`. `root` replaces `/sys` (Linux) for tests; other platforms
    /// ignore it. Returns false if nothing usable was found (callers assume one node).
    fn read_topology(root: Option<&[u8]>, sink: &mut dyn TopologySink) -> bool;

    /// The memory policy the process was started with (e.g. by `numactl --membind`), so
    /// domalloc follows it instead of overriding it. `None` = the default (first touch).
    fn process_policy() -> Option<ProcessPolicy>;

    /// Looks `name` up in the process environment without allocating.
    fn environ_find(name: &[u8]) -> Option<&'static [u8]>;

    /// Writes bytes to file descriptor 2, retrying short writes, ignoring errors.
    fn write_stderr(bytes: &[u8]);

    /// Aborts the process (SIGABRT).
    fn abort() -> !;

    /// Gives up the CPU for a moment.
    fn yield_now();

    /// A monotonic clock in milliseconds.
    fn now_ms() -> u64;

    /// Sets the calling thread's `errno`.
    fn set_errno(e: i32);

    /// Creates a thread-specific key whose destructor runs at thread exit with the stored value.
    fn thread_key_create(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> Option<libc::pthread_key_t>;

    /// Stores `value` for the calling thread under `key`.
    fn thread_key_set(key: libc::pthread_key_t, value: *mut libc::c_void);

    /// Registers fork handlers.
    fn atfork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) -> bool;
}

/// Mappings made so far; with `DOMALLOC_FAIL_MAP_EVERY=N` every Nth fails (fault injection).
static MAP_CALLS: AtomicU64 = AtomicU64::new(0);
/// Fault injection settings (from the options at start-up, or [`set_fault_injection`]).
static FAIL_EVERY: AtomicU64 = AtomicU64::new(0);
static FAIL_AFTER: AtomicU64 = AtomicU64::new(0);

/// Makes every `every`-th OS mapping fail, and every mapping after the `after`-th (counting from
/// now); 0 turns each off. For tests of out-of-memory handling.
pub fn set_fault_injection(every: u64, after: u64) {
    FAIL_EVERY.store(every, Ordering::Relaxed);
    FAIL_AFTER.store(if after == 0 { 0 } else { MAP_CALLS.load(Ordering::Relaxed) + after }, Ordering::Relaxed);
}

/// [`Os::map_aligned`] plus fault injection (`DOMALLOC_FAIL_MAP_EVERY`, `DOMALLOC_FAIL_MAP_AFTER`)
/// and the address-range check the segment map relies on.
///
/// # Safety
/// As [`Os::map_aligned`].
pub(crate) unsafe fn map_aligned(size: usize, align: usize) -> *mut u8 {
    let n = MAP_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let (every, after) = (FAIL_EVERY.load(Ordering::Relaxed), FAIL_AFTER.load(Ordering::Relaxed));
    if (every != 0 && n % every == 0) || (after != 0 && n > after) {
        return core::ptr::null_mut();
    }
    // SAFETY: the caller upholds the contract.
    let p = unsafe { Sys::map_aligned(size, align) };
    if !p.is_null() && (p as usize).checked_add(size).map_or(true, |end| end > crate::segment::ADDRESS_LIMIT) {
        // SAFETY: we just mapped it.
        unsafe { Sys::unmap(p, size) };
        return core::ptr::null_mut();
    }
    p
}

/// The OS page size assumed everywhere (4 KiB on every supported platform).
pub(crate) const OS_PAGE: usize = 4096;

/// Gives the CPU away (used by [`crate::spin`]).
pub(crate) fn yield_now() {
    Sys::yield_now()
}
