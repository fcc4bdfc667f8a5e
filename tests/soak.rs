//! Soak: domalloc as the global allocator under a long mixed load, then a check that memory
//! and statistics come back.
//!
//! For `DOMALLOC_SOAK_SECS` seconds (default 20; the load is sized for 2 cores):
//! * worker threads allocate blocks of every small size class (and sizes just above and below
//!   each class), large and huge blocks, with contents checked at free;
//! * about a third of the blocks are freed by another worker (cross-thread frees, batched);
//! * a churn thread keeps starting short-lived threads that allocate, free some blocks, hand
//!   the rest to the workers, and exit (pages of dead threads, remote frees to them);
//! * a fork thread forks while all this runs; each child allocates, starts a thread that
//!   allocates, joins it and exits 0 (the allocator's fork handlers; a hang is a failure).
//!
//! At the end, after `domalloc::collect(true)`: the resident set is back near its starting
//! size (within 32 MiB) and every size class's `in_use` is back near its starting value (within
//! 256 blocks per class, 512 in all: the harness's own channels and thread handles).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domalloc::size_class::{class_size, CLASSES};

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

const WORKERS: usize = 3;

/// The tests of this file measure process-wide statistics and RSS: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A block with a checked fill: first and last 8 bytes and a stride.
struct Blk(Box<[u8]>, u8);

impl Blk {
    fn new(size: usize, tag: u8) -> Blk {
        let mut v = vec![0u8; size].into_boxed_slice();
        let n = v.len();
        for i in Self::offsets(n) {
            v[i] = tag ^ (i as u8);
        }
        Blk(v, tag)
    }
    fn offsets(n: usize) -> impl Iterator<Item = usize> {
        (0..n.min(8)).chain((8..n).step_by(997)).chain(n.saturating_sub(8).max(8)..n)
    }
    fn check(&self) {
        let n = self.0.len();
        for i in Self::offsets(n) {
            assert_eq!(self.0[i], self.1 ^ (i as u8), "block of {n} bytes corrupt at {i}");
        }
    }
}

impl Drop for Blk {
    fn drop(&mut self) {
        self.check();
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A request size: mostly small classes (exact, one above, one below), some large and huge.
fn pick_size(r: &mut Rng) -> usize {
    match r.below(100) {
        0 => (1 << 20) + r.below(3 << 20),         // huge
        1..=4 => (128 << 10) + r.below(896 << 10), // large
        _ => {
            let s = class_size(r.below(CLASSES));
            match r.below(3) {
                0 => s,
                1 => s + 1,
                _ => (s - 1).max(1),
            }
        }
    }
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn in_use_by_class() -> Vec<u64> {
    domalloc::stats().classes.iter().map(|c| c.in_use).collect()
}

fn soak_secs() -> u64 {
    std::env::var("DOMALLOC_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20)
}

fn worker(id: usize, rx: Receiver<Vec<Blk>>, peers: Vec<Sender<Vec<Blk>>>, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x1234_5678));
    let mut live: Vec<Blk> = Vec::new();
    let mut outbox: Vec<Blk> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            n += 1;
            if live.len() < 4000 && r.below(2) == 0 {
                live.push(Blk::new(pick_size(&mut r), r.next() as u8));
            } else if !live.is_empty() {
                let b = live.swap_remove(r.below(live.len()));
                if r.below(3) == 0 {
                    outbox.push(b);
                } else {
                    drop(b);
                }
            }
        }
        if outbox.len() >= 64 {
            let to = r.below(peers.len());
            let _ = peers[to].send(std::mem::take(&mut outbox));
        }
        // Frees that other threads sent us: dropped (freed) here.
        while let Ok(v) = rx.try_recv() {
            drop(v);
        }
        // Now and then let the live set drain completely (pages become empty).
        if r.below(200) == 0 {
            live.clear();
        }
    }
    drop(live);
    drop(outbox);
    drop(peers);
    while let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
        drop(v);
    }
    ops.fetch_add(n, Ordering::Relaxed);
}

/// Short-lived threads: allocate, free some, hand the rest to the workers, exit.
fn churn(peers: Vec<Sender<Vec<Blk>>>, stop: Arc<AtomicBool>, threads: Arc<AtomicU64>) {
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let to = peers[(k as usize) % peers.len()].clone();
        std::thread::spawn(move || {
            let mut r = Rng(k.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
            let mut v: Vec<Blk> =
                (0..2000).map(|_| Blk::new(pick_size(&mut r) % (64 << 10) + 1, r.next() as u8)).collect();
            v.retain(|_| r.below(2) == 0);
            let _ = to.send(v);
        })
        .join()
        .unwrap();
        threads.fetch_add(1, Ordering::Relaxed);
    }
}

/// Forks while everything else runs; each child allocates, starts a thread, exits 0.
fn forker(stop: Arc<AtomicBool>, forks: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: the child only allocates, uses a thread and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // Child: only this thread exists. Allocate (small, large, huge), use a thread.
            let code = std::panic::catch_unwind(|| {
                let v: Vec<Blk> = (0..2000).map(|i| Blk::new(1 + (i * 37) % 5000, i as u8)).collect();
                let big = Blk::new(300 << 10, 1);
                let huge = Blk::new(3 << 20, 2);
                let t = std::thread::spawn(|| {
                    let w: Vec<Blk> = (0..2000).map(|i| Blk::new(1 + (i * 53) % 3000, i as u8)).collect();
                    w.len()
                });
                let n = t.join().unwrap();
                drop((v, big, huge));
                n
            });
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if matches!(code, Ok(2000)) { 0 } else { 3 }) };
        }
        // Parent: the child must finish (a lock held across fork would hang it).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        loop {
            // SAFETY: plain syscalls on our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: plain syscalls on our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("fork child {pid} hung for 20 s (allocator lock held across fork?)");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "fork child failed: status {status:#x}");
        forks.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn soak() {
    let _serial = serial();
    let secs = soak_secs();
    // Warm up the harness's own allocations, then take the baseline.
    drop((0..1000).map(|i| vec![0u8; i]).collect::<Vec<_>>());
    domalloc::collect(true);
    let base_rss = rss_bytes();
    let base = in_use_by_class();

    let stop = Arc::new(AtomicBool::new(false));
    let (ops, threads, forks) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..WORKERS).map(|_| channel::<Vec<Blk>>()).unzip();
    let mut handles = Vec::new();
    for (id, rx) in rxs.into_iter().enumerate() {
        let peers: Vec<_> = txs.iter().enumerate().filter(|&(j, _)| j != id).map(|(_, t)| t.clone()).collect();
        let (stop, ops) = (stop.clone(), ops.clone());
        handles.push(std::thread::spawn(move || worker(id, rx, peers, stop, ops)));
    }
    {
        let (peers, stop, threads) = (txs.clone(), stop.clone(), threads.clone());
        handles.push(std::thread::spawn(move || churn(peers, stop, threads)));
    }
    drop(txs);
    let forker_handle = {
        let (stop, forks) = (stop.clone(), forks.clone());
        std::thread::spawn(move || forker(stop, forks))
    };
    let start = Instant::now();
    let mut peak_rss = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
        peak_rss = peak_rss.max(rss_bytes());
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a soak thread panicked");
    }
    forker_handle.join().expect("the fork thread panicked");

    domalloc::collect(true);
    let end_rss = rss_bytes();
    let end = in_use_by_class();
    let (ops, threads, forks) =
        (ops.load(Ordering::Relaxed), threads.load(Ordering::Relaxed), forks.load(Ordering::Relaxed));
    let mut diffs = Vec::new();
    let mut total_diff: i64 = 0;
    for c in 0..CLASSES {
        let d = end[c] as i64 - base[c] as i64;
        total_diff += d;
        if d != 0 {
            diffs.push(format!("{}B:{:+}", class_size(c), d));
        }
    }
    eprintln!(
        "soak: {secs} s, {ops} ops, {threads} short-lived threads, {forks} forks; RSS {} MiB -> peak {} MiB -> {} MiB; \
         in_use change {total_diff:+} blocks [{}]",
        base_rss >> 20,
        peak_rss >> 20,
        end_rss >> 20,
        diffs.join(" ")
    );
    assert!(forks > 0 || secs < 1, "no fork happened");
    assert!(threads > 0, "no short-lived thread ran");
    // What the design promises: everything freed is accounted for (the harness itself keeps a
    // few blocks: channels, thread handles) and the resident set is back near its start.
    let (max_total, max_class, max_rss) = (512, 256, 32usize << 20);
    let worst_class = (0..CLASSES).map(|c| (end[c] as i64 - base[c] as i64).abs()).max().unwrap_or(0);
    assert!(
        total_diff.abs() <= max_total && worst_class <= max_class,
        "size-class in_use did not return to its starting values: {total_diff:+} blocks [{}]",
        diffs.join(" ")
    );
    assert!(
        end_rss <= base_rss + max_rss,
        "RSS did not return near its baseline: {} MiB at start, {} MiB at the end (peak {} MiB)",
        base_rss >> 20,
        end_rss >> 20,
        peak_rss >> 20
    );
}

/// A thread allocates, hands its blocks to another thread and exits; the other thread frees
/// them all. The exited thread's pages went to an arena while still in use and the frees land
/// on their remote lists: `collect` (and, periodically, the slow paths) must collect those
/// lists and give the emptied pages back, so the blocks stop counting as in use and the pages
/// stop being resident. (Found by this test; fixed in the core.)
#[test]
fn pages_of_exited_threads_emptied_remotely_are_reclaimed() {
    let _serial = serial();
    domalloc::collect(true);
    let base_rss = rss_bytes();
    let base: u64 = in_use_by_class().iter().sum();
    let blocks = std::thread::spawn(|| {
        // 3 classes x 20,000 blocks: about 60 MiB of spans.
        let mut v = Vec::new();
        for size in [200usize, 1000, 2000] {
            v.extend((0..20_000).map(|i| Blk::new(size, i as u8)));
        }
        v
    })
    .join()
    .unwrap();
    drop(blocks); // remote frees: the owner has exited
    domalloc::collect(true);
    let in_use: u64 = in_use_by_class().iter().sum();
    let rss = rss_bytes();
    assert!(
        in_use <= base + 64 && rss <= base_rss + (8 << 20),
        "after freeing everything: {} blocks still in use (baseline {base}), RSS {} MiB (baseline {} MiB)",
        in_use,
        rss >> 20,
        base_rss >> 20
    );
}

/// Forks while another thread allocates and frees huge blocks in a loop (hitting the huge-block
/// cache, whose lock is then held a good share of the time). Each child allocates and frees a
/// huge block and exits. Fails if a child hangs: a lock held by another thread at `fork` stays
/// locked forever in the child unless the fork handlers take it.
fn fork_with_busy_lock(child_size: usize, busy: fn(&AtomicBool)) -> Result<usize, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || busy(&s));
    let mut result = Ok(0);
    for k in 0..1000 {
        // SAFETY: the child only allocates and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let v = vec![1u8; child_size];
            let ok = v[child_size - 1] == 1;
            drop(v);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = 0;
        loop {
            // SAFETY: plain syscalls on our own child.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: plain syscalls on our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                result = Err(format!("fork child {k} hung (lock held across fork)"));
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if result.is_err() {
            break;
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: {status:#x}");
        result = Ok(k + 1);
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    result
}

fn busy_huge(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let v = vec![0u8; 3 << 20];
        std::hint::black_box(&v);
    }
}

/// The fork handlers must take every allocator lock, including the huge cache's
/// (`HugeCache::slots`) and the node heaps' (`Domain::node_heap`): a child forked while another
/// thread is inside the huge cache would otherwise deadlock on its first huge allocation or
/// free. (Found by this test; fixed in the core.)
#[test]
fn fork_while_huge_cache_is_busy() {
    let _serial = serial();
    if let Err(e) = fork_with_busy_lock(3 << 20, busy_huge) {
        panic!("{e}");
    }
}

/// Two threads free, slowly and in random order, blocks that one owner allocated and handed to
/// them all up front, while the owner keeps allocating the same size class: the owner's pages
/// go full, get notified by one freer, fill again, go full again and get notified by the other
/// (the FULL/NOTIFYING protocol of `page.rs`, many periods, with no synchronisation between the
/// freers and the owner after the hand-over). Contents are checked; under ThreadSanitizer
/// (`scripts/reliability.sh tsan`) this is the scenario that exposes races in the protocol.
#[test]
fn full_pages_freed_by_two_threads() {
    let _serial = serial();
    for round in 0..10 {
        full_pages_round(round);
    }
}

fn full_pages_round(round: u64) {
    const N: usize = 8192;
    let (to_owner_tx, to_owner_rx) = channel::<()>();
    let (tx1, rx1) = channel::<Vec<Blk>>();
    let (tx2, rx2) = channel::<Vec<Blk>>();
    let owner = std::thread::spawn(move || {
        let mut mine: Vec<Blk> = (0..N).map(|i| Blk::new(64, i as u8)).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, x) in mine.drain(..).enumerate() {
            if i % 2 == 0 {
                a.push(x)
            } else {
                b.push(x)
            }
        }
        tx1.send(a).unwrap();
        tx2.send(b).unwrap();
        // Keep allocating the class while the frees trickle in: pages refill and go full again.
        let mut r = Rng(77);
        let mut keep = Vec::new();
        while to_owner_rx.try_recv().is_err() {
            keep.push(Blk::new(64, r.next() as u8));
            if keep.len() % 64 == 0 {
                std::thread::yield_now();
            }
            if keep.len() > 4 * N {
                keep.truncate(N);
            }
        }
        keep.len()
    });
    let freer = |rx: Receiver<Vec<Blk>>, seed: u64| {
        std::thread::spawn(move || {
            let mut v = rx.recv().unwrap();
            let mut r = Rng(seed);
            while !v.is_empty() {
                let i = r.below(v.len());
                drop(v.swap_remove(i));
                if r.below(16) == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let (f1, f2) = (freer(rx1, 2 * round + 1), freer(rx2, 2 * round + 2));
    f1.join().unwrap();
    f2.join().unwrap();
    to_owner_tx.send(()).unwrap();
    owner.join().unwrap();
}
