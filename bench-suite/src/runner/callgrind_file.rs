//! Reading callgrind's output file for the instruction report ([`super::icount`]): the calls
//! into an allocator's malloc family from outside it, their inclusive cost, and the totals.
//!
//! The format (valgrind's `docs/callgrind-format`): `ob=`/`fn=` name the object and function
//! whose costs follow; `cob=`/`cfn=` then `calls=N POS` announce a call edge, and the cost line
//! after it is the inclusive cost of those N calls; `events:` names the columns of cost lines,
//! `summary:`/`totals:` give the totals. Names may be compressed (`(id) name` defines, `(id)`
//! refers back). The runner asks for `--compress-strings=no`, but both forms are read.

use std::collections::BTreeMap;

use super::allocators::Allocator;

/// What a call into the malloc family does to the pair count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Allocates a block (malloc, calloc, the aligned allocations, operator new).
    Alloc,
    /// Frees a block (free, operator delete).
    Free,
    /// Frees one block and allocates another (realloc).
    Both,
    /// Counted as allocator work, not as a pair (malloc_usable_size).
    Other,
}

/// The function name without callgrind's recursion mark (`malloc'2`) and symbol version
/// (`malloc@@GLIBC_2.2.5`).
fn plain_name(name: &str) -> &str {
    let n = name.split('\'').next().unwrap_or(name);
    n.split('@').next().unwrap_or(n)
}

/// Which entry point of the malloc family `name` is, if any: the C and glibc names, glibc's
/// `__libc_` aliases and mimalloc's `mi_` names (the names callgrind may pick for an address
/// that has several), and C++ operator new/delete.
pub fn entry(name: &str) -> Option<Entry> {
    let n = plain_name(name);
    if n.starts_with("operator new") {
        return Some(Entry::Alloc);
    }
    if n.starts_with("operator delete") {
        return Some(Entry::Free);
    }
    let n = n.strip_prefix("__libc_").or_else(|| n.strip_prefix("mi_")).unwrap_or(n);
    Some(match n {
        "malloc" | "calloc" | "posix_memalign" | "__posix_memalign" | "aligned_alloc" | "memalign" | "valloc"
        | "pvalloc" => Entry::Alloc,
        "free" | "cfree" | "free_sized" | "free_aligned_sized" | "free_size" | "free_aligned" => Entry::Free,
        "realloc" | "reallocarray" | "reallocf" => Entry::Both,
        "malloc_usable_size" | "usable_size" => Entry::Other,
        _ => return None,
    })
}

/// glibc's own malloc internals that call its entry points (the thread-exit tcache flush frees
/// every cached block through `free`); calls from them are not the program's.
const GLIBC_INTERNAL: [&str; 4] =
    ["__malloc_arena_thread_freeres", "tcache_thread_shutdown", "arena_thread_freeres", "__libc_thread_freeres"];

/// Where the allocator's code lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Home {
    /// A preloaded library, by file name (`libdomalloc.so`).
    Library(String),
    /// glibc's malloc, inside libc.so.6 with everything else of libc.
    Libc,
}

impl Home {
    /// The home of an allocator of the runner.
    pub fn of(a: &Allocator) -> Home {
        match &a.path {
            Some(p) => Home::Library(p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())),
            None => Home::Libc,
        }
    }

    /// Whether the object file `ob` (a path) is the allocator's.
    pub fn owns(&self, ob: &str) -> bool {
        let base = ob.rsplit('/').next().unwrap_or(ob);
        match self {
            Home::Library(name) => base == name,
            Home::Libc => base.starts_with("libc.so") || base.starts_with("libc-"),
        }
    }

    /// Whether function `func` of object `ob` is outside the allocator: another object, or for
    /// glibc any libc function but the malloc family and its internals.
    fn outside(&self, ob: &str, func: &str) -> bool {
        match self {
            Home::Library(_) => !self.owns(ob),
            Home::Libc => !self.owns(ob) || (entry(func).is_none() && !GLIBC_INTERNAL.contains(&plain_name(func))),
        }
    }
}

/// Instructions and simulated cache misses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Instructions executed (Ir).
    pub ir: u64,
    /// First-level data cache misses, reads and writes (D1mr + D1mw).
    pub d1: u64,
    /// Last-level misses, instructions and data (ILmr + DLmr + DLmw), as valgrind's "LL misses".
    pub ll: u64,
}

impl Cost {
    fn add(&mut self, o: Cost) {
        self.ir += o.ir;
        self.d1 += o.d1;
        self.ll += o.ll;
    }
}

/// The positions of the events in a cost line (from the `events:` header).
#[derive(Clone, Debug, Default)]
struct Events {
    ir: Option<usize>,
    d1: Vec<usize>,
    ll: Vec<usize>,
}

impl Events {
    fn new(header: &str) -> Events {
        let names: Vec<&str> = header.split_whitespace().collect();
        let at = |n: &str| names.iter().position(|x| *x == n);
        Events {
            ir: at("Ir"),
            d1: ["D1mr", "D1mw"].iter().filter_map(|n| at(n)).collect(),
            ll: ["ILmr", "DLmr", "DLmw"].iter().filter_map(|n| at(n)).collect(),
        }
    }

    fn cost(&self, v: &[u64]) -> Cost {
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        Cost {
            ir: self.ir.map_or(0, get),
            d1: self.d1.iter().map(|&i| get(i)).sum(),
            ll: self.ll.iter().map(|&i| get(i)).sum(),
        }
    }
}

/// What the report takes from one callgrind dump.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Calls into each entry point of the allocator from outside it (plain names).
    pub calls: BTreeMap<String, u64>,
    /// Inclusive cost of those calls: the malloc+free work.
    pub alloc: Cost,
    /// Inclusive cost of every call into the library from outside (preloaded allocators only).
    pub lib: Option<Cost>,
    /// Everything executed (the dump's totals).
    pub total: Cost,
    /// Calls of malloc-family names from outside that landed in another object: the preload
    /// did not serve them.
    pub foreign: u64,
}

impl Profile {
    /// Calls that allocate (realloc included).
    pub fn allocs(&self) -> u64 {
        self.count(|e| matches!(e, Entry::Alloc | Entry::Both))
    }
    /// Calls that free (realloc included).
    pub fn frees(&self) -> u64 {
        self.count(|e| matches!(e, Entry::Free | Entry::Both))
    }
    fn count(&self, f: impl Fn(Entry) -> bool) -> u64 {
        self.calls.iter().filter(|(n, _)| entry(n).is_some_and(&f)).map(|(_, c)| c).sum()
    }
    /// malloc/free pairs: (allocating + freeing calls) / 2.
    pub fn pairs(&self) -> f64 {
        (self.allocs() + self.frees()) as f64 / 2.0
    }
}

/// Name compression of the callgrind format: `(id) name` defines, `(id)` refers back.
fn expand(names: &mut BTreeMap<u64, String>, v: &str) -> String {
    let v = v.trim();
    let Some(rest) = v.strip_prefix('(') else { return v.to_string() };
    let Some((id, name)) = rest.split_once(')') else { return v.to_string() };
    let Ok(id) = id.parse::<u64>() else { return v.to_string() };
    let name = name.trim();
    if name.is_empty() {
        names.get(&id).cloned().unwrap_or_default()
    } else {
        names.insert(id, name.to_string());
        name.to_string()
    }
}

/// Parses a callgrind output file (one part) for the allocator living in `home`.
pub fn parse(text: &str, home: &Home) -> Result<Profile, String> {
    let mut p = Profile { lib: matches!(home, Home::Library(_)).then(Cost::default), ..Profile::default() };
    let mut obs = BTreeMap::new();
    let mut fns = BTreeMap::new();
    let (mut ob, mut func) = (String::new(), String::new());
    let (mut cob, mut cfn): (Option<String>, String) = (None, String::new());
    let mut positions = 1;
    let mut events = Events::default();
    let mut call: Option<u64> = None; // `calls=N`: the next cost line is the call's inclusive cost
    let mut jump = false; // `jump=`/`jcnd=`: the next line is a position only
    let mut totals = None;
    for line in text.lines() {
        let Some(c) = line.chars().next() else { continue };
        if c.is_ascii_digit() || c == '+' || c == '-' || c == '*' {
            if std::mem::take(&mut jump) {
                continue;
            }
            let v: Vec<u64> = line.split_whitespace().skip(positions).map(|x| x.parse().unwrap_or(0)).collect();
            if let Some(n) = call.take() {
                let callee_ob = cob.take().unwrap_or_else(|| ob.clone());
                let cost = events.cost(&v);
                let outside = home.outside(&ob, &func);
                if outside && home.owns(&callee_ob) {
                    if let Some(lib) = p.lib.as_mut() {
                        lib.add(cost);
                    }
                    if entry(&cfn).is_some() {
                        *p.calls.entry(plain_name(&cfn).to_string()).or_default() += n;
                        p.alloc.add(cost);
                    }
                } else if outside
                    && !home.owns(&callee_ob)
                    && callee_ob != ob
                    && matches!(entry(&cfn), Some(Entry::Alloc | Entry::Free | Entry::Both))
                {
                    p.foreign += n;
                }
            }
            continue;
        }
        let Some((key, val)) = line.split_once(['=', ':']) else { continue };
        match key {
            "ob" => ob = expand(&mut obs, val),
            "fn" => {
                func = expand(&mut fns, val);
                cob = None;
            }
            "cob" => cob = Some(expand(&mut obs, val)),
            "cfn" | "cfni" => cfn = expand(&mut fns, val),
            "calls" => call = Some(val.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)),
            "jump" | "jcnd" => jump = true,
            "positions" => positions = val.split_whitespace().count().max(1),
            "events" => events = Events::new(val),
            "summary" | "totals" => {
                let v: Vec<u64> = val.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
                if key == "totals" || totals.is_none() {
                    totals = Some(events.cost(&v));
                }
            }
            _ => {}
        }
    }
    p.total = totals.ok_or("no summary or totals line: not a callgrind file?")?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// preloaded allocator, the allocator calling libc's memset and itself, and a thread-exit
    /// hook entering the library from libc.
    const DUMP: &str = "# callgrind format
version: 1
positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 100000 0 0 0 500 100 10 20 30

ob=(1) /work/target/release/workloads
fl=(1) ???
fn=(1) work
5 1000 0 0 0 10
cob=(2) /lib/libdomalloc.so
cfi=(2) ???
cfn=(2) malloc
calls=10 0
5 300 0 0 0 3 1 0 1 1
cob=(2)
cfn=(3) free
calls=8 0
5 200 0 0 0 2 0 0 0 1
cob=(2)
cfn=(4) realloc'2
calls=2 0
5 100
cob=(3) /lib/x86_64-linux-gnu/libc.so.6
cfn=(5) memcpy@@GLIBC_2.14
calls=4 0
5 40

ob=(2)
fn=(2)
3 250 0 0 0 1
cob=(3)
cfn=(6) memset
calls=1 0
3 50 0 0 0 1
cob=(2)
cfn=(3)
calls=1 0
3 7

ob=(3)
fn=(7) __call_tls_dtors
1 20
cob=(2)
cfn=(8) domalloc::thread_exit
calls=1 0
1 90 0 0 0 4
";

    #[test]
    fn parses_calls_and_inclusive_costs() {
        let p = parse(DUMP, &Home::Library("libdomalloc.so".into())).unwrap();
        // The malloc -> free call inside the library is the library's own business.
        assert_eq!(p.calls.get("malloc"), Some(&10));
        assert_eq!(p.calls.get("free"), Some(&8));
        assert_eq!(p.calls.get("realloc"), Some(&2));
        assert_eq!((p.allocs(), p.frees(), p.pairs()), (12, 10, 11.0));
        assert_eq!(p.alloc, Cost { ir: 600, d1: 6, ll: 3 });
        // The thread-exit hook counts for the library, not as malloc+free.
        assert_eq!(p.lib, Some(Cost { ir: 690, d1: 10, ll: 3 }));
        assert_eq!(p.total, Cost { ir: 100000, d1: 600, ll: 60 });
        assert_eq!(p.foreign, 0);
    }

    #[test]
    fn calls_that_miss_the_preload_are_foreign() {
        let p = parse(DUMP, &Home::Library("libmimalloc3.so".into())).unwrap();
        assert_eq!((p.pairs(), p.foreign), (0.0, 20));
    }

    #[test]
    fn glibc_counts_libc_callers_but_not_its_internals() {
        let dump = "events: Ir
summary: 1000
ob=(1) /lib/x86_64-linux-gnu/libc.so.6
fn=(1) strdup
1 5
cfn=(2) malloc
calls=3 0
1 300
fn=(3) realloc
cfn=(2)
calls=1 0
1 80
fn=(4) __malloc_arena_thread_freeres
cfn=(5) free
calls=5 0
1 100
ob=(2) /usr/bin/prog
fn=(6) main
cob=(1)
cfn=(3)
calls=1 0
1 120
";
        let p = parse(dump, &Home::Libc).unwrap();
        assert_eq!((p.allocs(), p.frees(), p.alloc.ir), (4, 1, 420));
        assert_eq!(p.lib, None);
    }

    #[test]
    fn entry_names() {
        assert_eq!(entry("malloc"), Some(Entry::Alloc));
        assert_eq!(entry("__libc_free"), Some(Entry::Free));
        assert_eq!(entry("mi_realloc"), Some(Entry::Both));
        assert_eq!(entry("operator delete(void*, unsigned long)"), Some(Entry::Free));
        assert_eq!(entry("posix_memalign@@GLIBC_2.2.5"), Some(Entry::Alloc));
        assert_eq!(entry("malloc_usable_size"), Some(Entry::Other));
        assert_eq!(entry("_int_malloc"), None);
        assert_eq!(entry("mi_heap_malloc"), None);
    }
}
