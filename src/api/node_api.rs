//! Node-targeted allocation: put a block, a `Vec` or a hash map on a chosen NUMA node, or spread
//! its pages over several nodes.
//!
//! ```
//! use domalloc::allocator_api2::vec::Vec;
//! // The node the calling thread runs on: exists on every machine, one node or many.
//! let node = domalloc::Node::new(domalloc::current_node()).expect("the current node has memory");
//! let mut v: Vec<u64, _> = Vec::new_in(node);
//! v.extend(0..100_000);
//! assert_eq!(domalloc::node_of(v.as_ptr().cast()), Some(node.id()));
//! ```
//!
//! Small blocks for a node come from that node's shared heap (under a lock: node-targeted
//! allocation of tiny objects is correct but not fast-path fast); large and huge blocks come
//! straight from the node's domain. The memory is bound to the node (`MPOL_PREFERRED` on Linux),
//! whichever thread touches it first. Frees go home like any other block, from any thread.
//! Interleaved blocks get a mapping of their own whose pages alternate over the nodes.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};

use crate::api::alloc::{free, MAX_ALIGN, MAX_ALLOC};
use crate::config::topology;
use crate::layout::size_class::class_for;
use crate::sys::os::{NodeMask, OS_PAGE};
use crate::thread::Heap;

/// Whether `node` exists and has memory.
fn valid_node(node: usize) -> bool {
    crate::thread::ensure_init() && topology::get().has_memory(node)
}

/// Allocates `layout` on node `node`. Null if the node has no memory or on exhaustion.
pub fn alloc_on_node(layout: Layout, node: usize) -> *mut u8 {
    let (size, align) = (layout.size(), layout.align());
    if !valid_node(node) || size > MAX_ALLOC || align > MAX_ALIGN {
        return ptr::null_mut();
    }
    if !crate::config::numa_enabled() {
        // One domain: any block is on "the" node.
        // SAFETY: Layout alignment is a power of two.
        return unsafe { crate::api::alloc::alloc(size, align) };
    }
    match class_for(size, align) {
        Some(c) => {
            let mut slot = crate::thread::node_heap(node).lock();
            if slot.0.is_null() {
                let h = crate::thread::heap_acquire();
                if h.is_null() {
                    return ptr::null_mut();
                }
                // SAFETY: a fresh heap, ours; it is never a thread's TLS heap.
                unsafe {
                    (*h).setup(false);
                    (*h).pin_to_node(node);
                }
                slot.0 = h;
            }
            let h: &Heap = {
                // SAFETY: used only under the slot's lock.
                unsafe { &*slot.0 }
            };
            // SAFETY: the node heap is used only under its lock.
            unsafe { h.alloc_refill(c).0 }
        }
        None => crate::api::alloc::alloc_big_on(node, size, align, false, true),
    }
}

/// Allocates `layout` with its pages interleaved over `nodes` (all nodes with memory when
/// `None`). The block gets a mapping of its own (page granular). Null on failure.
pub fn alloc_interleaved(layout: Layout, nodes: Option<&NodeMask>) -> *mut u8 {
    if !crate::thread::ensure_init() || layout.size() > MAX_ALLOC || layout.align() > MAX_ALIGN {
        return ptr::null_mut();
    }
    let topo = topology::get();
    let mask = match nodes {
        Some(m) => *m,
        None => topo.memory_nodes(),
    };
    if mask.is_empty() || mask.iter().any(|n| !topo.has_memory(n)) {
        return ptr::null_mut();
    }
    if layout.size() == 0 {
        // No page to spread: a minimal block of the calling thread's node.
        // SAFETY: Layout alignment is a power of two.
        return unsafe { crate::api::alloc::alloc(0, layout.align()) };
    }
    let Some(node) = crate::thread::alloc_node() else { return ptr::null_mut() };
    crate::node::huge_alloc_placed(crate::node::domain(node), layout.size(), layout.align().max(OS_PAGE), &mask)
}

/// An allocator handle that puts everything on one node (for `allocator_api2` collections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    id: usize,
}

impl Node {
    /// A handle for node `id`; `None` if the node does not exist or has no memory.
    pub fn new(id: usize) -> Option<Node> {
        valid_node(id).then_some(Node { id })
    }
    /// The node id.
    pub fn id(&self) -> usize {
        self.id
    }
}

// SAFETY: blocks are valid for their layout until deallocated, and deallocate accepts exactly
// blocks this allocator (any domalloc handle) returned.
unsafe impl Allocator for Node {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let p = alloc_on_node(layout.align_to(1).unwrap_or(layout), self.id);
        slice(p, layout.size())
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, _layout: Layout) {
        // Every block `allocate` returned is a real block, zero-sized ones included.
        // SAFETY: the caller passes a block this handle returned.
        unsafe { free(ptr.as_ptr()) }
    }
}

/// An allocator handle whose blocks have their pages spread round-robin over a set of nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interleaved {
    nodes: Option<NodeMask>,
}

impl Interleaved {
    /// Over every node with memory.
    pub fn all() -> Interleaved {
        Interleaved { nodes: None }
    }
    /// Over `nodes`; `None` if the set is empty or names a node without memory.
    pub fn over(nodes: NodeMask) -> Option<Interleaved> {
        let ok =
            crate::thread::ensure_init() && !nodes.is_empty() && nodes.iter().all(|n| topology::get().has_memory(n));
        ok.then_some(Interleaved { nodes: Some(nodes) })
    }
}

// SAFETY: as for `Node`.
unsafe impl Allocator for Interleaved {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let p = alloc_interleaved(layout, self.nodes.as_ref());
        slice(p, layout.size())
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, _layout: Layout) {
        // Every block `allocate` returned is a real block, zero-sized ones included.
        // SAFETY: the caller passes a block this handle returned.
        unsafe { free(ptr.as_ptr()) }
    }
}

fn slice(p: *mut u8, len: usize) -> Result<NonNull<[u8]>, AllocError> {
    match NonNull::new(p) {
        Some(p) => Ok(NonNull::slice_from_raw_parts(p, len)),
        None => Err(AllocError),
    }
}

/// An allocator handle for the fast tier: each block goes on the high-bandwidth node nearest
/// the thread that allocates it (see [`crate::config::topology::Tier`]); where there is none, or it is
/// full, on the thread's own node (as `hbw_malloc` under `HBW_POLICY_PREFERRED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HighBandwidth;

impl HighBandwidth {
    /// Whether the machine has a high-bandwidth node (the fast tier is real, not a fallback).
    pub fn available() -> bool {
        crate::thread::ensure_init() && !topology::get().tier_nodes(topology::Tier::HighBandwidth).is_empty()
    }
}

// SAFETY: as for `Node`.
unsafe impl Allocator for HighBandwidth {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let p = hbw::alloc_preferred(layout.size(), layout.align());
        slice(p, layout.size())
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, _layout: Layout) {
        // SAFETY: the caller passes a block this handle returned.
        unsafe { free(ptr.as_ptr()) }
    }
}

/// memkind's hbwmalloc(3) interface, with its C semantics: blocks on the high-bandwidth node
/// nearest the calling thread (the `ffi` crate exports these as `hbw_*`).
///
/// Placement is `alloc_on_node`'s: small blocks from that node's heap, larger ones bound to
/// the node (`MPOL_PREFERRED`), so under `HBW_POLICY_PREFERRED` a full high-bandwidth node
/// spills, page by page, where the kernel's fallback order from that node goes (its nearest
/// node by SLIT distance: the local DDR node on the machines this is for). Under
/// `HBW_POLICY_BIND` / `BIND_ALL` an allocation is refused (`NULL`, `ENOMEM`) when the node's
/// free memory, less a reserve of 1/16 of the node, cannot hold it; the free memory is asked
/// of the kernel only when the remaining credit runs out. Frees go home from any thread.
pub mod hbw {
    use core::ffi::{c_int, c_void};
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};

    use super::{alloc_interleaved, alloc_on_node};
    use crate::config::topology::{self, Tier};
    use crate::sys::os::{NodeMask, Os, Sys, OS_PAGE, PAGE_ABSENT};

    /// `HBW_POLICY_BIND`.
    pub const POLICY_BIND: c_int = 1;
    /// `HBW_POLICY_PREFERRED` (the default).
    pub const POLICY_PREFERRED: c_int = 2;
    /// `HBW_POLICY_INTERLEAVE`.
    pub const POLICY_INTERLEAVE: c_int = 3;
    /// `HBW_POLICY_BIND_ALL`.
    pub const POLICY_BIND_ALL: c_int = 4;
    /// `HBW_PAGESIZE_4KB`.
    pub const PAGESIZE_4KB: c_int = 1;
    /// `HBW_PAGESIZE_2MB`.
    pub const PAGESIZE_2MB: c_int = 2;
    /// `HBW_PAGESIZE_1GB_STRICT`.
    pub const PAGESIZE_1GB_STRICT: c_int = 3;
    /// `HBW_PAGESIZE_1GB`.
    pub const PAGESIZE_1GB: c_int = 4;
    /// `HBW_TOUCH_PAGES`.
    pub const TOUCH_PAGES: c_int = 1;

    const ENOMEM: c_int = 12;
    const EINVAL: c_int = 22;
    const EPERM: c_int = 1;
    const EFAULT: c_int = 14;
    const ENODEV: c_int = 19;

    /// The policy (0: never set, i.e. preferred).
    static POLICY: AtomicU8 = AtomicU8::new(0);
    /// Whether an hbw allocation was made (the policy is then fixed).
    static USED: AtomicBool = AtomicBool::new(false);
    /// Bytes each node may still hand out under BIND before its free memory is asked again.
    static CREDIT: [AtomicU64; NodeMask::CAPACITY] = [const { AtomicU64::new(0) }; NodeMask::CAPACITY];

    fn policy() -> c_int {
        match POLICY.load(Relaxed) {
            0 => POLICY_PREFERRED,
            p => p as c_int,
        }
    }

    /// The high-bandwidth node nearest the CPU the calling thread runs on now (memkind's
    /// choice). Not its heap's node: the heap follows a thread the scheduler moved only after
    /// `DOMALLOC_FOLLOW_DELAY`, while a block for a given node costs the same from any thread.
    fn nearest() -> Option<usize> {
        if !crate::thread::ensure_init() {
            return None;
        }
        let node = match Sys::current_cpu() {
            Some(cpu) => crate::node::node_of_cpu(cpu),
            None => crate::thread::alloc_node()?,
        };
        topology::get().hbw_node(node)
    }

    /// Takes `size` bytes of node `node`'s BIND credit, asking the kernel for its free memory
    /// when the credit is short. False: the node cannot hold the block.
    fn take_credit(node: usize, size: usize) -> bool {
        let Some(credit) = CREDIT.get(node) else { return false };
        let need = (size as u64).div_ceil(OS_PAGE as u64) * OS_PAGE as u64;
        let mut refreshed = false;
        loop {
            let c = credit.load(Relaxed);
            if c >= need {
                if credit.compare_exchange(c, c - need, Relaxed, Relaxed).is_ok() {
                    return true;
                }
                continue;
            }
            if refreshed {
                return false;
            }
            let reserve = topology::get().memory(node) / 16;
            let free = match Sys::node_free_memory(node) {
                Some(f) => f.saturating_sub(reserve),
                None => u64::MAX / 2,
            };
            credit.store(free, Relaxed);
            refreshed = true;
        }
    }

    /// On node `node` (bound), or null.
    fn on_node(node: usize, size: usize, align: usize) -> *mut u8 {
        match core::alloc::Layout::from_size_align(size, align) {
            Ok(l) => alloc_on_node(l, node),
            Err(_) => core::ptr::null_mut(),
        }
    }

    /// Preferred placement (the fast-tier allocator's): the nearest high-bandwidth node, else
    /// the thread's own node.
    pub(crate) fn alloc_preferred(size: usize, align: usize) -> *mut u8 {
        if let Some(h) = nearest() {
            let p = on_node(h, size, align);
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: callers pass a power-of-two alignment.
        unsafe { crate::api::alloc::alloc(size, align) }
    }

    /// One hbw allocation under the policy in force (`size` > 0, `align` a power of two).
    fn alloc(size: usize, align: usize) -> *mut u8 {
        USED.store(true, Relaxed);
        let p = match policy() {
            POLICY_PREFERRED => alloc_preferred(size, align),
            POLICY_INTERLEAVE => {
                let nodes = topology::get().tier_nodes(Tier::HighBandwidth);
                match core::alloc::Layout::from_size_align(size, align) {
                    Ok(l) if !nodes.is_empty() => alloc_interleaved(l, Some(&nodes)),
                    _ => core::ptr::null_mut(),
                }
            }
            bind => {
                let mut p = core::ptr::null_mut();
                if let Some(h) = nearest() {
                    if take_credit(h, size) {
                        p = on_node(h, size, align);
                    }
                    if p.is_null() && bind == POLICY_BIND_ALL {
                        // The other high-bandwidth nodes, nearest first.
                        let t = topology::get();
                        let from = crate::thread::alloc_node().unwrap_or(0);
                        let mut others = t.tier_nodes(Tier::HighBandwidth);
                        while p.is_null() {
                            let Some(n) = others.iter().filter(|&n| n != h).min_by_key(|&n| (t.distance(from, n), n))
                            else {
                                break;
                            };
                            let mut rest = NodeMask::empty();
                            others.iter().filter(|&m| m != n && m != h).for_each(|m| rest.insert(m));
                            others = rest;
                            if take_credit(n, size) {
                                p = on_node(n, size, align);
                            }
                        }
                    }
                }
                p
            }
        };
        if p.is_null() {
            crate::sys::os::set_errno(ENOMEM);
        }
        p
    }

    /// `hbw_check_available`: 0 when there is a high-bandwidth node, else `ENODEV`.
    pub fn check_available() -> c_int {
        if super::HighBandwidth::available() {
            0
        } else {
            ENODEV
        }
    }

    /// `hbw_get_policy`.
    pub fn get_policy() -> c_int {
        policy()
    }

    /// `hbw_set_policy`: once, before the first hbw allocation (`EPERM` otherwise); `EINVAL`
    /// for an unknown policy.
    pub fn set_policy(mode: c_int) -> c_int {
        if !(POLICY_BIND..=POLICY_BIND_ALL).contains(&mode) {
            return EINVAL;
        }
        if USED.load(Relaxed) || POLICY.compare_exchange(0, mode as u8, Relaxed, Relaxed).is_err() {
            return EPERM;
        }
        0
    }

    /// `hbw_malloc`: null for size 0.
    pub fn malloc(size: usize) -> *mut c_void {
        if size == 0 {
            return core::ptr::null_mut();
        }
        alloc(size, 16).cast()
    }

    /// `hbw_calloc`: null for a zero count or size and on overflow (`ENOMEM`).
    pub fn calloc(nmemb: usize, size: usize) -> *mut c_void {
        if nmemb == 0 || size == 0 {
            return core::ptr::null_mut();
        }
        let Some(total) = nmemb.checked_mul(size) else {
            crate::sys::os::set_errno(ENOMEM);
            return core::ptr::null_mut();
        };
        let p = alloc(total, 16);
        if !p.is_null() {
            // A node heap's block may have been used before; fresh pages read as zero anyway,
            // and writing them here places them (they are bound to the node).
            // SAFETY: `p` holds `total` bytes.
            unsafe { core::ptr::write_bytes(p, 0, total) };
        }
        p.cast()
    }

    /// `hbw_realloc`: null `p` is `hbw_malloc`; size 0 frees and returns null. Growth moves
    /// the contents to a new hbw block; a block that still fits stays.
    ///
    /// # Safety
    /// `p` is null or a live block of this allocator.
    pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
        if p.is_null() {
            return malloc(size);
        }
        if size == 0 {
            // SAFETY: the caller's contract.
            unsafe { crate::api::alloc::free(p.cast()) };
            return core::ptr::null_mut();
        }
        // SAFETY: a live block (the caller's contract).
        let old = unsafe { crate::api::alloc::usable_size(p.cast()) };
        if size <= old {
            return p;
        }
        let q = alloc(size, 16);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; `old` < `size` bytes fit in each.
            unsafe {
                core::ptr::copy_nonoverlapping(p.cast::<u8>(), q, old);
                crate::api::alloc::free(p.cast());
            }
        }
        q.cast()
    }

    /// `hbw_free`, from any thread.
    ///
    /// # Safety
    /// `p` is null or a live block of this allocator.
    pub unsafe fn free(p: *mut c_void) {
        // SAFETY: the caller's contract.
        unsafe { crate::api::alloc::free(p.cast()) }
    }

    /// `hbw_malloc_usable_size` (0 for null).
    ///
    /// # Safety
    /// `p` is null or a live block of this allocator.
    pub unsafe fn malloc_usable_size(p: *mut c_void) -> usize {
        if p.is_null() {
            return 0;
        }
        // SAFETY: the caller's contract.
        unsafe { crate::api::alloc::usable_size(p.cast()) }
    }

    /// `hbw_posix_memalign`: `EINVAL` for an alignment that is not a power of two multiple of
    /// `sizeof(void *)`, `ENOMEM` when out of memory; `*memptr` is set only on success (null
    /// for size 0).
    ///
    /// # Safety
    /// `memptr` is valid for a pointer write.
    pub unsafe fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
        // SAFETY: the caller's contract.
        unsafe { posix_memalign_psize(memptr, align, size, PAGESIZE_4KB) }
    }

    /// `hbw_posix_memalign_psize`: `HBW_PAGESIZE_4KB` as `hbw_posix_memalign`;
    /// `HBW_PAGESIZE_2MB` aligns the block to 2 MiB (its pages are huge where transparent
    /// huge pages allow); the 1 GiB sizes (deprecated by memkind) and any size other than 4 KiB
    /// under `HBW_POLICY_INTERLEAVE` are `EINVAL`.
    ///
    /// # Safety
    /// `memptr` is valid for a pointer write.
    pub unsafe fn posix_memalign_psize(memptr: *mut *mut c_void, align: usize, size: usize, pagesize: c_int) -> c_int {
        if memptr.is_null() || !align.is_power_of_two() || align % core::mem::size_of::<usize>() != 0 {
            return EINVAL;
        }
        let align = match pagesize {
            PAGESIZE_4KB => align,
            PAGESIZE_2MB if policy() != POLICY_INTERLEAVE => align.max(2 << 20),
            _ => return EINVAL,
        };
        if size == 0 {
            // SAFETY: the caller's contract.
            unsafe { *memptr = core::ptr::null_mut() };
            return 0;
        }
        let p = alloc(size, align);
        if p.is_null() {
            return ENOMEM;
        }
        // SAFETY: the caller's contract.
        unsafe { *memptr = p.cast() };
        0
    }

    /// `hbw_verify_memory_region`: 0 when every page of `[addr, addr + size)` is on a
    /// high-bandwidth node, -1 when one is not (a page never touched counts as not), `EINVAL`
    /// for a null address, size 0 or unknown flags, `EFAULT` when the kernel cannot say.
    /// `HBW_TOUCH_PAGES` first reads and rewrites one byte of every page.
    ///
    /// # Safety
    /// With `HBW_TOUCH_PAGES`, the range is readable and writable memory no other thread
    /// writes meanwhile.
    pub unsafe fn verify_memory_region(addr: *mut c_void, size: usize, flags: c_int) -> c_int {
        if addr.is_null() || size == 0 || flags & !TOUCH_PAGES != 0 || !crate::thread::ensure_init() {
            return EINVAL;
        }
        let start = addr as usize & !(OS_PAGE - 1);
        let end = match (addr as usize).checked_add(size) {
            Some(e) => e,
            None => return EINVAL,
        };
        if flags & TOUCH_PAGES != 0 {
            let mut a = addr as usize;
            while a < end {
                let b = a as *mut u8;
                // SAFETY: inside the range the caller vouches for; the same value is written back.
                unsafe { b.write_volatile(b.read_volatile()) };
                a = (a & !(OS_PAGE - 1)) + OS_PAGE;
            }
        }
        let hbw = topology::get().tier_nodes(Tier::HighBandwidth);
        const CHUNK: usize = 64;
        let mut addrs = [0usize; CHUNK];
        let mut nodes = [PAGE_ABSENT; CHUNK];
        let mut page = start;
        while page < end {
            let mut k = 0;
            while k < CHUNK && page < end {
                addrs[k] = page;
                k += 1;
                page += OS_PAGE;
            }
            crate::sys::syscall(crate::sys::Syscall::MovePages);
            if !Sys::page_nodes(&addrs[..k], &mut nodes[..k]) {
                return EFAULT;
            }
            if nodes[..k].iter().any(|&n| n < 0 || !hbw.contains(n as usize)) {
                return -1;
            }
        }
        0
    }
}
