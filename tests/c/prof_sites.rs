//! The sampling heap profiler on a Rust program: three allocation sites of known sizes and
//! counts (`Vec`s through the system allocator, so `malloc` under LD_PRELOAD). Built by
//! `scripts/test-ffi.sh` with `rustc -O -C force-frame-pointers=yes` and run with
//! `DOMALLOC_PROF=1`; dumps the profile with `domalloc_prof_dump` (found with `dlsym`), reads it
//! back and attributes each call site to the function its innermost return address lies in (this
//! program's own function addresses). Each estimate must be within 35% of the true bytes.
//! Prints "ok ..." and exits 0 on success.

use std::hint::black_box;

#[inline(never)]
fn site_words() -> Vec<u64> {
    black_box(vec![7u64; 12]) // 96 B
}

#[inline(never)]
fn site_buffer() -> Vec<u8> {
    black_box(vec![1u8; 6000])
}

#[inline(never)]
fn site_table() -> Vec<u32> {
    black_box(vec![2u32; 100_000]) // 400 kB
}

#[inline(never)]
fn after_sites() {
    black_box(());
}

extern "C" {
    fn dlsym(handle: *mut std::ffi::c_void, name: *const std::ffi::c_char) -> *mut std::ffi::c_void;
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "prof_sites_rs.prof".into());
    // SAFETY: RTLD_DEFAULT (null on glibc) and a NUL-terminated name.
    let dump = unsafe { dlsym(std::ptr::null_mut(), c"domalloc_prof_dump".as_ptr()) };
    assert!(!dump.is_null(), "domalloc_prof_dump not found: run with libdomalloc preloaded");
    // SAFETY: the symbol is `int domalloc_prof_dump(const char *)`.
    let dump: extern "C" fn(*const std::ffi::c_char) -> i32 = unsafe { std::mem::transmute(dump) };
    let starts = [site_words as *const () as usize, site_buffer as *const () as usize, site_table as *const () as usize, after_sites as *const () as usize];
    let names = ["site_words", "site_buffer", "site_table"];
    let mut kept = Vec::with_capacity(8000);
    for i in 0..300_000 {
        drop(site_words());
        if i % 37 == 0 && kept.len() < 8000 {
            kept.push(site_buffer());
        }
        if i % 1500 == 0 {
            drop(site_table());
        }
    }
    after_sites();
    let c = std::ffi::CString::new(path.clone()).unwrap();
    assert_eq!(dump(c.as_ptr()), 0, "domalloc_prof_dump({path}) failed (is DOMALLOC_PROF=1 set?)");
    let text = std::fs::read_to_string(&path).unwrap();
    let function_of = |ra: usize| -> Option<usize> {
        let best = (0..4).filter(|&i| starts[i] < ra).max_by_key(|&i| starts[i])?;
        (best < 3 && ra - starts[best] < 512).then_some(best)
    };
    let (mut alloc, mut live, mut unattributed) = ([0f64; 3], [0f64; 3], 0f64);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# site ") else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() != 11 || f[0] == "samples" {
            continue;
        }
        let inner = f[10].rsplit(';').next().unwrap();
        let ra = usize::from_str_radix(inner.trim_start_matches("0x"), 16).unwrap_or(0);
        let (a, l): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        match function_of(ra) {
            Some(i) => {
                alloc[i] += a;
                live[i] += l;
            }
            None => unattributed += a,
        }
    }
    let want_alloc = [96.0 * 300_000.0, 6000.0 * 8000.0, 400_000.0 * 200.0];
    let want_live = [0.0, 6000.0 * 8000.0, 0.0];
    let mut bad = false;
    for i in 0..3 {
        println!(
            "{:<12} allocated {:6.1} MB (true {:6.1}), live {:6.1} MB (true {:6.1})",
            names[i],
            alloc[i] / 1e6,
            want_alloc[i] / 1e6,
            live[i] / 1e6,
            want_live[i] / 1e6
        );
        bad |= alloc[i] < 0.65 * want_alloc[i] || alloc[i] > 1.35 * want_alloc[i];
        bad |= live[i] < 0.65 * want_live[i] || live[i] > 1.35 * want_live[i] + 2e6;
    }
    println!("unattributed {:.1} MB", unattributed / 1e6);
    bad |= unattributed > 0.1 * want_alloc.iter().sum::<f64>();
    drop(kept);
    if bad {
        eprintln!("the profile does not attribute the bytes to the right sites");
        std::process::exit(1);
    }
    println!("ok: three Rust sites attributed within 35%");
}
