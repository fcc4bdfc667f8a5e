//! The sampling heap profiler through the Rust API, in a child process with domalloc as the
//! global allocator: `prof_start`/`prof_stop`/`prof_dump`, the file's form (header, module map,
//! `# site` lines, one collapsed-stack section per view), and its totals: the sites' allocated
//! bytes estimate what the child allocated, their live bytes what it kept (wide statistical
//! bounds, no timing). Attribution to functions needs frame pointers (this test binary has
//! none): `tests/c/prof_sites.c` and `prof_sites.rs` check it under `scripts/test-ffi.sh`.
//! On a fake two-node machine (CPU 0 on node 0, CPU 1 on node 1), blocks allocated on CPU 0
//! and freed by a thread on CPU 1 are counted as remote-freed, local frees are not. And a rule
//! that can fail: `src/thread/prof.rs` names nothing that allocates.

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

mod common;

const CASE: &str = "DOMALLOC_TEST_PROF_CASE";

/// Bytes the child allocates in blocks it frees, and in blocks it keeps.
const CHURN: usize = 64 << 20;
const KEPT: usize = 24 << 20;

fn child(path: &str) {
    assert!(domalloc::prof_start(64 << 10));
    let mut kept = Vec::new();
    let mut n = 0;
    while n < CHURN {
        let v = std::hint::black_box(vec![1u8; 1000 + (n / 1000) % 3000]);
        n += v.len();
    }
    let mut k = 0;
    while k < KEPT {
        kept.push(std::hint::black_box(vec![2u8; 8192]));
        k += 8192;
    }
    for i in 0..40 {
        drop(std::hint::black_box(vec![3u8; 200_000 + i]));
    }
    domalloc::prof_stop();
    // Not sampled any more.
    for _ in 0..10_000 {
        drop(std::hint::black_box(vec![4u8; 5000]));
    }
    assert!(domalloc::prof_dump(Some(path)));
    std::mem::forget(kept);
}

#[test]
fn profile_api_writes_a_profile_whose_totals_match() {
    let name = "profile_api_writes_a_profile_whose_totals_match";
    let path = std::env::temp_dir().join(format!("domalloc-prof-{}.prof", std::process::id()));
    if std::env::var(CASE).as_deref() == Ok(name) {
        child(std::env::var("PROF_PATH").unwrap().as_str());
        return;
    }
    let r = common::run_child(CASE, name, &[("PROF_PATH", path.to_str().unwrap())], common::CHILD_TIMEOUT);
    assert!(r.status.success() && !r.hung, "{}", r.context(name));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no profile at {}: {e}\n{}", path.display(), r.context(name)));
    let _ = std::fs::remove_file(&path);
    assert!(text.starts_with("# domalloc heap profile 1\n"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("# map 0x")), "no module map:\n{text}");
    for v in ["alloc_bytes", "live_bytes", "peak_live_bytes", "remote_freed_bytes"] {
        assert!(text.lines().any(|l| l == format!("# view {v}")), "no {v} view:\n{text}");
    }
    let (mut alloc, mut live, mut sites) = (0u64, 0u64, 0);
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# site ") else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f[0] == "samples" {
            continue;
        }
        assert_eq!(f.len(), 11, "a site line with {} fields: {l}", f.len());
        // Blocks of 1000..4000, 8192 and 200000 bytes, recorded at their usable size (a 200000-byte
        // block is a large span of 256 KiB): their mean lies between; one thread.
        let mean_size: u64 = f[8].parse().unwrap();
        assert!((1000..=262_144).contains(&mean_size), "mean size {mean_size}: {l}");
        assert_eq!(f[9], "1", "one allocating thread: {l}");
        alloc += f[1].parse::<u64>().unwrap();
        live += f[2].parse::<u64>().unwrap();
        sites += 1;
    }
    // The view sections carry the same figures as the site lines.
    let view_sum = |name: &str| -> u64 {
        text.lines()
            .skip_while(|l| *l != format!("# view {name}"))
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(view_sum("alloc_bytes"), alloc);
    assert_eq!(view_sum("live_bytes"), live);
    let total = (CHURN + KEPT + 40 * 200_000) as f64;
    assert!(sites >= 1);
    assert!(
        (alloc as f64) > 0.6 * total && (alloc as f64) < 1.5 * total,
        "allocated bytes {alloc} vs {total} allocated while sampling"
    );
    assert!(
        (live as f64) > 0.5 * KEPT as f64 && (live as f64) < 1.6 * KEPT as f64 + (4 << 20) as f64,
        "live bytes {live} vs {KEPT} kept"
    );
}

#[test]
fn the_profiler_names_nothing_that_allocates() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/thread/prof.rs")).unwrap();
    let code: String = src.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    for banned in [
        "Vec",
        "Box",
        "String",
        "format!",
        "vec!",
        "to_vec",
        "to_string",
        "to_owned",
        "std::",
        "alloc::",
        "println!",
        "eprintln!",
        "panic!",
        "unwrap()",
        "expect(",
    ] {
        assert!(!code.contains(banned), "src/thread/prof.rs names `{banned}`: the profiler runs inside malloc");
    }
}

/// A fake two-node machine: CPU 0 on node 0, CPU 1 on node 1 (`DOMALLOC_TOPOLOGY_ROOT`).
fn two_node_sysfs() -> std::path::PathBuf {
    use std::fs;
    let root = std::env::temp_dir().join(format!("domalloc-prof-sysfs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let node_dir = root.join("devices/system/node");
    fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
    fs::create_dir_all(&node_dir).unwrap();
    fs::write(root.join("devices/system/cpu/possible"), "0-1\n").unwrap();
    fs::write(node_dir.join("possible"), "0-1\n").unwrap();
    fs::write(node_dir.join("online"), "0,1\n").unwrap();
    fs::write(node_dir.join("has_memory"), "0,1\n").unwrap();
    for (n, dist) in [(0, "10 21"), (1, "21 10")] {
        let d = node_dir.join(format!("node{n}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cpulist"), format!("{n}\n")).unwrap();
        fs::write(d.join("distance"), format!("{dist}\n")).unwrap();
        fs::write(
            d.join("meminfo"),
            format!("Node {n} MemTotal:       1048576 kB\nNode {n} MemFree:        1000 kB\n"),
        )
        .unwrap();
    }
    root
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// Bytes allocated on CPU 0 (node 0) and freed by a thread on CPU 1 (node 1), and bytes
/// allocated and freed on CPU 0.
const REMOTE: usize = 48 << 20;
const LOCAL: usize = 48 << 20;

#[test]
fn frees_on_another_node_are_counted_as_remote() {
    let name = "frees_on_another_node_are_counted_as_remote";
    let path = std::env::temp_dir().join(format!("domalloc-prof-remote-{}.prof", std::process::id()));
    if std::env::var(CASE).as_deref() == Ok(name) {
        pin_to_cpu(0);
        assert!(domalloc::prof_start(64 << 10));
        let blocks: Vec<Vec<u8>> =
            (0..REMOTE / 300_000).map(|i| std::hint::black_box(vec![i as u8; 300_000])).collect();
        std::thread::spawn(move || {
            pin_to_cpu(1);
            drop(blocks);
        })
        .join()
        .unwrap();
        for i in 0..LOCAL / 300_000 {
            drop(std::hint::black_box(vec![i as u8; 300_000]));
        }
        assert!(domalloc::prof_dump(Some(std::env::var("PROF_PATH").unwrap().as_str())));
        domalloc::prof_stop(); // (else the exit dump writes DOMALLOC_PROF_FILE's default here)
        return;
    }
    if !run_on_two_nodes(name, &[("PROF_PATH", path.to_str().unwrap())]) {
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let (mut freed, mut remote) = (0f64, 0f64);
    for l in text.lines().filter_map(|l| l.strip_prefix("# site ")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f[0] != "samples" {
            freed += f[4].parse::<f64>().unwrap();
            remote += f[5].parse::<f64>().unwrap();
        }
    }
    let (want_freed, want_remote) = ((REMOTE + LOCAL) as f64, REMOTE as f64);
    assert!(freed > 0.6 * want_freed && freed < 1.5 * want_freed, "freed {freed} vs {want_freed}:\n{text}");
    assert!(
        remote > 0.6 * want_remote && remote < 1.5 * want_remote,
        "remote-freed {remote} vs {want_remote}:\n{text}"
    );
}

/// `DOMALLOC_PROF_INTERVAL=1`: a child that runs about 3 s leaves numbered profiles
/// (`DOMALLOC_PROF_FILE` plus `.0001`, `.0002`, ...), each a whole profile, their elapsed times
/// about a second apart, beside the one written at exit.
#[test]
fn periodic_dumps_write_numbered_profiles() {
    let name = "periodic_dumps_write_numbered_profiles";
    if std::env::var(CASE).as_deref() == Ok(name) {
        let t0 = std::time::Instant::now();
        let mut kept = Vec::new();
        while t0.elapsed() < std::time::Duration::from_millis(3200) {
            for _ in 0..200 {
                drop(std::hint::black_box(vec![1u8; 4000]));
            }
            if kept.len() < 2000 {
                kept.push(std::hint::black_box(vec![2u8; 8192]));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::mem::forget(kept);
        return;
    }
    let dir = std::env::temp_dir().join(format!("domalloc-prof-periodic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.prof");
    let r = common::run_child(
        CASE,
        name,
        &[
            ("DOMALLOC_PROF", "1"),
            ("DOMALLOC_PROF_SAMPLE", "64k"),
            ("DOMALLOC_PROF_INTERVAL", "1"),
            ("DOMALLOC_PROF_FILE", file.to_str().unwrap()),
        ],
        common::CHILD_TIMEOUT,
    );
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let texts: Vec<String> = names.iter().map(|n| std::fs::read_to_string(dir.join(n)).unwrap()).collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(r.status.success() && !r.hung, "{}", r.context(name));
    assert!(names.contains(&"p.prof".to_string()), "no profile at exit: {names:?}");
    let numbered: Vec<usize> = (0..names.len()).filter(|&i| names[i] != "p.prof").collect();
    assert!(
        numbered.len() >= 2,
        "3 s with DOMALLOC_PROF_INTERVAL=1: {} periodic profile(s): {names:?}",
        numbered.len()
    );
    let mut last_ms = 0;
    for (k, &i) in numbered.iter().enumerate() {
        assert_eq!(names[i], format!("p.prof.{:04}", k + 1), "numbered from 0001: {names:?}");
        let text = &texts[i];
        assert!(text.starts_with("# domalloc heap profile 1\n"), "{}: {text}", names[i]);
        assert!(text.lines().any(|l| l == "# view remote_freed_bytes"), "{}: cut short:\n{text}", names[i]);
        assert!(
            text.lines().any(|l| l.starts_with("# site ") && !l.starts_with("# site samples")),
            "{}: no call site:\n{text}",
            names[i]
        );
        let elapsed: u64 = text
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != "elapsed_ms").nth(1))
            .unwrap()
            .parse()
            .unwrap();
        assert!(elapsed >= last_ms + 500, "{}: elapsed_ms {elapsed} after {last_ms}", names[i]);
        last_ms = elapsed;
    }
}

/// The live bytes the profiler's gauge holds (folded at refills), from a profile's header.
fn folded_live_bytes(path: &str) -> i64 {
    assert!(domalloc::prof_dump(Some(path)));
    let text = std::fs::read_to_string(path).unwrap();
    let header = text.lines().nth(1).unwrap();
    header.split_whitespace().skip_while(|w| *w != "live_bytes").nth(1).unwrap().parse().unwrap()
}

/// Allocations, zeroed allocations and reallocations of small sizes with profiling on at a
/// small interval, every block freed at the end; returns how many were promoted samples (large
/// blocks in the place of small ones). Checks what the program sees: zeroed blocks read as
/// zero, a reallocated block keeps its contents.
fn small_churn(ops: usize) -> usize {
    use domalloc::raw;
    const SLOTS: usize = 1024;
    let mut slots = [(std::ptr::null_mut::<u8>(), 0usize); SLOTS];
    let (mut x, mut promoted) = (0x9e37_79b9_7f4a_7c15u64, 0);
    for _ in 0..ops {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x >> 8) as usize % SLOTS;
        let size = 16 + (x >> 24) as usize % 2000;
        let (old, old_size) = slots[i];
        // SAFETY: the blocks of `slots` are live blocks of `old_size` bytes (null: none).
        let p = unsafe {
            match x % 10 {
                0..=1 => {
                    raw::free(old);
                    let p = raw::calloc(size);
                    assert!(!p.is_null());
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0), "calloc({size}): not zero");
                    p
                }
                2 if !old.is_null() => {
                    let p = raw::realloc(old, size, 16);
                    assert!(!p.is_null());
                    let kept = old_size.min(size);
                    assert!(
                        std::slice::from_raw_parts(p, kept).iter().all(|&b| b == old_size as u8),
                        "realloc({old_size} -> {size}) lost the contents"
                    );
                    p
                }
                _ => {
                    raw::free(old);
                    raw::malloc(size)
                }
            }
        };
        assert!(!p.is_null());
        // SAFETY: a live block of at least `size` bytes.
        let usable = unsafe {
            std::ptr::write_bytes(p, size as u8, size);
            raw::usable_size(p)
        };
        assert!(usable >= size);
        promoted += (usable >= 64 << 10) as usize;
        slots[i] = (p, size);
    }
    for (p, _) in slots {
        // SAFETY: live blocks (or null), freed once.
        unsafe { raw::free(p) };
    }
    promoted
}

/// A sampled small allocation is served from a large block (promoted): the small block the
/// refill handed out goes back to its page, the large block counts in the live bytes at its
/// usable size and leaves them at that size when freed. After a thread allocated and freed
/// thousands of samples this way, and its pages were folded (`collect(true)` gives up the
/// parked heap's pages), the live bytes (the gauge, and the statistics' exact count) are where
/// they were before it started: no drift.
#[test]
fn promoted_samples_leave_the_live_bytes_where_they_were() {
    let name = "promoted_samples_leave_the_live_bytes_where_they_were";
    let path = std::env::temp_dir().join(format!("domalloc-prof-live-{}.prof", std::process::id()));
    if std::env::var(CASE).as_deref() == Ok(name) {
        let path = std::env::var("PROF_PATH").unwrap();
        // Live throughout: the gauge may not drop below it unseen (it reads 0 when negative).
        let ballast = std::hint::black_box(vec![1u8; 8 << 20]);
        domalloc::collect(true);
        let before = (folded_live_bytes(&path), domalloc::stats().live_bytes as i64);
        let promoted = std::thread::spawn(|| {
            assert!(domalloc::prof_start(8 << 10));
            let promoted = small_churn(100_000);
            domalloc::prof_stop();
            promoted
        })
        .join()
        .unwrap();
        domalloc::collect(true);
        let after = (folded_live_bytes(&path), domalloc::stats().live_bytes as i64);
        drop(ballast);
        println!("promoted {promoted}, live bytes (gauge, statistics) before {before:?}, after {after:?}");
        assert!(promoted >= 1000, "{promoted} promoted samples");
        for (what, b, a) in [("gauge", before.0, after.0), ("statistics", before.1, after.1)] {
            assert!((a - b).abs() <= 64 << 10, "live bytes ({what}) {b} before, {a} after {promoted} promoted samples");
        }
        return;
    }
    let r = common::run_child(CASE, name, &[("PROF_PATH", path.to_str().unwrap())], common::CHILD_TIMEOUT);
    let _ = std::fs::remove_file(&path);
    assert!(r.status.success() && !r.hung, "{}", r.context(name));
}

/// A promoted sample comes from the node its small block would have come from: a thread on
/// node 1 of a fake two-node machine gets blocks of node 1, promoted or not; small blocks for
/// node 0 (`alloc_on_node`) come from node 0's heap, which does not sample (they count towards
/// the thread's next sample).
#[test]
fn promoted_samples_come_from_the_node_of_the_small_block() {
    let name = "promoted_samples_come_from_the_node_of_the_small_block";
    if std::env::var(CASE).as_deref() == Ok(name) {
        use domalloc::raw;
        pin_to_cpu(1);
        assert!(domalloc::prof_start(1 << 10));
        let layout = std::alloc::Layout::from_size_align(48, 8).unwrap();
        // SAFETY: plain allocations.
        let mine: Vec<*mut u8> = (0..20_000).map(|_| unsafe { raw::malloc(48) }).collect();
        let on0: Vec<*mut u8> = (0..5_000).map(|_| domalloc::alloc_on_node(layout, 0)).collect();
        domalloc::prof_stop();
        let mut promoted = 0;
        for &p in &mine {
            assert_eq!(domalloc::node_of(p), Some(1), "a block of a thread on node 1");
            // SAFETY: a live block.
            promoted += (unsafe { raw::usable_size(p) } >= 64 << 10) as usize;
        }
        for &p in &on0 {
            assert_eq!(domalloc::node_of(p), Some(0), "a block for node 0");
            // SAFETY: a live block.
            assert!(unsafe { raw::usable_size(p) } < 64 << 10, "a block for node 0 promoted");
        }
        assert!(promoted > 0, "20000 blocks of 48 B sampled every KiB: none promoted");
        for p in mine.into_iter().chain(on0) {
            // SAFETY: live blocks, freed once.
            unsafe { raw::free(p) };
        }
        return;
    }
    run_on_two_nodes(name, &[]);
}

/// Runs case `name` in a child on a fake two-node machine with `env` besides; false (skipped)
/// on a machine with fewer than 2 CPUs.
fn run_on_two_nodes(name: &str, env: &[(&str, &str)]) -> bool {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return false;
    }
    let root = two_node_sysfs();
    let mut all = vec![("DOMALLOC_TOPOLOGY_ROOT", root.to_str().unwrap()), ("DOMALLOC_NUMA", "1")];
    all.extend_from_slice(env);
    let r = common::run_child(CASE, name, &all, common::CHILD_TIMEOUT);
    let _ = std::fs::remove_dir_all(&root);
    assert!(r.status.success() && !r.hung, "{}", r.context(name));
    true
}
