//! Randomised alloc/free/realloc sequences over every size range and alignments up to 1 GiB,
//! verifying contents, alignment, usable size and non-overlap; on one thread and across threads
//! (producer -> consumer frees).

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks the test itself
// allocated and still owns, with the layout it allocated them with.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;

use domalloc::DomAlloc;
use rand::{rngs::StdRng, Rng, SeedableRng};

#[global_allocator]
static A: DomAlloc = DomAlloc::new();

struct Obj {
    p: *mut u8,
    layout: Layout,
    tag: u8,
}
unsafe impl Send for Obj {}

fn pattern(tag: u8, i: usize) -> u8 {
    tag.wrapping_mul(31).wrapping_add((i % 251) as u8)
}

fn fill(o: &Obj) {
    // Write the whole block for small ones; ends and a stride for big ones (keeps it fast).
    let n = o.layout.size();
    unsafe {
        if n <= 64 << 10 {
            for i in 0..n {
                *o.p.add(i) = pattern(o.tag, i);
            }
        } else {
            for i in (0..n).step_by(4093).chain(n.saturating_sub(64)..n) {
                *o.p.add(i) = pattern(o.tag, i);
            }
        }
    }
}

fn check(o: &Obj, upto: usize) {
    check_as(o, upto, o.layout.size())
}

/// Checks the bytes `fill` wrote when the block had size `filled_size`.
fn check_as(o: &Obj, upto: usize, filled_size: usize) {
    let n = o.layout.size().min(upto);
    unsafe {
        if filled_size <= 64 << 10 {
            for i in 0..n {
                assert_eq!(*o.p.add(i), pattern(o.tag, i), "corrupt byte {i} of {:?}", o.layout);
            }
        } else {
            for i in (0..n).step_by(4093) {
                assert_eq!(*o.p.add(i), pattern(o.tag, i), "corrupt byte {i} of {:?}", o.layout);
            }
        }
    }
}

fn random_layout(rng: &mut StdRng) -> Layout {
    let size = match rng.gen_range(0..100) {
        0..=59 => rng.gen_range(1..=256),
        60..=84 => rng.gen_range(257..=16 << 10),
        85..=94 => rng.gen_range(16 << 10..=1 << 20),
        95..=98 => rng.gen_range(1 << 20..=8 << 20),
        _ => rng.gen_range(8 << 20..=32 << 20),
    };
    let align = match rng.gen_range(0..100) {
        0..=79 => 8,
        80..=89 => 16,
        90..=96 => 1 << rng.gen_range(5..=16),
        _ => 1 << rng.gen_range(17..=24),
    };
    Layout::from_size_align(size, align).unwrap()
}

fn alloc_obj(rng: &mut StdRng, tag: u8) -> Obj {
    let layout = random_layout(rng);
    let zeroed = rng.gen_bool(0.1);
    let p = unsafe {
        if zeroed {
            A.alloc_zeroed(layout)
        } else {
            A.alloc(layout)
        }
    };
    assert!(!p.is_null(), "alloc failed for {layout:?}");
    assert_eq!(p as usize % layout.align(), 0, "misaligned {layout:?}");
    if zeroed {
        let n = layout.size();
        for i in (0..n).step_by(if n > 65536 { 4093 } else { 1 }) {
            assert_eq!(unsafe { *p.add(i) }, 0, "alloc_zeroed not zero at {i} {layout:?}");
        }
    }
    let o = Obj { p, layout, tag };
    fill(&o);
    o
}

fn no_overlap(live: &[Obj]) {
    let mut v: Vec<(usize, usize)> = live.iter().map(|o| (o.p as usize, o.p as usize + o.layout.size())).collect();
    v.sort();
    for w in v.windows(2) {
        assert!(w[0].1 <= w[1].0, "blocks overlap: {:x?} {:x?}", w[0], w[1]);
    }
}

#[test]
fn single_thread_random_sequences() {
    let mut rng = StdRng::seed_from_u64(0xD0A1);
    let mut live: Vec<Obj> = Vec::new();
    for step in 0..20_000u32 {
        match rng.gen_range(0..10) {
            0..=4 => live.push(alloc_obj(&mut rng, step as u8)),
            5..=7 if !live.is_empty() => {
                let o = live.swap_remove(rng.gen_range(0..live.len()));
                check(&o, usize::MAX);
                unsafe { A.dealloc(o.p, o.layout) };
            }
            8 if !live.is_empty() => {
                let i = rng.gen_range(0..live.len());
                let old = live[i].layout;
                let new_size = if rng.gen_bool(0.5) { old.size() * 2 + 1 } else { (old.size() / 3).max(1) };
                let q = unsafe { A.realloc(live[i].p, old, new_size) };
                assert!(!q.is_null());
                assert_eq!(q as usize % old.align(), 0, "realloc lost alignment");
                let o = Obj { p: q, layout: Layout::from_size_align(new_size, old.align()).unwrap(), tag: live[i].tag };
                check_as(&o, old.size(), old.size());
                fill(&o);
                live[i] = o;
            }
            _ => {}
        }
        if step % 2000 == 0 {
            no_overlap(&live);
        }
        // Keep the working set bounded.
        while live.iter().map(|o| o.layout.size()).sum::<usize>() > 256 << 20 {
            let o = live.swap_remove(0);
            unsafe { A.dealloc(o.p, o.layout) };
        }
    }
    no_overlap(&live);
    for o in live {
        check(&o, usize::MAX);
        unsafe { A.dealloc(o.p, o.layout) };
    }
}

#[test]
fn alignments_up_to_one_gib() {
    let mut align = 1usize;
    while align <= 1 << 30 {
        for size in [1usize, 24, align.min(1 << 20), 3 << 20] {
            let l = Layout::from_size_align(size, align).unwrap();
            let p = unsafe { A.alloc(l) };
            assert!(!p.is_null(), "{l:?}");
            assert_eq!(p as usize % align, 0, "{l:?}");
            unsafe {
                p.write_bytes(0xAB, size);
                assert!(domalloc::raw::usable_size(p) >= size);
                A.dealloc(p, l);
            }
        }
        align <<= 1;
    }
}

#[test]
fn producer_consumer_random_cross_thread() {
    let (tx, rx) = mpsc::sync_channel::<Vec<Obj>>(16);
    let producers: Vec<_> = (0..3u64)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(t + 7);
                for round in 0..200 {
                    let batch: Vec<Obj> = (0..50)
                        .map(|i| {
                            let mut o = alloc_obj(&mut rng, (round * 50 + i) as u8);
                            if o.layout.size() > (1 << 20) {
                                // keep cross-thread traffic mostly small/medium
                                unsafe { A.dealloc(o.p, o.layout) };
                                o = Obj {
                                    p: unsafe { A.alloc(Layout::from_size_align(100, 8).unwrap()) },
                                    layout: Layout::from_size_align(100, 8).unwrap(),
                                    tag: 1,
                                };
                                fill(&o);
                            }
                            o
                        })
                        .collect();
                    tx.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumers = std::thread::spawn(move || {
        let mut n = 0;
        for batch in rx {
            for o in batch {
                check(&o, usize::MAX);
                unsafe { A.dealloc(o.p, o.layout) };
                n += 1;
            }
        }
        n
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumers.join().unwrap(), 3 * 200 * 50);
}

#[test]
fn impossible_requests_return_null() {
    unsafe {
        for (size, align) in [
            (isize::MAX as usize - 7, 8),
            (isize::MAX as usize - 8191, 4096),
            (1 << 46, 8),
            (1 << 62, 1 << 30),
            (1 << 40, 1 << 40),
        ] {
            let l = Layout::from_size_align(size, align).unwrap();
            assert!(A.alloc(l).is_null(), "{l:?}");
            assert!(A.alloc_zeroed(l).is_null(), "{l:?}");
        }
        let l = Layout::from_size_align(64, 8).unwrap();
        let p = A.alloc(l);
        assert!(A.realloc(p, l, isize::MAX as usize - 100).is_null());
        *p = 7; // still ours
        A.dealloc(p, l);
        // The allocator still works.
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
