//! Fuzz target: the input is a program of allocator operations, run against `domalloc::DomAlloc`
//! (through `GlobalAlloc` calls; the fuzzer's own global allocator stays the system one) and
//! checked against a shadow model.
//!
//! Input format: byte 0 picks the number of threads (1-3; thread 0 is the fuzzer's own thread,
//! whose heap lives across inputs; the others are spawned per input). Then operations, each an
//! opcode byte and its argument bytes (missing bytes read as 0):
//!
//! | op (byte % 8) | arguments              | what                                             |
//! |---------------|------------------------|--------------------------------------------------|
//! | 0             | thread, size(3), align | `alloc`                                          |
//! | 1             | thread, size(3), align | `alloc_zeroed` (checks the zeroes)               |
//! | 2             | thread, slot           | `dealloc` (any thread: cross-thread frees)       |
//! | 3             | thread, slot, size(3)  | `realloc`                                        |
//! | 4             | -                      | check every live block                           |
//! | 5             | thread                 | end the thread and start a new one (thread exit) |
//! | 6             | force                  | `domalloc::collect`                              |
//! | 7             | -                      | the next op runs with every OS mapping failing   |
//!
//! Sizes span tiny, every small class (and its neighbours), large (<= 1 MiB) and huge (up to
//! 4 MiB); alignments go up to 1 MiB. Operations run one at a time (the main thread hands each
//! to its thread and waits), so a failing input replays exactly.
//!
//! Checked: non-null (unless mappings are failing), alignment, `usable_size >= size`, usable
//! ranges of live blocks never overlap, contents (a per-block fill pattern, also written into
//! the usable tail) survive until free and across realloc, zeroed memory reads zero, a failed
//! realloc leaves the block intact, `node_of` knows every block.

#![no_main]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use domalloc::size_class::{class_size, CLASSES};
use domalloc::DomAlloc;
use libfuzzer_sys::fuzz_target;

static A: DomAlloc = DomAlloc::new();

/// Live bytes the model allows at once (allocations past it are skipped).
const BUDGET: usize = 96 << 20;
/// Blocks up to this size are filled and checked completely; bigger ones on a stride.
const FULL_CHECK: usize = 64 << 10;
const STRIDE: usize = 16381;

type Job = Box<dyn FnOnce() -> usize + Send>;

/// A thread that runs allocator calls for the model, one at a time.
struct Worker {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<usize>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn() -> Worker {
        let (jtx, jrx) = sync_channel::<Job>(0);
        let (dtx, drx) = sync_channel::<usize>(0);
        let handle = std::thread::spawn(move || {
            while let Ok(job) = jrx.recv() {
                if dtx.send(job()).is_err() {
                    break;
                }
            }
        });
        Worker { jobs: Some(jtx), done: drx, handle: Some(handle) }
    }

    fn run(&self, job: Job) -> usize {
        self.jobs.as_ref().unwrap().send(job).unwrap();
        self.done.recv().unwrap()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

/// Runs `f` on thread `t` (0 = this thread) and returns its result.
fn on(workers: &[Worker], t: usize, f: impl FnOnce() -> usize + Send + 'static) -> usize {
    if t == 0 {
        f()
    } else {
        workers[t - 1].run(Box::new(f))
    }
}

struct Live {
    ptr: usize,
    size: usize,
    align: usize,
    usable: usize,
    tag: u8,
}

fn pattern(tag: u8, i: usize) -> u8 {
    tag.wrapping_mul(151).wrapping_add((i % 253) as u8).wrapping_add((i >> 16) as u8)
}

/// Offsets of `[0, n)` that fill/check touch.
fn offsets(n: usize) -> impl Iterator<Item = usize> {
    let (full, head, stride, tail) = if n <= FULL_CHECK {
        (0..n, 0..0, (0..0).step_by(1), 0..0)
    } else {
        (0..0, 0..64, (64..n).step_by(STRIDE), n - 64..n)
    };
    full.chain(head).chain(stride).chain(tail)
}

unsafe fn fill(b: &Live) {
    let p = b.ptr as *mut u8;
    for i in offsets(b.size) {
        *p.add(i) = pattern(b.tag, i);
    }
    // The usable tail belongs to the block too: its first and last bytes.
    for i in [b.size, b.usable - 1] {
        if i >= b.size && i < b.usable {
            *p.add(i) = pattern(b.tag, i);
        }
    }
}

unsafe fn check(b: &Live, upto: usize, what: &str) {
    let p = b.ptr as *const u8;
    let n = b.size.min(upto);
    for i in offsets(b.size).filter(|&i| i < n) {
        let v = *p.add(i);
        if v != pattern(b.tag, i) {
            panic!(
                "{what}: block {:#x} (size {}, align {}, usable {}) byte {i} is {v:#04x}, expected {:#04x}",
                b.ptr,
                b.size,
                b.align,
                b.usable,
                pattern(b.tag, i)
            );
        }
    }
    if upto >= b.usable {
        for i in [b.size, b.usable - 1] {
            if i >= b.size && i < b.usable && *p.add(i) != pattern(b.tag, i) {
                panic!("{what}: block {:#x} usable tail byte {i} corrupt", b.ptr);
            }
        }
    }
}

unsafe fn check_zero(p: *const u8, size: usize) {
    for i in offsets(size) {
        assert_eq!(*p.add(i), 0, "alloc_zeroed: byte {i} of {p:p} (size {size}) is not zero");
    }
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn more(&self) -> bool {
        self.pos < self.data.len()
    }
    fn u16(&mut self) -> usize {
        (self.byte() as usize) | ((self.byte() as usize) << 8)
    }
    fn size(&mut self) -> usize {
        let kind = self.byte() % 8;
        let v = self.u16();
        match kind {
            0..=2 => 1 + v % 256,
            3 => 1 + v % 1024,
            4 => 1 + v * 2,                // up to 128 KiB
            5 => (128 << 10) + 1 + v * 14, // large, up to ~1 MiB
            6 => (1 << 20) + 1 + v * 48,   // huge, up to ~4 MiB
            _ => {
                // A class size or a neighbour of it.
                let s = class_size(v % CLASSES);
                match (v >> 8) % 3 {
                    0 => s,
                    1 => s + 1,
                    _ => s - 1,
                }
                .max(1)
            }
        }
    }
    fn align(&mut self) -> usize {
        let b = self.byte();
        if b < 160 {
            1 << (b % 4)
        } else {
            1 << (b % 21)
        }
    }
}

struct Model {
    live: Vec<Live>,
    /// Usable ranges of live blocks: start -> end.
    ranges: BTreeMap<usize, usize>,
    bytes: usize,
    next_tag: u8,
}

impl Model {
    fn insert_range(&mut self, b: &Live) {
        let (s, e) = (b.ptr, b.ptr + b.usable);
        if let Some((&ps, &pe)) = self.ranges.range(..e).next_back() {
            assert!(pe <= s || ps >= e, "block {s:#x}..{e:#x} overlaps live block {ps:#x}..{pe:#x}");
        }
        self.ranges.insert(s, e);
    }

    /// Validates a fresh block and records it.
    unsafe fn admit(&mut self, p: *mut u8, size: usize, align: usize, zeroed: bool) {
        assert_eq!(p as usize % align, 0, "{p:p} not aligned to {align} (size {size})");
        let usable = domalloc::raw::usable_size(p);
        assert!(usable >= size, "usable_size {usable} < size {size} for {p:p}");
        assert!(domalloc::node_of(p).is_some(), "node_of({p:p}) is None");
        if zeroed {
            check_zero(p, size);
        }
        self.next_tag = self.next_tag.wrapping_add(1);
        let b = Live { ptr: p as usize, size, align, usable, tag: self.next_tag };
        self.insert_range(&b);
        fill(&b);
        self.bytes += size;
        self.live.push(b);
    }
}

fn run(data: &[u8]) {
    let mut input = Input { data, pos: 0 };
    let threads = 1 + input.byte() as usize % 3;
    let mut workers: Vec<Worker> = (1..threads).map(|_| Worker::spawn()).collect();
    let mut m = Model { live: Vec::new(), ranges: BTreeMap::new(), bytes: 0, next_tag: 0 };
    let mut failing = false;
    let mut ops = 0;
    while input.more() && ops < 512 {
        ops += 1;
        let op = input.byte() % 8;
        let was_failing = failing;
        failing = false;
        // Every mapping fails during this op (if the previous op asked for it), or none.
        domalloc::set_fault_injection(was_failing as u64, 0);
        match op {
            0 | 1 => {
                let t = input.byte() as usize % threads;
                let size = input.size();
                let align = input.align();
                if m.bytes + size > BUDGET {
                    continue;
                }
                let zeroed = op == 1;
                let layout = Layout::from_size_align(size, align).unwrap();
                let p = on(&workers, t, move || unsafe {
                    (if zeroed { A.alloc_zeroed(layout) } else { A.alloc(layout) }) as usize
                }) as *mut u8;
                if p.is_null() {
                    assert!(was_failing, "alloc({size}, {align}) returned null");
                } else {
                    unsafe { m.admit(p, size, align, zeroed) };
                }
            }
            2 => {
                let t = input.byte() as usize % threads;
                let slot = input.byte() as usize;
                if m.live.is_empty() {
                    continue;
                }
                let b = m.live.swap_remove(slot % m.live.len());
                unsafe { check(&b, usize::MAX, "before free") };
                m.ranges.remove(&b.ptr);
                m.bytes -= b.size;
                let (p, layout) = (b.ptr, Layout::from_size_align(b.size, b.align).unwrap());
                on(&workers, t, move || unsafe {
                    A.dealloc(p as *mut u8, layout);
                    0
                });
            }
            3 => {
                let t = input.byte() as usize % threads;
                let slot = input.byte() as usize;
                let new_size = input.size();
                if m.live.is_empty() {
                    continue;
                }
                let i = slot % m.live.len();
                if m.bytes + new_size > BUDGET + m.live[i].size {
                    continue;
                }
                let b = m.live.swap_remove(i);
                unsafe { check(&b, usize::MAX, "before realloc") };
                m.ranges.remove(&b.ptr);
                let (p, layout) = (b.ptr, Layout::from_size_align(b.size, b.align).unwrap());
                let q =
                    on(&workers, t, move || unsafe { A.realloc(p as *mut u8, layout, new_size) as usize }) as *mut u8;
                if q.is_null() {
                    assert!(was_failing, "realloc({:#x}, {} -> {new_size}) returned null", b.ptr, b.size);
                    // The block must be untouched and still ours.
                    unsafe { check(&b, usize::MAX, "after a failed realloc") };
                    m.insert_range(&b);
                    m.live.push(b);
                } else {
                    // Contents up to the smaller size moved along.
                    let moved = Live { ptr: q as usize, ..b };
                    unsafe { check(&moved, new_size, "after realloc") };
                    m.bytes -= moved.size;
                    unsafe { m.admit(q, new_size, moved.align, false) };
                }
            }
            4 => {
                for b in &m.live {
                    unsafe { check(b, usize::MAX, "check-all") };
                }
            }
            5 => {
                let t = input.byte() as usize % threads;
                if t > 0 {
                    // Thread exit with blocks still live: its pages go to the arenas.
                    workers[t - 1] = Worker::spawn();
                }
            }
            6 => {
                let force = input.byte() & 1 != 0;
                domalloc::collect(force);
            }
            _ => failing = true,
        }
    }
    domalloc::set_fault_injection(0, 0);
    // Free everything, spread over the threads.
    for (k, b) in m.live.drain(..).enumerate() {
        unsafe { check(&b, usize::MAX, "at the end") };
        let (p, layout) = (b.ptr, Layout::from_size_align(b.size, b.align).unwrap());
        on(&workers, k % threads, move || unsafe {
            A.dealloc(p as *mut u8, layout);
            0
        });
    }
    workers.clear();
}

fuzz_target!(|data: &[u8]| run(data));
