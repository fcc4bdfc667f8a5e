//! `xmalloc`: asymmetric producer/consumer threads — producers only allocate, consumers only
//! free — in the shape of mimalloc-bench's `xmalloc-testN` (`xmalloc-test -w N -t 5 -s 64`,
//! Lever & Boreham's test).
//!
//! `--threads N` starts N producers *and* N consumers (xmalloc-test's `-w N`: 2N threads). A
//! producer mallocs a batch record (one block of 8 + 4096 pointers, about 32 KiB), fills it
//! with 4096 fresh objects of 64 bytes (`--object-size`; `-1` picks from xmalloc-test's 17 sizes
//! 8..2048), writes the first min(size, 128) bytes of each object, and pushes the batch on one
//! global LIFO stack under a mutex (at most 100 batches waiting; a producer blocks on a
//! condition variable while it is full). Any consumer pops any batch, frees its 4096 objects
//! and then the batch record itself. Memory only flows from producers to consumers, and the
//! batch records (large-ish blocks) make the same one-way trip.
//!
//! Differences from xmalloc-test: the work is fixed (a number of objects, not 5 seconds), and a
//! consumer reads the first word of each object (the producer's tag) before freeing it.
//!
//! Stresses: one-directional remote frees and their batching, remote frees of ~32 KiB blocks,
//! blowup when freed memory is not returned to the allocating side.

use std::sync::{Condvar, Mutex};

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "xmalloc",
    summary: "N producers malloc 64 B objects in 4096-object batches, N consumers free them (one-way)",
    help: "xmalloc: asymmetric producer/consumer threads, the shape of xmalloc-testN\n\
(`xmalloc-test -w N -t 5 -s 64`).\n\
\n\
--threads N starts N producers and N consumers (2N threads). A producer mallocs a batch record\n\
(8 + 4096 pointers, ~32 KiB), fills it with 4096 new 64-byte objects (--object-size; -1 = the\n\
17 mixed sizes 8..2048 of xmalloc-test -s -1), writes min(size,128) bytes of each and pushes\n\
the batch on one global LIFO stack under a mutex (at most 100 batches; producers wait while it\n\
is full). Any consumer pops any batch, frees its objects, then the batch record.\n\
\n\
Stresses: one-way remote frees and their batching, remote frees of ~32 KiB blocks, blowup when\n\
freed memory is not returned to the allocating side. Checks: each object's tag (first word)\n\
is verified by the consumer; produced and consumed tag sums must match.\n\
Work: 5M objects (1221 batches) at --scale 1, split over the producers.",
    run,
    knobs: &["object-size"],
};

/// Objects per batch (xmalloc-test's OBJECTS_PER_BATCH).
const PER_BATCH: usize = 4096;
/// Batches that may wait on the stack (xmalloc-test's batch_count_limit).
const LIMIT: usize = 100;
const BASE_OBJECTS: u64 = 5_000_000;
/// xmalloc-test's possible_sizes (used with `--object-size -1`).
const SIZES: [usize; 17] = [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048];

/// A batch record: a malloc'd block holding a `next` link and PER_BATCH object pointers.
#[derive(Clone, Copy)]
struct Batch(*mut usize);
// SAFETY: a batch (and the objects it lists) is owned by whoever holds the handle; it moves
// from the producer to the consumer through the mutex-protected stack.
unsafe impl Send for Batch {}

const BATCH_BYTES: usize = (1 + PER_BATCH) * std::mem::size_of::<usize>();

struct Stack {
    seed: u64,
    batches: Mutex<(Vec<Batch>, usize)>, // (waiting batches, producers still running)
    not_empty: Condvar,
    not_full: Condvar,
}

/// The tag of object `i` of batch `b` of producer `me` under `seed`: odd, never zero.
fn tag_of(seed: u64, me: u64, b: u64, i: usize) -> u64 {
    common::mix(seed ^ common::mix(me << 40 ^ b << 13 ^ i as u64)) | 1
}

/// The size of an object: fixed, or (mixed sizes) one of SIZES chosen by its tag.
fn size_of(fixed: Option<usize>, tag: u64) -> usize {
    fixed.unwrap_or(SIZES[(tag >> 59) as usize % SIZES.len()])
}

/// Writes the first min(size, 128) bytes of an object: the tag's low byte, the tag in the
/// first word.
fn fill(p: *mut u8, size: usize, tag: u64) {
    let n = size.min(128);
    // SAFETY: p points to `size` writable bytes; n <= size.
    unsafe {
        std::ptr::write_bytes(p, tag as u8, n);
        if size >= 8 {
            (p as *mut u64).write_unaligned(tag);
        }
    }
}

/// Checks what [`fill`] wrote (the first word and the last byte written).
fn filled(p: *const u8, size: usize, tag: u64) -> bool {
    let n = size.min(128);
    // SAFETY: p points to `size` readable bytes written by `fill`; n <= size.
    unsafe {
        let head = if size >= 8 { (p as *const u64).read_unaligned() == tag } else { *p == tag as u8 };
        head && (n <= 8 || *p.add(n - 1) == tag as u8)
    }
}

fn object_size(p: &Params) -> Result<Option<usize>, String> {
    match p.knobs.object_size {
        None => Ok(Some(64)),
        Some(-1) => Ok(None),
        Some(s) if s > 0 => Ok(Some(s as usize)),
        Some(s) => Err(format!("--object-size {s}: give a positive size or -1 (mixed sizes)")),
    }
}

fn produce(st: &Stack, me: usize, batches: u64, fixed: Option<usize>) -> u64 {
    let mut sum = 0u64;
    for b in 0..batches {
        let rec = common::xmalloc(BATCH_BYTES) as *mut usize;
        // SAFETY: rec has 1 + PER_BATCH words: word 0 says whose batch it is, objects follow.
        unsafe { *rec = me << 32 | b as usize };
        for i in 0..PER_BATCH {
            let tag = tag_of(st.seed, me as u64, b, i);
            let size = size_of(fixed, tag);
            let obj = common::xmalloc(size);
            fill(obj, size, tag);
            sum = sum.wrapping_add(tag ^ size as u64);
            // SAFETY: as above, 1 + i <= PER_BATCH.
            unsafe { *rec.add(1 + i) = obj as usize };
        }
        let mut g = st.batches.lock().unwrap();
        while g.0.len() >= LIMIT {
            g = st.not_full.wait(g).unwrap();
        }
        g.0.push(Batch(rec));
        drop(g);
        st.not_empty.notify_one();
    }
    st.batches.lock().unwrap().1 -= 1;
    st.not_empty.notify_all();
    sum
}

fn consume(st: &Stack, fixed: Option<usize>) -> u64 {
    let mut sum = 0u64;
    loop {
        let mut g = st.batches.lock().unwrap();
        let batch = loop {
            if let Some(b) = g.0.pop() {
                break Some(b);
            }
            if g.1 == 0 {
                break None;
            }
            g = st.not_empty.wait(g).unwrap();
        };
        drop(g);
        let Some(Batch(rec)) = batch else { return sum };
        st.not_full.notify_one();
        // SAFETY: the producer wrote word 0 and every object slot before pushing the batch.
        let id = unsafe { *rec };
        let (me, b) = ((id >> 32) as u64, (id & 0xffff_ffff) as u64);
        for i in 0..PER_BATCH {
            // SAFETY: as above.
            let obj = unsafe { *rec.add(1 + i) } as *mut u8;
            let tag = tag_of(st.seed, me, b, i);
            let size = size_of(fixed, tag);
            if !filled(obj, size, tag) {
                common::record_error(format!("xmalloc: object {obj:p} ({size} bytes) lost its contents"));
            }
            sum = sum.wrapping_add(tag ^ size as u64);
            // SAFETY: the object came from malloc and the consumer owns it now.
            unsafe { libc::free(obj.cast()) };
        }
        // SAFETY: the batch record came from malloc; all its objects are freed.
        unsafe { libc::free(rec.cast()) };
    }
}

fn run(p: &Params) -> Result<Outcome, String> {
    let fixed = object_size(p)?;
    let workers = p.threads;
    let total_batches = p.scaled(BASE_OBJECTS / PER_BATCH as u64, workers as u64);
    let st = Stack {
        seed: p.seed,
        batches: Mutex::new((Vec::with_capacity(LIMIT), workers)),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    };
    let sums = common::run_threads(2 * workers, |i| {
        // Even threads consume, odd threads produce (xmalloc-test starts a releaser, then an
        // allocator, for each worker).
        if i % 2 == 1 {
            let me = i / 2;
            (produce(&st, me, common::share(total_batches, workers, me), fixed), 0)
        } else {
            (0, consume(&st, fixed))
        }
    });
    let produced = sums.iter().fold(0u64, |a, s| a.wrapping_add(s.0));
    let consumed = sums.iter().fold(0u64, |a, s| a.wrapping_add(s.1));
    if produced != consumed {
        return Err(format!("xmalloc: consumed checksum {consumed:#x} != produced {produced:#x}"));
    }
    let objects = total_batches * PER_BATCH as u64;
    Ok(Outcome {
        ops: 2 * (objects + total_batches),
        checksum: consumed,
        extra: format!(
            "producers={workers} consumers={workers} batches={total_batches} object_size={}",
            fixed.map_or("mixed".to_string(), |s| s.to_string())
        ),
    })
}
