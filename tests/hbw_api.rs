//! The hbwmalloc(3) interface (`domalloc::hbw`, exported by libdomalloc.so as `hbw_*`) and the
//! fast-tier allocator, on fake topologies (`DOMALLOC_TOPOLOGY_ROOT` + `DOMALLOC_NUMA=1`): which
//! node each block is for, per calling thread, and memkind's C semantics. Pages cannot be on
//! the fake nodes here; numa-tests/ (`hbw` on the `hmat2s` guests) checks where they really go.
//! Each scenario runs in a child process so the allocator starts with its fake topology.

// SAFETY (all unsafe blocks in this file): hbw calls on blocks the test itself allocated and
// still owns; a stats call into a buffer of the length given.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::process::Command;

use domalloc::hbw;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

fn pin(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
    std::thread::yield_now();
    assert_eq!(unsafe { libc::sched_getcpu() } as usize, cpu);
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

const SIZES: [usize; 7] = [16, 200, 3000, 40_000, 300_000, 3 << 20, 9 << 20];

/// Two CPU nodes (CPU 0 on node 0, CPU 1 on node 1) and two CPU-less nodes: 2 near node 0 and 3
/// near node 1, faster than both by HMAT when `hmat`.
fn fake_tree(name: &str, hmat: bool) -> PathBuf {
    let root = std::env::temp_dir().join(format!("domalloc-hbw-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let n = root.join("devices/system/node");
    std::fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
    std::fs::write(root.join("devices/system/cpu/possible"), "0-1\n").unwrap();
    let nodes = [(0, "0", "10 21 12 23"), (1, "1", "21 10 23 12"), (2, "", "12 23 10 21"), (3, "", "23 12 21 10")];
    for (id, cpus, dist) in nodes {
        let d = n.join(format!("node{id}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpulist"), format!("{cpus}\n")).unwrap();
        std::fs::write(d.join("distance"), format!("{dist}\n")).unwrap();
        std::fs::write(d.join("meminfo"), format!("Node {id} MemTotal: 1048576 kB\n")).unwrap();
    }
    for f in ["possible", "online", "has_memory"] {
        std::fs::write(n.join(f), "0-3\n").unwrap();
    }
    if hmat {
        for (t, init, bw, lat) in [(0, 0, 20480, 100), (1, 1, 20480, 100), (2, 0, 81920, 110), (3, 1, 81920, 110)] {
            write_access(&n, t, init, bw, lat);
        }
    }
    root
}

fn write_access(n: &Path, t: usize, init: usize, bw: u32, lat: u32) {
    let d = n.join(format!("node{t}/access0/initiators"));
    std::fs::create_dir_all(d.join(format!("node{init}"))).unwrap();
    std::fs::write(d.join(format!("node{init}/cpulist")), format!("{init}\n")).unwrap();
    std::fs::write(d.join("read_bandwidth"), format!("{bw}\n")).unwrap();
    std::fs::write(d.join("read_latency"), format!("{lat}\n")).unwrap();
}

/// Every size through every allocating call, from a thread on `cpu`: all for node `want`.
fn allocations_for(cpu: usize, want: usize) -> Vec<usize> {
    pin(cpu);
    let mut kept = Vec::new();
    for size in SIZES {
        let p = hbw::malloc(size);
        assert!(!p.is_null());
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0xa5, size) };
        assert_eq!(domalloc::node_of(p.cast()), Some(want), "hbw_malloc({size}) on CPU {cpu}");
        assert!(unsafe { hbw::malloc_usable_size(p) } >= size);
        kept.push(p as usize);

        let c = hbw::calloc(size / 8 + 1, 8);
        assert_eq!(domalloc::node_of(c.cast()), Some(want), "hbw_calloc({size})");
        assert!(unsafe { std::slice::from_raw_parts(c.cast::<u8>(), size / 8 * 8 + 8) }.iter().all(|&b| b == 0));
        kept.push(c as usize);

        let mut a: *mut c_void = std::ptr::null_mut();
        assert_eq!(unsafe { hbw::posix_memalign(&mut a, 4096, size) }, 0);
        assert_eq!(a as usize % 4096, 0);
        assert_eq!(domalloc::node_of(a.cast()), Some(want), "hbw_posix_memalign({size})");
        kept.push(a as usize);
    }
    // Growth by hbw_realloc keeps the contents and the node.
    let mut r = hbw::malloc(16);
    unsafe { *r.cast::<u64>() = 0x1234_5678 };
    for size in SIZES {
        r = unsafe { hbw::realloc(r, size) };
        assert!(!r.is_null());
        assert_eq!(unsafe { *r.cast::<u64>() }, 0x1234_5678);
        assert_eq!(domalloc::node_of(r.cast()), Some(want), "hbw_realloc to {size}");
    }
    kept.push(r as usize);
    kept
}

fn scenario(name: &str) {
    assert!(domalloc::numa_enabled(), "fake topology not picked up");
    match name {
        "nearest_hbm_per_socket" => {
            assert_eq!(hbw::check_available(), 0);
            assert_eq!(hbw::get_policy(), hbw::POLICY_PREFERRED);
            assert!(hbw::malloc(0).is_null() && hbw::calloc(0, 8).is_null());
            let on0 = std::thread::spawn(|| allocations_for(0, 2)).join().unwrap();
            let on1 = std::thread::spawn(|| allocations_for(1, 3)).join().unwrap();
            // Frees from the other socket's threads (and from a thread that allocated nothing).
            std::thread::spawn(move || {
                pin(1);
                on0.iter().for_each(|&p| unsafe { hbw::free(p as *mut c_void) });
            })
            .join()
            .unwrap();
            std::thread::spawn(move || on1.iter().for_each(|&p| unsafe { hbw::free(p as *mut c_void) }))
                .join()
                .unwrap();
            // Socket 0 again: still its own HBM node, not the memory socket 1 freed.
            let again = std::thread::spawn(|| allocations_for(0, 2)).join().unwrap();
            again.iter().for_each(|&p| unsafe { hbw::free(p as *mut c_void) });
            // The policy is fixed once hbw memory was allocated.
            assert_eq!(hbw::set_policy(hbw::POLICY_BIND), 1, "EPERM");
            // The Rust fast tier.
            std::thread::spawn(|| {
                pin(1);
                assert!(domalloc::HighBandwidth::available());
                let mut v: allocator_api2::vec::Vec<u64, _> = allocator_api2::vec::Vec::new_in(domalloc::HighBandwidth);
                v.extend(0..100_000);
                assert_eq!(domalloc::node_of(v.as_ptr().cast()), Some(3));
            })
            .join()
            .unwrap();
        }
        "set_policy_rules" => {
            assert_eq!(hbw::set_policy(7), 22, "EINVAL");
            assert_eq!(hbw::set_policy(hbw::POLICY_BIND), 0);
            assert_eq!(hbw::get_policy(), hbw::POLICY_BIND);
            assert_eq!(hbw::set_policy(hbw::POLICY_PREFERRED), 1, "EPERM: only once");
            std::thread::spawn(|| allocations_for(1, 3)).join().unwrap();
            let mut p: *mut c_void = std::ptr::null_mut();
            assert_eq!(unsafe { hbw::posix_memalign(&mut p, 3, 64) }, 22, "EINVAL: not a power of two");
            assert_eq!(unsafe { hbw::posix_memalign_psize(&mut p, 64, 64, hbw::PAGESIZE_1GB) }, 22);
            assert_eq!(unsafe { hbw::posix_memalign_psize(&mut p, 64, 4 << 20, hbw::PAGESIZE_2MB) }, 0);
            assert_eq!(p as usize % (2 << 20), 0);
            assert_eq!(
                domalloc::node_of(p.cast()),
                Some(domalloc::topology::get().hbw_node(domalloc::current_node()).unwrap())
            );
            let q = p;
            assert_eq!(unsafe { hbw::verify_memory_region(std::ptr::null_mut(), 64, 0) }, 22);
            assert_eq!(unsafe { hbw::verify_memory_region(q, 64, 2) }, 22);
            unsafe { hbw::free(q) };
        }
        "no_hbm" => {
            // No HMAT: nothing is high-bandwidth. PREFERRED falls back to the thread's own node;
            // BIND refuses.
            assert_eq!(hbw::check_available(), 19, "ENODEV");
            assert!(!domalloc::HighBandwidth::available());
            std::thread::spawn(|| {
                pin(1);
                let p = hbw::malloc(1000);
                assert_eq!(domalloc::node_of(p.cast()), Some(1));
                unsafe { hbw::free(p) };
            })
            .join()
            .unwrap();
            assert_eq!(hbw::set_policy(hbw::POLICY_BIND), 1, "EPERM: hbw memory was allocated");
        }
        "no_hbm_bind" => {
            assert_eq!(hbw::set_policy(hbw::POLICY_BIND), 0);
            assert!(hbw::malloc(1000).is_null());
            assert_eq!(errno(), 12, "ENOMEM");
            let mut p: *mut c_void = std::ptr::null_mut();
            assert_eq!(unsafe { hbw::posix_memalign(&mut p, 64, 64) }, 12);
        }
        "memkind_hbw_nodes" => {
            // No HMAT, but MEMKIND_HBW_NODES=2-3: each socket gets the nearer one by SLIT.
            assert_eq!(hbw::check_available(), 0);
            std::thread::spawn(|| allocations_for(0, 2)).join().unwrap();
            std::thread::spawn(|| allocations_for(1, 3)).join().unwrap();
        }
        "tier_policy_budget" => {
            // DOMALLOC_POLICY=hbw:8M<1M: small blocks of a thread on node 1 are placed on its
            // HBM node (3) for the first 8 MiB of the process, then on node 1 itself; the
            // statistics count both. (Where the pages really go: numa-tests' `tier-policy`.)
            std::thread::spawn(|| {
                pin(1);
                let blocks: Vec<Vec<u8>> = (0..8192).map(|i| vec![i as u8; 4000]).collect();
                drop(blocks);
            })
            .join()
            .unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let n = unsafe { domalloc::c::stats_json(buf.as_mut_ptr().cast(), buf.len()) };
            let json = String::from_utf8_lossy(&buf[..n]).to_string();
            let tiers = json
                .split("\"tiers\":{")
                .nth(1)
                .and_then(|t| t.split('}').next())
                .unwrap_or_else(|| panic!("no tiers in {json}"));
            assert!(tiers.contains(&format!("\"hbw_bytes\":{}", 8 << 20)), "{tiers}");
            assert!(!tiers.contains("\"spills\":0"), "32 MiB of small blocks past an 8 MiB budget must spill: {tiers}");
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn run(name: &str, hmat: bool, env: &[(&str, &str)]) {
    if let Ok(s) = std::env::var("DOMALLOC_TEST_SCENARIO") {
        if s == name {
            scenario(name);
        }
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipping: needs 2 CPUs");
        return;
    }
    let root = fake_tree(name, hmat);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("DOMALLOC_TEST_SCENARIO", name)
        .env("DOMALLOC_TOPOLOGY_ROOT", &root)
        .env("DOMALLOC_NUMA", "1")
        .env("DOMALLOC_PURGE_THREAD", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        out.status.success(),
        "scenario {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "scenario {name} did not run");
}

#[test]
fn nearest_hbm_per_socket() {
    run("nearest_hbm_per_socket", true, &[]);
}
#[test]
fn set_policy_rules() {
    run("set_policy_rules", true, &[]);
}
#[test]
fn no_hbm() {
    run("no_hbm", false, &[]);
}
#[test]
fn no_hbm_bind() {
    run("no_hbm_bind", false, &[]);
}
#[test]
fn tier_policy_budget() {
    run("tier_policy_budget", true, &[("DOMALLOC_POLICY", "hbw:8M<1M")]);
}
#[test]
fn memkind_hbw_nodes() {
    run("memkind_hbw_nodes", false, &[("MEMKIND_HBW_NODES", "2-3")]);
}
