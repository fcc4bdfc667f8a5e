//! `xmalloc`: asymmetric producer/consumer threads — producers only allocate, consumers only
//! free.
//!
//! Modelled on Lever & Boreham's xmalloc-test. Half the threads (at least one) allocate small
//! blocks and send them in batches of 128 over bounded queues; the other half verify and free
//! them. Memory flows one way, so an allocator that returns freed blocks only to the freeing
//! thread's cache grows without bound, and one whose remote free path serialises on a single
//! atomic or lock collapses.
//!
//! Stresses: one-directional remote frees, batching of remote frees, memory blowup.
//! Checks: every block is stamped by its producer and verified by its consumer.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use rand::Rng;

use super::Workload;
use crate::common::{self, Blk, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "xmalloc",
    summary: "producer threads malloc, consumer threads free (one-way remote frees)",
    help: "xmalloc: asymmetric producer/consumer threads (producers allocate, consumers free).\n\
\n\
threads/2 producers (at least 1) allocate 8..512-byte blocks (mostly <= 64 bytes), stamp them\n\
and send them in batches of 128 over bounded queues to threads/2 consumers (at least 1),\n\
which verify and free them. Memory only flows from producers to consumers.\n\
\n\
Stresses: one-way remote frees and their batching, blowup when freed memory is not returned\n\
to the allocating side. Checks: stamps verified by the consumer before free.\n\
Work: 16M blocks at --scale 1, split over the producers.",
    run,
};

const BATCH: usize = 128;
const BASE_OBJECTS: u64 = 16_000_000;

enum Msg {
    Batch(Vec<Blk>),
    Done,
}

fn run(p: &Params) -> Result<Outcome, String> {
    let producers = (p.threads / 2).max(1);
    let consumers = p.threads.saturating_sub(producers).max(1);
    let total = p.scaled(BASE_OBJECTS, (producers * BATCH) as u64);

    let mut senders: Vec<SyncSender<Msg>> = Vec::new();
    let mut receivers: Vec<Mutex<Receiver<Msg>>> = Vec::new();
    for _ in 0..consumers {
        let (s, r) = sync_channel(16);
        senders.push(s);
        receivers.push(Mutex::new(r));
    }

    let sums = common::run_threads(producers + consumers, |i| {
        if i < producers {
            let mut rng = common::rng(p.seed, i as u64);
            let n = common::share(total, producers, i);
            let mut batch = Vec::with_capacity(BATCH);
            let mut next = i; // which consumer gets the next batch
            let mut sum = 0u64;
            for _ in 0..n {
                let size = if rng.gen_ratio(3, 4) { rng.gen_range(8..=64) } else { rng.gen_range(65..=512) };
                let tag: u64 = rng.gen();
                sum = sum.wrapping_add(tag ^ size as u64);
                batch.push(Blk::new(size, tag));
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    senders[next % consumers].send(Msg::Batch(full)).expect("consumer gone");
                    next += 1;
                }
            }
            if !batch.is_empty() {
                senders[next % consumers].send(Msg::Batch(batch)).expect("consumer gone");
            }
            for s in &senders {
                s.send(Msg::Done).expect("consumer gone");
            }
            (sum, 0u64)
        } else {
            let rx = receivers[i - producers].lock().unwrap();
            let mut done = 0;
            let mut sum = 0u64;
            while done < producers {
                match rx.recv().expect("producer gone") {
                    Msg::Batch(v) => {
                        for b in v {
                            // SAFETY: the producer gave up the block when it sent it.
                            sum = sum.wrapping_add(unsafe { b.check_free("xmalloc") });
                        }
                    }
                    Msg::Done => done += 1,
                }
            }
            (0, sum)
        }
    });
    let produced = sums.iter().fold(0u64, |a, s| a.wrapping_add(s.0));
    let consumed = sums.iter().fold(0u64, |a, s| a.wrapping_add(s.1));
    if produced != consumed {
        return Err(format!("xmalloc: consumed checksum {consumed:#x} != produced {produced:#x}"));
    }
    Ok(Outcome {
        ops: 2 * total,
        checksum: consumed,
        extra: format!("producers={producers} consumers={consumers}"),
    })
}
