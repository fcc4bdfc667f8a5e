//! Loom checks of domalloc's page remote-free protocol, on the allocator's own `src/remote.rs`
//! (see `src/lib.rs`): one owner and two remote freers.
//!
//! Properties, in every interleaving loom explores (and with loom's weak-memory model):
//! * no block is lost or duplicated (each freed block is collected exactly once);
//! * a page is pushed onto the owner's `unfull` stack only when it is not on it already (the
//!   notifier asserts it; the owner's drain asserts the stack has no cycle);
//! * no lost wake-up: a page still FULL when every freer is done has no blocks waiting;
//! * a notifier always finds the page owned, and the owner never has a notification after it
//!   abandoned the page (`clear_full` + discard + disown);
//! * no data race on the plain fields (`next_unfull`, block links): loom's cells check that
//!   every write happens after every earlier access, and every read after the write it sees.
//!
//! Run: `scripts/reliability.sh loom`, or `cd loom-model && cargo test --release -- --nocapture`
//! (two preemptions unless LOOM_MAX_PREEMPTIONS says otherwise; about 1,500-2,000 executions
//! per model, well under a second). A failure prints loom's report and the events of the failing
//! execution; `TRACE_ALL=1` prints the events of every execution.
//!
//! Each of these weakenings of `src/remote.rs` makes at least one model fail (tried by hand):
//! the chain-publishing CAS of `push` AcqRel -> Release (`full_periods`, `batch`: concurrent
//! writes of `next_unfull`) or -> Relaxed (all three: a block link read concurrently with its
//! write); `take`'s CAS Acquire -> Relaxed; `unfull_push`'s CAS Release -> Relaxed; the return
//! to NORMAL Release -> Relaxed and `clear_full`'s first load Acquire -> Relaxed (`abandon`: a
//! notification survives the owner's abandonment). The last one was the allocator's own code
//! until these models ran on it: the hand-written copy they replaced had the fix, the source
//! did not.

use std::sync::Arc;

use domalloc_loom_model::{assert_each_once, take_trace, trace, Owner, Shared, FULL};
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    // Two preemptions: under two thousand executions per test, well under a second, and every
    // weakened ordering above found. Three did not finish one test in a minute (the hand-written
    // model: not in 30 minutes); unbounded neither.
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    if b.max_branches < 100_000 {
        b.max_branches = 100_000;
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            eprintln!("-- events of the failing execution:\n{}\n--", take_trace());
            default(info)
        }));
    });
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    let t0 = std::time::Instant::now();
    b.check(move || {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        take_trace();
        f();
        if std::env::var_os("TRACE_ALL").is_some() {
            eprintln!("=== execution\n{}", take_trace());
        }
    });
    eprintln!(
        "loom explored {} executions in {:.1?}",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed()
    );
}

/// The owner's side while the freers run, in a fixed number of steps (spinning owners make
/// loom's search explode): take notifications, collect, and when the page is still short of
/// blocks retire it again (a second FULL period), then take notifications once more.
fn owner_steps(o: &mut Owner<'_>, n: usize) {
    for _ in 0..2 {
        trace("owner: step");
        o.drain_unfull();
        if !o.in_full {
            o.collect();
            if o.got.len() < n {
                o.retire();
            }
        }
    }
}

/// After the freers are done: a page still FULL must have a notification waiting (no lost
/// wake-up), and then every block comes back exactly once.
fn owner_finish(o: &mut Owner<'_>, n: usize) {
    o.drain_unfull();
    if !o.in_full {
        o.collect();
    }
    if o.in_full {
        // Still full after every freer finished: then nothing may be waiting in `xfree`.
        assert!(
            !o.s.xfree_state().1,
            "blocks wait on a FULL page whose owner was never notified (lost wake-up)"
        );
    }
    assert_each_once(&o.got, n);
}

/// The page as `usable_or_retire` leaves it when the owner's free list ran dry: FULL.
fn full_page(n: usize) -> Arc<Shared> {
    let s = Arc::new(Shared::new(n));
    assert!(Owner::new(&s).retire(), "a fresh page must be markable full");
    s
}

/// Two freers each free one block while the page is full; the owner handles notifications,
/// collects, and marks the page full again while it is short of blocks (a second FULL period).
#[test]
fn full_periods() {
    model(move || {
        let s = full_page(2);
        let freers: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|b| {
                let s = s.clone();
                thread::spawn(move || s.push_remote(b, b))
            })
            .collect();
        let mut o = Owner::new(&s);
        o.in_full = true;
        owner_steps(&mut o, 2);
        for f in freers {
            f.join().unwrap();
        }
        owner_finish(&mut o, 2);
        assert!(o.handled <= 2);
    });
}

/// The owner marked the page full and then abandons it (thread exit or migration) while the
/// freers free: nothing is lost, and no notification is left for the heap afterwards.
#[test]
fn abandon() {
    model(move || {
        let s = full_page(2);
        let freers: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|b| {
                let s = s.clone();
                thread::spawn(move || s.push_remote(b, b))
            })
            .collect();
        let mut o = Owner::new(&s);
        o.in_full = true;
        // Maybe handle one notification first, as an owner that allocates a little more would.
        o.drain_unfull();
        o.abandon();
        let mut got = o.got.clone();
        drop(o);
        for f in freers {
            f.join().unwrap();
        }
        assert!(
            s.unfull_is_empty(),
            "a notification reached the heap after it abandoned the page:\n{}",
            take_trace()
        );
        assert!(s.owner_is_null());
        assert_ne!(s.xfree_state().0, FULL);
        // Whoever adopts the page next collects the rest.
        got.extend(s.collect_remote());
        assert_each_once(&got, 2);
    });
}

/// A batch: freer A pushes a chain of two blocks with one CAS, freer B one block.
#[test]
fn batch() {
    model(move || {
        let s = full_page(3);
        let a = {
            let s = s.clone();
            thread::spawn(move || {
                s.link(1, 2);
                s.push_remote(1, 2)
            })
        };
        let b = {
            let s = s.clone();
            thread::spawn(move || s.push_remote(3, 3))
        };
        let mut o = Owner::new(&s);
        o.in_full = true;
        owner_steps(&mut o, 3);
        a.join().unwrap();
        b.join().unwrap();
        owner_finish(&mut o, 3);
        assert!(!s.owner_is_null());
    });
}
