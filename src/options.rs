//! The options table: every `DOMALLOC_*` environment variable, its default and what it does.
//!
//! Options are read once, during global initialisation, straight from the environment block
//! (no allocation). The README's option table is checked against [`TABLE`] by a test.


use crate::os::{self, NodeMask, Os, PurgeMode, Sys};
use crate::util::{edit_distance, parse_bool, parse_size, parse_u64, SetOnce};

fn getenv(name: &[u8]) -> Option<&'static [u8]> {
    Sys::environ_find(name)
}

/// One documented option.
pub struct OptionDesc {
    /// The environment variable.
    pub name: &'static str,
    /// The default, as text.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// Every option domalloc reads. Keep in sync with `Options::parse` (a test checks the README).
pub const TABLE: &[OptionDesc] = &[
    OptionDesc { name: "DOMALLOC_PURGE_DELAY", default: "1000", doc: "Milliseconds an empty span waits before its pages are returned to the OS; 0 = at once, `never` = keep." },
    OptionDesc { name: "DOMALLOC_PURGE", default: "dontneed", doc: "How pages are returned: `dontneed` (MADV_DONTNEED, re-placed by first touch) or `free` (MADV_FREE, lazy)." },
    OptionDesc { name: "DOMALLOC_THP", default: "segments", doc: "Transparent huge pages (MADV_HUGEPAGE): `segments` on the segments bound to one node (small blocks below 16 KiB; every segment on a one-node machine), so placement is unchanged (first-touch segments never get them); `1` also on huge blocks (first-touch placement becomes 2 MiB-granular); `0` nowhere." },
    OptionDesc { name: "DOMALLOC_NUMA", default: "auto", doc: "`auto`: NUMA logic when the machine has more than one node; `0`: act as one node; `1`: force it on." },
    OptionDesc { name: "DOMALLOC_POLICY", default: "local", doc: "Placement: `local`, `bind:<nodes>`, `preferred:<node>`, `interleave:<nodes>`, optional `@<size>` threshold (e.g. `interleave:0-3@1M`)." },
    OptionDesc { name: "DOMALLOC_TOPOLOGY_ROOT", default: "/sys", doc: "Read the topology from this directory instead of /sys (for tests with fake sysfs trees)." },
    OptionDesc { name: "DOMALLOC_STATS", default: "0", doc: "Statistics report at exit: `1` or `text` (aligned tables), `json` (one JSON document); to stderr or `DOMALLOC_STATS_FILE`." },
    OptionDesc { name: "DOMALLOC_STATS_FILE", default: "none", doc: "Write the report to this file instead: `%p` pid, `%r` MPI rank (Open MPI, MPICH, PMIx, MVAPICH, Slurm), `%h` host name, `%%` a percent sign. Implies the report (text unless `DOMALLOC_STATS=json`)." },
    OptionDesc { name: "DOMALLOC_VERBOSE", default: "0", doc: "Print the options and detected topology to stderr at start-up." },
    OptionDesc { name: "DOMALLOC_PURGE_THREAD", default: "auto", doc: "Background purge thread, so freed memory goes back to the OS even when the program makes no more allocator calls: `auto` starts it (with every signal blocked) the first time 4 MiB wait to be purged, again in a fork child; `1` at the first wait; `0` never (purges then run inside allocator calls)." },
    OptionDesc { name: "DOMALLOC_HUGE_CACHE", default: "128M", doc: "Bytes of freed huge blocks kept per node for reuse, on the node their pages are on (released after 2x the purge delay; hardened builds keep them inaccessible while cached)." },
    OptionDesc { name: "DOMALLOC_FAIL_MAP_EVERY", default: "0", doc: "Fault injection: make every Nth OS mapping fail (0 = off)." },
    OptionDesc { name: "DOMALLOC_FAIL_MAP_AFTER", default: "0", doc: "Fault injection: make every OS mapping after the Nth fail (0 = off)." },
];

/// NUMA mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NumaMode {
    /// On when the machine has more than one node with memory.
    Auto,
    /// Off: one domain for the whole machine.
    Off,
    /// On even with one node (for testing the NUMA paths).
    On,
}

/// When the background purge thread starts (see `DOMALLOC_PURGE_THREAD`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PurgeThread {
    /// When enough memory waits to be purged.
    Auto,
    /// At the first purge wait.
    On,
    /// Never.
    Off,
}

/// The statistics report's form (see `DOMALLOC_STATS`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StatsFormat {
    /// No report at exit.
    Off,
    /// Aligned text tables.
    Text,
    /// One JSON document.
    Json,
}

/// A placement policy (see `DOMALLOC_POLICY`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Policy {
    /// First touch by the allocating thread's node.
    Local,
    /// Memory only from these nodes.
    Bind(NodeMask),
    /// This node first.
    Preferred(usize),
    /// Pages spread round-robin over these nodes.
    Interleave(NodeMask),
}

/// Written in `DOMALLOC_POLICY` syntax (`local`, `bind:0-1`, `preferred:1`, `interleave:0,2`).
impl core::fmt::Display for Policy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Policy::Local => f.write_str("local"),
            Policy::Bind(m) => write!(f, "bind:{m}"),
            Policy::Preferred(n) => write!(f, "preferred:{n}"),
            Policy::Interleave(m) => write!(f, "interleave:{m}"),
        }
    }
}

/// Parsed options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `DOMALLOC_PURGE_DELAY` in ms; `u64::MAX` = never.
    pub purge_delay_ms: u64,
    /// `DOMALLOC_PURGE`.
    pub purge_mode: PurgeMode,
    /// `DOMALLOC_THP` is `1`: huge pages for huge blocks too.
    pub thp: bool,
    /// `DOMALLOC_THP` is `segments` or `1`: huge pages for segments.
    pub segment_thp: bool,
    /// `DOMALLOC_NUMA`.
    pub numa: NumaMode,
    /// `DOMALLOC_POLICY` policy.
    pub policy: Policy,
    /// `DOMALLOC_POLICY` threshold: the policy applies to blocks of at least this size (0 = all).
    pub policy_min_size: usize,
    /// `DOMALLOC_TOPOLOGY_ROOT`.
    pub topology_root: Option<&'static [u8]>,
    /// `DOMALLOC_STATS`.
    pub stats: StatsFormat,
    /// `DOMALLOC_STATS_FILE` (a path template).
    pub stats_file: Option<&'static [u8]>,
    /// `DOMALLOC_PURGE_THREAD`.
    pub purge_thread: PurgeThread,
    /// `DOMALLOC_VERBOSE`.
    pub verbose: bool,
    /// `DOMALLOC_HUGE_CACHE` bytes per node.
    pub huge_cache: usize,
    /// `DOMALLOC_FAIL_MAP_EVERY`.
    pub fail_map_every: u64,
    /// `DOMALLOC_FAIL_MAP_AFTER`.
    pub fail_map_after: u64,
}

impl Options {
    const DEFAULT: Options = Options {
        purge_delay_ms: 1000,
        purge_mode: PurgeMode::DontNeed,
        thp: false,
        segment_thp: true,
        numa: NumaMode::Auto,
        policy: Policy::Local,
        policy_min_size: 0,
        topology_root: None,
        stats: StatsFormat::Off,
        stats_file: None,
        purge_thread: PurgeThread::Auto,
        verbose: false,
        huge_cache: 128 << 20,
        fail_map_every: 0,
        fail_map_after: 0,
    };

    /// Reads every option from the environment; malformed values keep the default and are
    /// reported (once, at start-up) through `bad`.
    fn parse(bad: &mut dyn FnMut(&'static str, &[u8])) -> Options {
        let mut o = Options::DEFAULT;
        if let Some(v) = getenv(b"DOMALLOC_PURGE_DELAY") {
            match v {
                b"never" | b"-1" => o.purge_delay_ms = u64::MAX,
                _ => match parse_u64(v) {
                    Some(ms) => o.purge_delay_ms = ms,
                    None => bad("DOMALLOC_PURGE_DELAY", v),
                },
            }
        }
        if let Some(v) = getenv(b"DOMALLOC_PURGE") {
            match v {
                b"dontneed" => o.purge_mode = PurgeMode::DontNeed,
                b"free" => o.purge_mode = PurgeMode::Free,
                _ => bad("DOMALLOC_PURGE", v),
            }
        }
        if let Some(v) = getenv(b"DOMALLOC_THP") {
            match (v, parse_bool(v)) {
                (b"segments", _) => (o.thp, o.segment_thp) = (false, true),
                (_, Some(b)) => (o.thp, o.segment_thp) = (b, b),
                _ => bad("DOMALLOC_THP", v),
            }
        }
        if let Some(v) = getenv(b"DOMALLOC_NUMA") {
            match v {
                b"auto" => o.numa = NumaMode::Auto,
                _ => match parse_bool(v) {
                    Some(true) => o.numa = NumaMode::On,
                    Some(false) => o.numa = NumaMode::Off,
                    None => bad("DOMALLOC_NUMA", v),
                },
            }
        }
        if let Some(v) = getenv(b"DOMALLOC_POLICY") {
            match parse_policy(v) {
                Some((p, min)) => {
                    o.policy = p;
                    o.policy_min_size = min;
                }
                None => bad("DOMALLOC_POLICY", v),
            }
        }
        o.topology_root = getenv(b"DOMALLOC_TOPOLOGY_ROOT").filter(|v| !v.is_empty());
        if let Some(v) = getenv(b"DOMALLOC_STATS") {
            match (v, parse_bool(v)) {
                (b"text", _) | (_, Some(true)) => o.stats = StatsFormat::Text,
                (b"json", _) => o.stats = StatsFormat::Json,
                (_, Some(false)) => o.stats = StatsFormat::Off,
                _ => bad("DOMALLOC_STATS", v),
            }
        }
        o.stats_file = getenv(b"DOMALLOC_STATS_FILE").filter(|v| !v.is_empty());
        if o.stats_file.is_some() && o.stats == StatsFormat::Off {
            o.stats = StatsFormat::Text;
        }
        if let Some(v) = getenv(b"DOMALLOC_VERBOSE") {
            match parse_bool(v) {
                Some(b) => o.verbose = b,
                None => bad("DOMALLOC_VERBOSE", v),
            }
        }
        if let Some(v) = getenv(b"DOMALLOC_PURGE_THREAD") {
            match (v, parse_bool(v)) {
                (b"auto", _) => o.purge_thread = PurgeThread::Auto,
                (_, Some(true)) => o.purge_thread = PurgeThread::On,
                (_, Some(false)) => o.purge_thread = PurgeThread::Off,
                _ => bad("DOMALLOC_PURGE_THREAD", v),
            }
        }
        if let Some(v) = getenv(b"DOMALLOC_HUGE_CACHE") {
            match parse_size(v) {
                Some(n) => o.huge_cache = n as usize,
                None => bad("DOMALLOC_HUGE_CACHE", v),
            }
        }
        if let Some(v) = getenv(b"DOMALLOC_FAIL_MAP_EVERY") {
            match parse_u64(v) {
                Some(n) => o.fail_map_every = n,
                None => bad("DOMALLOC_FAIL_MAP_EVERY", v),
            }
        }
        if let Some(v) = getenv(b"DOMALLOC_FAIL_MAP_AFTER") {
            match parse_u64(v) {
                Some(n) => o.fail_map_after = n,
                None => bad("DOMALLOC_FAIL_MAP_AFTER", v),
            }
        }
        o
    }
}

/// Parses `local`, `bind:0-1`, `preferred:2`, `interleave:0,2@64k`.
pub fn parse_policy(v: &[u8]) -> Option<(Policy, usize)> {
    let (body, min) = match v.iter().position(|&c| c == b'@') {
        Some(i) => (&v[..i], parse_size(&v[i + 1..])? as usize),
        None => (v, 0),
    };
    let (kind, arg) = match body.iter().position(|&c| c == b':') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &b""[..]),
    };
    let mask = |arg: &[u8]| -> Option<NodeMask> {
        let mut m = NodeMask::empty();
        let mut ok = true;
        if !crate::util::for_each_in_list(arg, |n| {
            if n >= NodeMask::CAPACITY {
                ok = false
            } else {
                m.insert(n)
            }
        }) || !ok
            || m.is_empty()
        {
            return None;
        }
        Some(m)
    };
    let p = match kind {
        b"local" | b"default" if arg.is_empty() => Policy::Local,
        b"bind" => Policy::Bind(mask(arg)?),
        b"interleave" => Policy::Interleave(mask(arg)?),
        b"preferred" => Policy::Preferred(parse_u64(arg).filter(|&n| (n as usize) < NodeMask::CAPACITY)? as usize),
        _ => return None,
    };
    Some((p, min))
}

/// Written only by `init`, under the start-up lock, before start-up is published.
static OPTIONS: SetOnce<Options> = SetOnce::new(Options::DEFAULT);

/// The options in force (defaults before initialisation).
#[inline]
pub fn get() -> &'static Options {
    OPTIONS.get()
}

/// Reads the environment into the options. Called once by global initialisation, which holds
/// the init lock and has not yet published initialisation.
pub(crate) fn init() {
    let o = Options::parse(&mut |name, v| {
        let v = &v[..v.len().min(64)];
        os::eprint(format_args!(
            "domalloc: warning: ignoring {}={} (malformed; using the default)\n",
            name,
            core::str::from_utf8(v).unwrap_or("?")
        ));
    });
    // SAFETY: called once by start-up, under its lock, before publication (see `OPTIONS`).
    unsafe { OPTIONS.set(o) };
    warn_unknown();
}

/// `DOMALLOC_*` variables read by the launcher, the benchmarks and the test harnesses, not by the
/// allocator (the README's second table): no warning for them.
pub const NOT_ALLOCATOR_OPTIONS: &[&str] = &[
    "DOMALLOC_LIB",
    "DOMALLOC_SO",
    "DOMALLOC_NIGHTLY",
    "DOMALLOC_QEMU_TESTS",
    "DOMALLOC_QEMU_TIMEOUT",
    "DOMALLOC_NUMA_GUEST",
    "DOMALLOC_NUMA_GUEST_SYSTEM",
    "DOMALLOC_SOAK_SECS",
    "DOMALLOC_TOOL",
    "DOMALLOC_CONTENTION_SO",
];

/// One warning line for each `DOMALLOC_*` variable that is no option, naming the nearest one
/// (as jemalloc does for an unknown `MALLOC_CONF` key): a misspelt `DOMALLOC_STAT=1` would
/// otherwise be ignored silently.
fn warn_unknown() {
    Sys::environ_each(&mut |entry| {
        let name = match entry.iter().position(|&c| c == b'=') {
            Some(i) => &entry[..i],
            None => entry,
        };
        if !name.starts_with(b"DOMALLOC_") || name.len() > 64 {
            return;
        }
        let known = |n: &str| n.as_bytes() == name;
        if TABLE.iter().any(|o| known(o.name)) || NOT_ALLOCATOR_OPTIONS.iter().any(|n| known(n)) || is_test_variable(name) {
            return;
        }
        let nearest = TABLE.iter().min_by_key(|o| edit_distance(o.name.as_bytes(), name)).map_or("", |o| o.name);
        os::eprint(format_args!(
            "domalloc: warning: unknown option {} ignored (did you mean {}?)\n",
            core::str::from_utf8(name).unwrap_or("?"),
            nearest
        ));
    });
}

/// The test suite's own variables (a misuse or fault case selected in a child process).
fn is_test_variable(name: &[u8]) -> bool {
    name.ends_with(b"_CASE") || name.starts_with(b"DOMALLOC_TEST_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!(parse_policy(b"local"), Some((Policy::Local, 0)));
        let (p, min) = parse_policy(b"interleave:0-2@1M").unwrap();
        assert_eq!(min, 1 << 20);
        match p {
            Policy::Interleave(m) => assert_eq!(m.iter().collect::<std::vec::Vec<_>>(), [0, 1, 2]),
            _ => panic!(),
        }
        assert_eq!(parse_policy(b"preferred:3"), Some((Policy::Preferred(3), 0)));
        assert!(parse_policy(b"bind:").is_none());
        assert!(parse_policy(b"bogus").is_none());
        assert!(parse_policy(b"bind:5000").is_none());
    }

    #[test]
    fn policies_print_as_they_parse() {
        for text in ["local", "bind:0-1", "preferred:3", "interleave:0,2-4,7", "bind:5"] {
            let (p, _) = parse_policy(text.as_bytes()).unwrap();
            assert_eq!(p.to_string(), text);
            assert_eq!(parse_policy(p.to_string().as_bytes()).unwrap().0, p);
        }
    }
}
