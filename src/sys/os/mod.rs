//! The OS layer: the only place that names an operating system, a libc type or a system call.
//!
//! One trait, [`Os`], is the written contract every platform implements; one `cfg` block below
//! picks the implementation (`linux.rs`, `freebsd.rs`, `dragonfly.rs`, or `other.rs` for any other
//! Unix) and exports it as [`Sys`]. What every POSIX system does the same way is written once, as
//! the trait's default methods (on top of `posix.rs`); what FreeBSD and DragonFly share lives in
//! `bsd.rs`. A platform file implements only what differs. Nothing outside this directory uses
//! `target_os`, `target_arch` or the `libc` crate.
//!
//! The wrappers at the bottom add what is the same on every OS (fault injection for tests, the
//! address-range check the segment map relies on, the contention counters) so platform files
//! stay small. `tls.rs` holds the per-thread words the allocator keeps in initial-exec TLS.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub(crate) mod posix;
pub(crate) use posix::read_file_lines;
pub(crate) mod tls;
// Sysctl parsing for the BSD ports; pure, so compiled (and unit-tested) on every OS.
#[cfg(any(target_os = "freebsd", target_os = "dragonfly"))]
mod bsd;
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

use crate::sys::util::BufWriter;

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
pub(crate) enum Placement<'a> {
    /// First touch: the node of the CPU that first writes a page (the kernel default).
    Local,
    /// Only these nodes.
    Bind(&'a NodeMask),
    /// This node if it has memory, others otherwise.
    Preferred(usize),
    /// These nodes first (the nearest to the faulting CPU first), others otherwise.
    PreferredMany(&'a NodeMask),
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
        if n == 0 {
            None
        } else {
            self.iter().nth(i % n)
        }
    }
    /// The raw words, as `mbind`'s `nodemask` wants them.
    #[allow(dead_code)]
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
            if end == n {
                write!(f, "{n}")?
            } else {
                write!(f, "{n}-{end}")?
            }
            n = end + 1;
        }
        Ok(())
    }
}

/// A memory policy set on the process from outside (numactl, a launcher).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ProcessPolicy {
    /// Memory only from these nodes.
    Bind(NodeMask),
    /// This node first.
    Preferred(usize),
    /// These nodes first (Linux's `MPOL_PREFERRED_MANY`; the BSDs have no such policy).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    PreferredMany(NodeMask),
    /// Round-robin over these nodes.
    Interleave(NodeMask),
}

/// Receives what the platform knows about the machine's topology. Calls come in this order:
/// `possible` once, then any number of `cpu`, `node_memory`, `distance`, then any number of
/// `access`.
pub(crate) trait TopologySink {
    /// Highest possible CPU id + 1 and highest possible node id + 1 (not counts: ids may be sparse).
    fn possible(&mut self, cpu_ids: usize, node_ids: usize) -> bool;
    /// CPU `cpu` belongs to node `node`.
    fn cpu(&mut self, cpu: usize, node: usize);
    /// Node `node` exists and has `bytes` of memory (0 for a CPU-only node).
    fn node_memory(&mut self, node: usize, bytes: u64);
    /// The firmware distance from `from` to `to` (10 = local, as ACPI SLIT).
    fn distance(&mut self, from: usize, to: usize, d: u32);
    /// The firmware's performance of memory node `target` seen from its best initiator node
    /// `initiator` (ACPI HMAT; Linux `nodeN/access0/initiators/`): read bandwidth in MB/s and
    /// read latency in ns (0: not given). Called once per best initiator; platforms without
    /// HMAT never call it.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn access(&mut self, _target: usize, _initiator: usize, _bandwidth_mbs: u32, _latency_ns: u32) {}
}

/// A thread-specific data key (`pthread_key_t` on every platform here), opaque to the allocator.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct ThreadKey(pub(crate) u64);

/// What [`Os::page_nodes`] reports for a page that is not resident (never touched, or purged).
pub(crate) const PAGE_ABSENT: i32 = -1;

/// The contract every platform implements. All functions are safe to call before any
/// constructor ran, from any thread, and never allocate through `malloc` (the one exception,
/// [`Os::spawn_thread`], says so). Default methods are the POSIX way; platforms override what
/// they do differently.
pub(crate) trait Os {
    /// Platform name for reports.
    const NAME: &'static str;
    /// The granularity at which per-thread placement decides a page's node (FreeBSD's 2 MiB
    /// superpage reservations: the first fault in a 2 MiB block decides the whole block).
    const PLACEMENT_GRANULE: usize = OS_PAGE;

    // ---- memory ----

    /// Maps `size` bytes (a multiple of the OS page size) aligned to `align` (a power of two, at
    /// least the OS page size), readable and writable, reading as zero and not yet touched, so
    /// first touch decides placement. Returns null on failure.
    ///
    /// # Safety
    /// `size` and `align` as stated.
    unsafe fn map_aligned(size: usize, align: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { posix::map_aligned_trim(size, align, 0) }
    }

    /// Maps `size` bytes (a page multiple), readable and writable and untouched like
    /// [`Os::map_aligned`], at an address that plus `offset` (a page multiple) is a
    /// multiple of `align` (a power of two, at least the OS page size, possibly far above the
    /// machine's memory): the search for the place reserves address space only, never memory.
    ///
    /// # Safety
    /// `size`, `align` and `offset` as stated.
    unsafe fn map_aligned_offset(size: usize, align: usize, offset: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { posix::map_reserved_aligned(size, align, offset) }
    }

    /// Unmaps a range obtained from this trait.
    ///
    /// # Safety
    /// The range must be mapped by this layer and no longer in use.
    unsafe fn unmap(ptr: *mut u8, size: usize) {
        // SAFETY: forwarded contract.
        unsafe { posix::unmap(ptr, size) }
    }

    /// Gives the pages of a range back to the OS, keeping the address range. Returns whether the
    /// range now reads as zero.
    ///
    /// # Safety
    /// The range must be mapped by this layer, page aligned, and hold no live data.
    unsafe fn purge(ptr: *mut u8, size: usize, mode: PurgeMode) -> bool;

    /// Makes a range inaccessible (`PROT_NONE`, guard pages) or accessible again. Returns false
    /// on failure.
    ///
    /// # Safety
    /// The range must be mapped by this layer, page aligned, and hold nothing in use.
    unsafe fn protect(ptr: *mut u8, size: usize, accessible: bool) -> bool {
        // SAFETY: forwarded contract.
        unsafe { posix::protect(ptr, size, accessible) }
    }

    /// Asks for (or against) transparent huge pages on a range; a no-op where unsupported.
    ///
    /// # Safety
    /// The range must be mapped by this layer and page aligned.
    unsafe fn set_huge_pages(_ptr: *mut u8, _size: usize, _enable: bool) {}

    /// Grows or shrinks a mapping in place; false if the OS cannot.
    ///
    /// # Safety
    /// `[ptr, ptr+old_size)` must be one mapping made by this layer; sizes page multiples.
    unsafe fn resize_in_place(_ptr: *mut u8, _old_size: usize, _new_size: usize) -> bool {
        false
    }

    /// Moves a mapping to a new address aligned to `align`, with size `new_size`, without copying
    /// the pages where the OS can (Linux `mremap`). Returns null if unsupported or on failure, in
    /// which case the old mapping is untouched.
    ///
    /// # Safety
    /// As [`Os::resize_in_place`].
    unsafe fn move_mapping(_ptr: *mut u8, _old_size: usize, _new_size: usize, _align: usize) -> *mut u8 {
        core::ptr::null_mut()
    }

    /// Applies a placement policy to a range before its pages are touched. Returns false where the
    /// platform has no per-range placement (the caller then falls back to
    /// [`Os::with_thread_placement`]).
    ///
    /// # Safety
    /// The range must be mapped by this layer and page aligned.
    unsafe fn place(_ptr: *mut u8, _size: usize, placement: Placement<'_>) -> bool {
        matches!(placement, Placement::Local)
    }

    /// Runs `touch` with the calling thread's memory placement temporarily set to `node`, for
    /// platforms whose placement is per thread rather than per range. Returns false (without
    /// calling `touch`) where unsupported.
    fn with_thread_placement(_node: usize, _touch: &mut dyn FnMut()) -> bool {
        false
    }

    /// Where the pages at `addrs` are: `nodes[i]` receives the node of the page holding
    /// `addrs[i]`, or [`PAGE_ABSENT`] if it is not resident. One system call for all of them
    /// (Linux `move_pages` without target nodes). Returns false where the OS cannot tell.
    fn page_nodes(_addrs: &[usize], _nodes: &mut [i32]) -> bool {
        false
    }

    // ---- CPUs and topology ----

    /// A pointer to the calling thread's kernel-maintained current-CPU word (Linux rseq `cpu_id`),
    /// valid for the thread's life, or null where there is none.
    fn cpu_id_ptr() -> *const u32 {
        core::ptr::null()
    }

    /// The CPU the calling thread runs on now (a system call or vDSO; slow path only).
    fn current_cpu() -> Option<usize> {
        None
    }

    /// The CPUs the calling thread may run on (its affinity) as bits of `mask`: CPU `i` is bit
    /// `i % 64` of word `i / 64` (CPUs from `64 * CPU_WORDS` up are left out). False where the
    /// OS cannot say. A system call: slow paths only.
    fn thread_cpus(_mask: &mut [u64; CPU_WORDS]) -> bool {
        false
    }

    /// Bytes of memory free on node `node` now (Linux: `MemFree` of the node's `meminfo`);
    /// `None` where the OS does not say. A system call or two: slow paths only.
    fn node_free_memory(_node: usize) -> Option<u64> {
        None
    }

    /// Reports the topology to `sink`. `root` replaces `/sys` (Linux) for tests; other platforms
    /// ignore it. Returns false if nothing usable was found (callers assume one node).
    fn read_topology(_root: Option<&[u8]>, _sink: &mut dyn TopologySink) -> bool {
        false
    }

    /// The memory policy the process was started with (e.g. by `numactl --membind`), so
    /// domalloc follows it instead of overriding it. `None` = the default (first touch).
    fn process_policy() -> Option<ProcessPolicy> {
        None
    }

    // ---- threads and synchronisation ----

    /// The calling thread's kernel id: non-zero, below 2^30, unique among the process's live
    /// threads. Uncached (a system call); [`thread_id`] caches it.
    fn kernel_thread_id() -> u32;

    /// Sleeps while `*word == expected`, until woken by [`Os::futex_wake`] or after `timeout_ms`
    /// (`None`: no limit). Spurious wake-ups are allowed.
    fn futex_wait(word: &AtomicU32, expected: u32, timeout_ms: Option<u64>);

    /// Wakes up to `n` threads sleeping in [`Os::futex_wait`] on `word`.
    fn futex_wake(word: &AtomicU32, n: u32);

    /// Creates a thread-specific key whose destructor runs at thread exit with the stored value.
    fn thread_key_create(dtor: unsafe extern "C" fn(*mut c_void)) -> Option<ThreadKey> {
        posix::thread_key_create(dtor)
    }

    /// Stores `value` for the calling thread under `key`.
    fn thread_key_set(key: ThreadKey, value: *mut c_void) {
        posix::thread_key_set(key, value)
    }

    /// Keeps the object (shared library or plugin) that holds this copy of the allocator
    /// loaded until the process ends, so that `dlclose` of a plugin linked with it cannot unmap
    /// the code of its purge thread or of its thread-exit destructor. Returns whether it did
    /// (false where the object is the main program or unknown). Allocates: call only where a
    /// nested `malloc` is safe.
    fn pin_own_object() -> bool {
        posix::pin_object()
    }

    /// Registers fork handlers.
    fn atfork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) -> bool {
        posix::atfork(prepare, parent, child)
    }

    /// Starts a detached thread running `run` with every signal blocked and a small stack. This
    /// calls the C library's thread creation, which allocates: call it only where a nested
    /// `malloc` is safe (no allocator lock held, thread state consistent). Returns success.
    fn spawn_thread(run: extern "C" fn(*mut c_void) -> *mut c_void) -> bool {
        posix::spawn_thread(run)
    }

    /// Whether the process has (and always had) a single thread, as the C library tracks it
    /// (glibc's `__libc_single_threaded`); false where unknown.
    fn is_single_threaded() -> bool {
        false
    }

    /// Takes the C library's stdio list lock, where fork takes it after the atfork handlers
    /// (glibc's `_IO_list_lock`). Returns whether it was taken; then [`Os::stdio_unlock`] (in
    /// the parent) releases it; in the child the C library resets it itself.
    fn stdio_lock() -> bool {
        false
    }

    /// Releases the lock [`Os::stdio_lock`] took (fork's parent side).
    fn stdio_unlock() {}

    // ---- process ----

    /// Looks `name` up in the process environment without allocating.
    fn environ_find(name: &[u8]) -> Option<&'static [u8]> {
        posix::environ_find(name)
    }

    /// Calls `f` with each `NAME=value` entry of the environment (no allocation).
    fn environ_each(f: &mut dyn FnMut(&[u8])) {
        posix::environ_each(f)
    }

    /// Writes all of `bytes` to file descriptor `fd`, retrying short writes. Returns success.
    fn write_fd(fd: i32, bytes: &[u8]) -> bool {
        posix::write_fd(fd, bytes)
    }

    /// Opens `path` (NUL-terminated) for writing (created or truncated, mode 0644); -1 on error.
    fn create_file(path: &[u8]) -> i32 {
        posix::create_file(path)
    }

    /// Closes a descriptor from [`Os::create_file`] or [`Os::read_file`]'s internals.
    fn close_fd(fd: i32) {
        posix::close_fd(fd)
    }

    /// Reads up to `buf.len()` bytes of the file at `path` (NUL-terminated); `None` if it cannot
    /// be opened.
    fn read_file<'a>(path: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
        posix::read_file(path, buf)
    }

    /// This machine's host name into `buf` (no NUL); its length.
    fn host_name(buf: &mut [u8]) -> usize {
        posix::host_name(buf)
    }

    /// The process id.
    fn process_id() -> u32 {
        posix::process_id()
    }

    /// Eight random bytes from the kernel (for the free-list link key); never fails (falls back
    /// to address-space and clock entropy).
    fn random_u64() -> u64 {
        posix::random_u64()
    }

    /// Aborts the process (SIGABRT).
    fn abort() -> ! {
        posix::abort()
    }

    /// A monotonic clock in milliseconds.
    fn now_ms() -> u64 {
        posix::now_ms()
    }

    /// Sets the calling thread's `errno`.
    fn set_errno(e: i32);

    // ---- signals ----

    /// Calls `hook` when `sig` arrives, chained to the action in force now, never replacing it:
    /// after `hook`, the handler that was installed before (if any) is called as the kernel would
    /// have called it; with none and `then_default`, the signal is raised again with its default
    /// action (SIGTERM then ends the process as it would have). A signal the process ignores is
    /// left ignored (false). `hook` runs in a signal handler: it may only make async-signal-safe
    /// calls and must not take a lock the interrupted thread may hold. A handler the program
    /// installs later replaces ours (its choice). True when ours is installed.
    fn catch_signal(sig: Signal, hook: fn(), then_default: bool) -> bool {
        posix::catch_signal(sig, hook, then_default)
    }

    // ---- the heap profiler's view of the process ----

    /// Calls `f` with each mapping of the process (`start`, `end`, executable, file offset, path
    /// or empty), read without allocating (Linux: `/proc/self/maps` through a stack buffer).
    /// False where the platform cannot list them (the profiler then records no call stacks).
    fn for_each_mapping(f: &mut dyn FnMut(Mapping<'_>)) -> bool {
        posix::for_each_mapping(f)
    }

    /// The readable mapping that holds `addr`, as `(start, end)`, found without allocating (the
    /// profiler bounds its stack walks by it). Here: every mapping read with
    /// [`Os::for_each_mapping`]; Linux asks the kernel for that one (`PROCMAP_QUERY`, 6.11 and
    /// later: no text to write and parse) and reads them all only where it cannot.
    fn readable_mapping_of(addr: usize) -> Option<(usize, usize)> {
        posix::readable_mapping_of(addr)
    }

    /// Calls `f` with each readable and executable mapping, in address order (see
    /// [`Os::for_each_mapping`], whose answer this is, filtered: Linux asks the kernel for these
    /// alone where it can). False where the platform cannot list them.
    fn for_each_code_mapping(f: &mut dyn FnMut(Mapping<'_>)) -> bool {
        code_mappings_of_all::<Self>(f)
    }
}

/// [`Os::for_each_code_mapping`] from every mapping [`Os::for_each_mapping`] lists.
fn code_mappings_of_all<O: Os + ?Sized>(f: &mut dyn FnMut(Mapping<'_>)) -> bool {
    O::for_each_mapping(&mut |m| {
        if m.readable && m.executable {
            f(m)
        }
    })
}

/// One mapping of the process (see [`Os::for_each_mapping`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mapping<'a> {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) readable: bool,
    pub(crate) executable: bool,
    pub(crate) offset: u64,
    pub(crate) path: &'a [u8],
}

/// Stack bytes above `from` that [`frame_walk`] reads at most, looking for the program's call
/// into the allocator and its frame record: the allocator's frames above the profiler's (about
/// 100 bytes on the paths of `malloc`; the profiler's own add 700) and the caller's locals. A bound,
/// so that a sample costs about the same whatever the program: one built without frame pointers
/// has no record to find, and the walk used to scan up to 64 KiB for one (about 200,000
/// instructions a sample).
pub(crate) const WALK_WINDOW: usize = 4 << 10;
/// Bytes above the program's call into the allocator, as [`frame_walk`] found it, read for a
/// later return address into the allocator (the word found was then a stale one in the
/// allocator's frames) or for the program's frame record.
const WALK_CONFIRM: usize = 512;

/// Return addresses of the calling code's callers, innermost first, into `out`; how many were
/// written (0 on architectures without a walk here). Nothing is read outside
/// `[stack pointer, stack_end)` (`stack_end`: the end of the readable mapping that holds the
/// stack), so the walk never faults; it is safe in a signal handler. `from`: where the search
/// of the stack for the program's frames starts (the stack pointer of the allocator function
/// that asked, whose callees' frames are known to be the allocator's; 0: here).
///
/// The frame-pointer chain from the register as it is here, each record checked (16-aligned,
/// strictly above the last, its return address in code (`is_code`)), when its first return
/// address lies in `own` (the allocator's own code: it was built with frame pointers too).
/// Otherwise the allocator's frames keep none (its fast paths are built without), and the words
/// above `from` are read once, [`WALK_WINDOW`] bytes at most:
/// - the first frame record there that is the program's (16-aligned, its return address in code
///   outside the allocator and after a call instruction, the next record valid) starts the
///   chain, and the highest word below it that is a return address into code outside the
///   allocator (it follows a call instruction) is the program's call into the allocator (dead
///   slots lower down may hold stale ones, never above it; a tail call leaves none: then the
///   record's function stands for its callee);
/// - with no record there (a program built without frame pointers, or a caller with more locals
///   than [`WALK_CONFIRM`]), the program's call is the first such word above the last return
///   address into the allocator's own code (where its frames end; found only where `own` is
///   known: the allocator is a shared library), and the chain goes on from the frame-pointer
///   register if it still holds a valid record above that word (code built without frame
///   pointers saves and restores the register when it uses it); else that call is the whole
///   stack.
///
/// A heuristic: a stale record or return address left in a frame can be taken for the
/// program's. Full depth needs the program built with frame pointers; a call the compiler turned
/// into a jump (a tail call) leaves no return address, so its caller stands for it.
#[inline(never)]
pub(crate) fn frame_walk(
    out: &mut [usize],
    from: usize,
    stack_end: usize,
    is_code: &dyn Fn(usize) -> bool,
    own: (usize, usize),
) -> usize {
    #[allow(unused_mut)]
    let (mut fp, sp): (usize, usize);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads two registers.
    unsafe {
        core::arch::asm!("mov {fp}, rbp", "mov {sp}, rsp", fp = out(reg) fp, sp = out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads two registers.
    unsafe {
        core::arch::asm!("mov {fp}, x29", "mov {sp}, sp", fp = out(reg) fp, sp = out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (out, from, stack_end, is_code, own);
        return 0;
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        if out.is_empty() || stack_end <= sp {
            return 0;
        }
        let read = |a: usize| -> usize {
            #[cfg(test)]
            WALK_READS.with(|n| n.set(n.get() + 1));
            // SAFETY: every caller checks `sp <= a` and `a + 8 <= stack_end`: inside the
            // stack's readable mapping.
            unsafe { core::ptr::read_volatile(a as *const usize) }
        };
        // Stack addresses are not code (the cheap test first: most words of a stack are).
        let code = |v: usize| !(sp <= v && v < stack_end) && is_code(v);
        let mine = |ra: usize| own.0 <= ra && ra < own.1;
        let chain = |out: &mut [usize], mut fp: usize, mut low: usize| -> usize {
            let mut n = 0;
            while n < out.len() && fp % 16 == 0 && fp > low && fp.checked_add(16).is_some_and(|e| e <= stack_end) {
                let (next, ra) = (read(fp), read(fp + 8));
                if !code(ra) {
                    break;
                }
                out[n] = ra;
                n += 1;
                low = fp;
                fp = next;
            }
            n
        };
        let n = chain(out, fp, sp);
        if n > 0 && mine(out[0]) {
            return n;
        }
        let start = from.max(sp);
        let limit = stack_end.min(start.saturating_add(WALK_WINDOW));
        let valid_next = |l: usize, next: usize| {
            next == 0 || (next % 16 == 0 && next > l && next.checked_add(16).is_some_and(|e| e <= stack_end))
        };
        // One pass over the window's words: the program's first frame record; below it the
        // highest return address outside the allocator; and the first one above the last return
        // address into the allocator (`after_own`), taken for the program's call once
        // [`WALK_CONFIRM`] bytes above it held none into the allocator.
        let (mut highest, mut after_own, mut seen_own) = ((0usize, 0usize), (0usize, 0usize), false);
        // (Two words at a time: a record's two, each word's code test made once.)
        let mut a = (start + 15) & !15;
        while a + 16 <= limit && (after_own.1 == 0 || a < after_own.0 + WALK_CONFIRM) {
            let (v, ra) = (read(a), read(a + 8));
            let ra_code = code(ra);
            // (The next record's return address must be code too; past it, chains often end in
            // a frame of code built without frame pointers, such as the C library's start.)
            if ra_code && !mine(ra) && valid_next(a, v) && (v == 0 || code(read(v + 8))) && follows_call(ra, is_code) {
                if highest.1 != 0 {
                    out[0] = highest.1;
                    return 1 + chain(&mut out[1..], a, sp);
                }
                return chain(out, a, sp);
            }
            for (at, w, w_code) in [(a, v, code(v)), (a + 8, ra, ra_code)] {
                if w_code && follows_call(w, is_code) {
                    if mine(w) {
                        (seen_own, after_own) = (true, (0, 0));
                    } else {
                        highest = (at, w);
                        if seen_own && after_own.1 == 0 {
                            after_own = (at, w);
                        }
                    }
                }
            }
            a += 16;
        }
        // No record: the program's call into the allocator, then the chain from the register if
        // it still holds a record above it.
        if after_own.1 == 0 {
            return 0;
        }
        out[0] = after_own.1;
        if fp > after_own.0 {
            return 1 + chain(&mut out[1..], fp, after_own.0);
        }
        1
    }
}

#[cfg(test)]
thread_local! {
    /// Stack words [`frame_walk`] read on this thread (tests).
    pub(crate) static WALK_READS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Whether `ra` follows a call instruction (so it can be a return address, not a function
/// pointer or other code address a frame holds). `is_code` says which bytes are readable code.
#[allow(unused_variables)]
fn follows_call(ra: usize, is_code: &dyn Fn(usize) -> bool) -> bool {
    if ra < 8 || !is_code(ra - 8) {
        return false; // (the bytes before it are read: they must be code, which is readable)
    }
    // SAFETY: [ra - 8, ra) is in a readable code mapping (`is_code` lists only those).
    let b = |back: usize| unsafe { core::ptr::read_volatile((ra - back) as *const u8) };
    #[cfg(target_arch = "x86_64")]
    {
        let call_ind = |modrm: u8| modrm & 0x38 == 0x10; // FF /2
                                                         // call rel32; call *disp32(%rip) or *disp32(reg); *(reg)/disp8(reg); *reg; with SIB.
        b(5) == 0xe8
            || (b(6) == 0xff && call_ind(b(5)))
            || (b(7) == 0xff && call_ind(b(6)))
            || (b(3) == 0xff && call_ind(b(2)))
            || (b(4) == 0xff && call_ind(b(3)))
            || (b(2) == 0xff && call_ind(b(1)))
    }
    #[cfg(target_arch = "aarch64")]
    {
        let insn = u32::from_le_bytes([b(4), b(3), b(2), b(1)]);
        insn & 0xfc00_0000 == 0x9400_0000 || insn & 0xffff_fc1f == 0xd63f_0000 // BL, BLR
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        true
    }
}

/// The current stack pointer.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads a register.
    unsafe {
        core::arch::asm!("mov {sp}, rsp", sp = out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads a register.
    unsafe {
        core::arch::asm!("mov {sp}, sp", sp = out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let x = 0u8;
        sp = &x as *const u8 as usize;
    }
    sp
}

/// The signals the allocator may catch (statistics and profile dumps).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Signal {
    /// SIGTERM (a batch system's walltime kill).
    Term = 0,
    /// SIGHUP.
    Hup = 1,
    /// SIGUSR1.
    Usr1 = 2,
    /// SIGUSR2.
    Usr2 = 3,
}

impl Signal {
    /// How many there are.
    pub(crate) const COUNT: usize = 4;

    /// From its name without `SIG` (`TERM`, `HUP`, `USR1`, `USR2`).
    pub fn from_name(name: &[u8]) -> Option<Signal> {
        match name {
            b"TERM" => Some(Signal::Term),
            b"HUP" => Some(Signal::Hup),
            b"USR1" => Some(Signal::Usr1),
            b"USR2" => Some(Signal::Usr2),
            _ => None,
        }
    }

    /// Its name without `SIG`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Hup => "HUP",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
        }
    }
}

// ---- shared wrappers ----

/// Mappings made so far; with `DOMALLOC_FAIL_MAP_EVERY=N` every Nth fails (fault injection).
static MAP_CALLS: AtomicU64 = AtomicU64::new(0);
/// Fault injection settings (from the options at start-up, or [`set_fault_injection`]).
static FAIL_EVERY: AtomicU64 = AtomicU64::new(0);
static FAIL_AFTER: AtomicU64 = AtomicU64::new(0);

/// Addresses at or above this are never used (the segment map covers 47 bits).
pub(crate) const ADDRESS_LIMIT: usize = 1 << 47;

/// Makes every `every`-th OS mapping fail, and every mapping after the `after`-th (counting from
/// now); 0 turns each off. For tests of out-of-memory handling.
pub(crate) fn set_fault_injection(every: u64, after: u64) {
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
    crate::sys::contention::syscall(crate::sys::contention::Syscall::Mmap);
    // SAFETY: the caller upholds the contract.
    let p = unsafe { Sys::map_aligned(size, align) };
    if !p.is_null() && (p as usize).checked_add(size).map_or(true, |end| end > ADDRESS_LIMIT) {
        // SAFETY: we just mapped it.
        unsafe { Sys::unmap(p, size) };
        return core::ptr::null_mut();
    }
    p
}

/// [`Os::map_aligned_offset`] with the same fault injection and address-range check as
/// [`map_aligned`].
///
/// # Safety
/// As [`Os::map_aligned_offset`].
pub(crate) unsafe fn map_aligned_offset(size: usize, align: usize, offset: usize) -> *mut u8 {
    let n = MAP_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let (every, after) = (FAIL_EVERY.load(Ordering::Relaxed), FAIL_AFTER.load(Ordering::Relaxed));
    if (every != 0 && n % every == 0) || (after != 0 && n > after) {
        return core::ptr::null_mut();
    }
    crate::sys::contention::syscall(crate::sys::contention::Syscall::Mmap);
    // SAFETY: the caller upholds the contract.
    let p = unsafe { Sys::map_aligned_offset(size, align, offset) };
    if !p.is_null() && (p as usize).checked_add(size).map_or(true, |end| end > ADDRESS_LIMIT) {
        // SAFETY: we just mapped it.
        unsafe { Sys::unmap(p, size) };
        return core::ptr::null_mut();
    }
    p
}

/// 0: not pinned yet; 1: being pinned (by some thread); 2: done (or tried).
static PINNED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// [`Os::pin_own_object`] once per process, before the first thread of ours starts and before
/// the first thread-exit destructor can run. A nested call (the loader allocates) or a call
/// from another thread while the first one works returns at once. Allocates the first time:
/// call only where a nested `malloc` is safe.
pub(crate) fn pin_once() {
    if PINNED.load(Ordering::Acquire) != 0
        || PINNED.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_err()
    {
        return;
    }
    Sys::pin_own_object();
    PINNED.store(2, Ordering::Release);
}

/// [`Os::unmap`], counted.
///
/// # Safety
/// As [`Os::unmap`].
pub(crate) unsafe fn unmap(ptr: *mut u8, size: usize) {
    crate::sys::contention::syscall(crate::sys::contention::Syscall::Munmap);
    // SAFETY: forwarded contract.
    unsafe { Sys::unmap(ptr, size) }
}

/// [`Os::purge`], counted.
///
/// # Safety
/// As [`Os::purge`].
pub(crate) unsafe fn purge(ptr: *mut u8, size: usize, mode: PurgeMode) -> bool {
    crate::sys::contention::syscall(crate::sys::contention::Syscall::Madvise);
    // SAFETY: forwarded contract.
    unsafe { Sys::purge(ptr, size, mode) }
}

/// Words of the CPU masks [`Os::thread_cpus`] fills (1024 CPUs, glibc's `cpu_set_t`).
pub(crate) const CPU_WORDS: usize = 16;

/// The OS page size assumed everywhere (4 KiB on every supported platform).
pub(crate) const OS_PAGE: usize = 4096;

/// `errno` values the C interface reports.
pub(crate) const ENOMEM: i32 = libc::ENOMEM;
pub(crate) const EINVAL: i32 = libc::EINVAL;

/// Sets the calling thread's `errno`.
#[inline]
pub(crate) fn set_errno(e: i32) {
    Sys::set_errno(e)
}

/// The calling thread's id (cached in TLS after the first call; reset in a fork child).
#[inline]
pub(crate) fn thread_id() -> u32 {
    let t = tls::thread_id();
    if t != 0 {
        return t;
    }
    let t = Sys::kernel_thread_id().max(1);
    tls::set_thread_id(t);
    t
}

/// Forgets the cached thread id (the fork child's thread has a new one).
pub(crate) fn forget_thread_id() {
    tls::set_thread_id(0);
}

/// Formats into a 512-byte stack buffer and writes the result to stderr in one `write`.
pub(crate) fn eprint(args: core::fmt::Arguments<'_>) {
    let mut buf = [0u8; 512];
    let mut w = BufWriter::new(&mut buf);
    let _ = core::fmt::write(&mut w, args);
    Sys::write_fd(2, w.as_bytes());
}

/// Prints one line `domalloc: error: ...` to stderr and aborts the process. Used for detected
/// heap misuse (invalid or double free, corrupted free lists) so corruption is never silent.
#[cold]
#[inline(never)]
pub(crate) fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    eprint(format_args!("domalloc: error: {}\n", args));
    let n = SIGNAL_REENTRIES.load(Ordering::Relaxed);
    if n > 0 {
        // The likely real cause when a program allocates in signal handlers: a handler that
        // interrupted the few unguarded instructions of a fast path (`reentry.rs`).
        eprint(format_args!(
            "domalloc: note: malloc or free was re-entered from a signal handler {} times in this process; a handler that interrupts malloc or free can cause the error above\n",
            n
        ));
    }
    Sys::abort()
}

/// Calls re-entered from signal handlers so far (counted by the thread cache's `reentry.rs`,
/// read by [`fatal`] and the statistics).
pub(crate) static SIGNAL_REENTRIES: AtomicU64 = AtomicU64::new(0);
