//! Zero-size allocations through the node-aware `Allocator` handles (`allocator_api2`, what
//! `Vec::new_in` and friends call): `allocate` with a zero-size layout, then `deallocate`, 10,000
//! times, must leave the allocator's counters where they started: no small block, large or huge
//! block, or mapping may remain. (c338579: `Node` leaks one small block per round trip, its
//! `deallocate` skips the free for size 0; `Interleaved` leaks a mapping per round trip.)
//!
//! domalloc is not the global allocator here, so only these calls move its counters; the tests
//! take a lock so that they never overlap.

use std::alloc::Layout;
use std::sync::Mutex;

use allocator_api2::alloc::Allocator;
use domalloc::{Interleaved, Node};

static SERIAL: Mutex<()> = Mutex::new(());

const ROUNDS: usize = 10_000;

/// The counters that must come back: small blocks in use (all classes), large and huge blocks,
/// bytes mapped, and the process's address-space size (mappings the stats might not see).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    small_in_use: u64,
    large_blocks: u64,
    huge_blocks: u64,
    mapped_bytes: u64,
    vm_bytes: u64,
}

fn vm_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 =
        s.lines().find(|l| l.starts_with("VmSize:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn counters() -> Counters {
    // The quarantine build counts blocks waiting in this thread's quarantine as in use: free
    // them first (elsewhere this returns free memory to the OS, which only lowers the figures).
    domalloc::collect(false);
    let s = domalloc::stats();
    let nodes = &s.nodes[..s.node_count];
    Counters {
        small_in_use: s.classes.iter().map(|c| c.in_use).sum(),
        large_blocks: nodes.iter().map(|n| n.large_blocks).sum(),
        huge_blocks: nodes.iter().map(|n| n.huge_blocks).sum(),
        mapped_bytes: nodes.iter().map(|n| n.mapped_bytes).sum(),
        vm_bytes: vm_bytes(),
    }
}

/// `ROUNDS` zero-size allocate/deallocate round trips on `a` for each of a few alignments; the
/// counters after must not exceed those before.
fn round_trips<A: Allocator>(what: &str, a: &A) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let layouts = [Layout::from_size_align(0, 1).unwrap(), Layout::from_size_align(0, 64).unwrap()];
    // Warm up: the first calls may set up the allocator (and this thread's heap).
    for l in layouts.iter().chain(&[Layout::from_size_align(8, 8).unwrap()]) {
        let p = a.allocate(*l).expect("allocate");
        // SAFETY: allocated just now by `a` with layout `l`.
        unsafe { a.deallocate(p.cast(), *l) };
    }
    let before = counters();
    for l in layouts {
        for _ in 0..ROUNDS {
            let p = a.allocate(l).expect("a zero-size allocation failed");
            assert_eq!(p.len(), 0);
            assert_eq!(p.cast::<u8>().as_ptr() as usize % l.align(), 0, "misaligned zero-size block");
            // SAFETY: allocated just now by `a` with layout `l`.
            unsafe { a.deallocate(p.cast(), l) };
        }
    }
    let after = counters();
    eprintln!("{what}: before {before:?}\n{what}: after  {after:?}");
    let rounds = 2 * ROUNDS;
    assert!(
        after.small_in_use <= before.small_in_use,
        "{what}: {} small blocks still in use after {rounds} zero-size round trips ({} before)",
        after.small_in_use,
        before.small_in_use
    );
    assert!(after.large_blocks <= before.large_blocks, "{what}: large blocks leaked: {before:?} -> {after:?}");
    assert!(after.huge_blocks <= before.huge_blocks, "{what}: huge blocks leaked: {before:?} -> {after:?}");
    assert!(
        after.mapped_bytes <= before.mapped_bytes,
        "{what}: {} bytes more mapped after {rounds} zero-size round trips ({before:?} -> {after:?})",
        after.mapped_bytes - before.mapped_bytes
    );
    // The address space: generous room for the test harness itself (glibc arenas, threads);
    // a mapping per round trip is far more.
    assert!(
        after.vm_bytes <= before.vm_bytes + (128 << 20),
        "{what}: the address space grew by {} MiB over {rounds} zero-size round trips",
        (after.vm_bytes - before.vm_bytes) >> 20
    );
}

#[test]
fn zero_size_node_allocations_leave_nothing_behind() {
    let node = Node::new(domalloc::current_node()).expect("the current node has memory");
    round_trips("Node", &node);
}

#[test]
fn zero_size_interleaved_allocations_leave_nothing_behind() {
    round_trips("Interleaved::all()", &Interleaved::all());
}
