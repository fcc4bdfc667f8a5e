//! The node-targeted API on this machine (the multi-node proof runs in QEMU guests, see
//! numa-tests/): handles, placement queries, frees from other threads.

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks the test itself
// allocated and still owns, with the layout it allocated them with.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::Layout;

use allocator_api2::vec::Vec as AVec;
use domalloc::{DomAlloc, Interleaved, Node, NodeMask};

#[global_allocator]
static A: DomAlloc = DomAlloc::new();

fn first_node() -> usize {
    domalloc::topology::get().nodes().find(|&n| domalloc::topology::get().has_memory(n)).unwrap()
}

#[test]
fn node_handles_place_collections() {
    let n = first_node();
    let node = Node::new(n).expect("a node with memory");
    assert_eq!(node.id(), n);
    assert!(Node::new(999).is_none(), "a node that does not exist");
    for len in [1usize, 100, 10_000, 1_000_000] {
        let mut v: AVec<u64, Node> = AVec::new_in(node);
        v.extend(0..len as u64);
        assert_eq!(v.iter().sum::<u64>(), (len as u64 - 1) * len as u64 / 2);
        assert_eq!(domalloc::node_of(v.as_ptr().cast()), Some(n));
    }
}

#[test]
fn alloc_on_node_blocks_free_from_other_threads() {
    let n = first_node();
    let blocks: Vec<usize> = [8usize, 200, 5000, 300_000, 3 << 20]
        .iter()
        .map(|&s| {
            let p = A.alloc_on_node(Layout::from_size_align(s, 8).unwrap(), n);
            assert!(!p.is_null());
            unsafe { p.write_bytes(0x5A, s) };
            assert_eq!(domalloc::node_of(p), Some(n));
            assert!(unsafe { domalloc::raw::usable_size(p) } >= s);
            p as usize
        })
        .collect();
    std::thread::spawn(move || {
        for p in blocks {
            unsafe { domalloc::raw::free(p as *mut u8) };
        }
    })
    .join()
    .unwrap();
    assert!(A.alloc_on_node(Layout::from_size_align(64, 8).unwrap(), 999).is_null());
}

#[test]
fn interleaved_blocks_work_and_validate_their_nodes() {
    let mut v: AVec<u8, Interleaved> = AVec::new_in(Interleaved::all());
    v.resize(4 << 20, 7);
    assert!(v.iter().all(|&b| b == 7));
    let p = A.alloc_interleaved(Layout::from_size_align(1 << 20, 4096).unwrap());
    assert!(!p.is_null() && p as usize % 4096 == 0);
    unsafe { domalloc::raw::free(p) };
    let mut bad = NodeMask::empty();
    bad.insert(900);
    assert!(Interleaved::over(bad).is_none());
}

#[test]
fn current_node_is_a_memory_node() {
    let n = domalloc::current_node();
    assert!(domalloc::topology::get().has_memory(n));
    let b = Box::new(5u32);
    assert_eq!(domalloc::node_of(&*b as *const u32 as *const u8), Some(n));
    assert_eq!(domalloc::node_of(std::ptr::null()), None);
    let on_stack = 0u8;
    assert_eq!(domalloc::node_of(&on_stack), None, "foreign pointers have no node");
}
