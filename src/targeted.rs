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

use crate::alloc::{free, MAX_ALIGN, MAX_ALLOC};
use crate::heap::Heap;
use crate::os::{NodeMask, OS_PAGE};
use crate::size_class::class_for;
use crate::topology;

/// Whether `node` exists and has memory.
fn valid_node(node: usize) -> bool {
    crate::init::ensure_init() && topology::get().has_memory(node)
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
        return unsafe { crate::alloc::alloc(size, align) };
    }
    match class_for(size, align) {
        Some(c) => {
            let mut slot = crate::init::node_heap(node).lock();
            if slot.0.is_null() {
                let h = crate::init::heap_acquire();
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
        None => crate::alloc::alloc_big_on(node, size, align, false, true),
    }
}

/// Allocates `layout` with its pages interleaved over `nodes` (all nodes with memory when
/// `None`). The block gets a mapping of its own (page granular). Null on failure.
pub fn alloc_interleaved(layout: Layout, nodes: Option<&NodeMask>) -> *mut u8 {
    if !crate::init::ensure_init() || layout.size() > MAX_ALLOC || layout.align() > MAX_ALIGN {
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
        return unsafe { crate::alloc::alloc(0, layout.align()) };
    }
    let Some(node) = crate::init::alloc_node() else { return ptr::null_mut() };
    crate::huge::alloc_placed(crate::domain::domain(node), layout.size(), layout.align().max(OS_PAGE), &mask)
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
        let ok = crate::init::ensure_init() && !nodes.is_empty() && nodes.iter().all(|n| topology::get().has_memory(n));
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
