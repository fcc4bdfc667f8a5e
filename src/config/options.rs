//! The options table: every `DOMALLOC_*` environment variable, its default and what it does.
//!
//! Options are read once, during global initialisation, straight from the environment block
//! (no allocation). The README's option table is checked against [`TABLE`] by a test.

use core::fmt::{self, Write};

use crate::config::topology;
use crate::sys::os::{self, NodeMask, Os, PurgeMode, Signal, Sys};
use crate::sys::{edit_distance, parse_size, parse_u64, SetOnce};

fn getenv(name: &[u8]) -> Option<&'static [u8]> {
    Sys::environ_find(name)
}

/// One documented option: its name, default and text, and how it is read and shown. The one
/// place an option is named: [`Options::parse`] and the `DOMALLOC_VERBOSE=1` listing walk this
/// table (as mimalloc's `options.c` does).
pub struct OptionDesc {
    /// The environment variable.
    pub name: &'static str,
    /// The default, as text.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// A path: white space allowed in its value (other options take none).
    path: bool,
    /// Reads a value (never empty) into the options; false: malformed.
    parse: fn(&'static [u8], &mut Options) -> bool,
    /// Writes the value in force, in the option's own syntax.
    show: fn(&Options, &mut dyn Write) -> fmt::Result,
}

/// The smallest block `DOMALLOC_FIRST_TOUCH=always` purges before reuse: the smallest class
/// placed by first touch (blocks whose pages no other block shares).
pub const FRESH_BLOCKS_MIN: usize = 16 << 10;

/// Every option domalloc reads, in the README's order (a test checks the README against it).
pub const TABLE: &[OptionDesc] = &[
    OptionDesc {
        name: "DOMALLOC_PURGE_DELAY",
        default: "1000",
        doc: "Milliseconds an empty span waits before its pages are returned to the OS; 0 = at once, `never` = keep.",
        path: false,
        parse: |v, o| parse_ms_or_never(v, &mut o.purge_delay_ms),
        show: |o, w| show_ms_or_never(o.purge_delay_ms, w),
    },
    OptionDesc {
        name: "DOMALLOC_PURGE",
        default: "dontneed",
        doc: "How pages are returned: `dontneed` (MADV_DONTNEED, re-placed by first touch) or `free` (MADV_FREE, lazy).",
        path: false,
        parse: |v, o| match v {
            b"dontneed" => set(&mut o.purge_mode, PurgeMode::DontNeed),
            b"free" => set(&mut o.purge_mode, PurgeMode::Free),
            _ => false,
        },
        show: |o, w| {
            w.write_str(match o.purge_mode {
                PurgeMode::DontNeed => "dontneed",
                PurgeMode::Free => "free",
            })
        },
    },
    OptionDesc {
        name: "DOMALLOC_FIRST_TOUCH",
        default: "fresh",
        doc: "Multi-node machines, blocks from 16 KiB: `fresh` hands out only untouched memory for first touch, so the toucher's node decides in every phase of a program: a new mapping while the node's used free memory is under 32 MiB, else a span used since its last purge, purged first (one madvise per span); `reuse` hands it out with its pages where they are (no madvise, no page faults: for programs whose threads allocate what they touch themselves, under heavy thread churn); `always[@<size>]` is `fresh`, and a freed block of at least `<size>` (default and minimum 16K) is purged too before it is handed out again (one madvise per block), so first touch decides again for recycled blocks: for multi-phase codes whose serial region allocates what workers on other nodes touch.",
        path: false,
        parse: |v, o| match v {
            b"fresh" => set(&mut o.fresh_spans, true) && set(&mut o.fresh_blocks_from, 0),
            b"reuse" => set(&mut o.fresh_spans, false) && set(&mut o.fresh_blocks_from, 0),
            _ => {
                let Some(rest) = v.strip_prefix(b"always") else { return false };
                let from = match rest {
                    b"" => FRESH_BLOCKS_MIN,
                    _ => match rest.strip_prefix(b"@").and_then(parse_size).and_then(|n| usize::try_from(n).ok()) {
                        Some(n) => n.max(FRESH_BLOCKS_MIN),
                        None => return false,
                    },
                };
                o.fresh_spans = true;
                o.fresh_blocks_from = from;
                true
            }
        },
        show: |o, w| match (o.fresh_spans, o.fresh_blocks_from) {
            (_, 0) => w.write_str(if o.fresh_spans { "fresh" } else { "reuse" }),
            (_, n) => write!(w, "always@{}", SizeSuffix(n as u64)),
        },
    },
    OptionDesc {
        name: "DOMALLOC_THP",
        default: "segments",
        doc: "Transparent huge pages (MADV_HUGEPAGE): `segments` on the segments bound to one node (small blocks below 16 KiB; every segment on a one-node machine), so placement is unchanged (first-touch segments never get them); `1` also on huge blocks (first-touch placement becomes 2 MiB-granular); `0` nowhere.",
        path: false,
        parse: |v, o| match v {
            b"segments" => set(&mut (o.thp, o.segment_thp), (false, true)),
            _ => parse_01(v).map(|b| (o.thp, o.segment_thp) = (b, b)).is_some(),
        },
        show: |o, w| {
            w.write_str(match (o.thp, o.segment_thp) {
                (true, _) => "1",
                (false, true) => "segments",
                (false, false) => "0",
            })
        },
    },
    OptionDesc {
        name: "DOMALLOC_NUMA",
        default: "auto",
        doc: "`auto`: NUMA logic when the machine has more than one node; `0`: act as one node; `1`: force it on.",
        path: false,
        parse: |v, o| match (v, parse_01(v)) {
            (b"auto", _) => set(&mut o.numa, NumaMode::Auto),
            (_, Some(true)) => set(&mut o.numa, NumaMode::On),
            (_, Some(false)) => set(&mut o.numa, NumaMode::Off),
            _ => false,
        },
        show: |o, w| {
            w.write_str(match o.numa {
                NumaMode::Auto => "auto",
                NumaMode::On => "1",
                NumaMode::Off => "0",
            })
        },
    },
    OptionDesc {
        name: "DOMALLOC_FOLLOW_DELAY",
        default: "1000",
        doc: "Multi-node machines: milliseconds a thread that the scheduler moved to another node must stay there before its allocations follow it (its blocks come from its old node's pages meanwhile); a thread whose affinity keeps it on the new node (moved by the program, numactl, OpenMP binding) is followed at once; `0` = always at once, `never` = only such threads.",
        path: false,
        parse: |v, o| parse_ms_or_never(v, &mut o.follow_delay_ms),
        show: |o, w| show_ms_or_never(o.follow_delay_ms, w),
    },
    OptionDesc {
        name: "DOMALLOC_POLICY",
        default: "local",
        doc: "Placement: `local`, `bind:<nodes>`, `preferred:<nodes>` (several nodes: `MPOL_PREFERRED_MANY`), `interleave:<nodes>`, optional `@<size>` threshold (e.g. `interleave:0-3@1M`); `<nodes>` is a list such as `0-3,6` or `all` (every node with memory). `hbw[:<budget>][<<size>]`: blocks below `<size>` (default 1M) on the high-bandwidth node nearest the allocating thread, up to `<budget>` bytes per process (default: no limit), then on the thread's own node; bigger blocks local.",
        path: false,
        parse: |v, o| {
            if let Some(t) = parse_tier(v) {
                (o.policy, o.policy_min_size, o.policy_all, o.tier) = (Policy::Local, 0, false, Some(t));
                return true;
            }
            match parse_policy_or_all(v) {
                Some((p, min, all)) => {
                    (o.policy, o.policy_min_size, o.policy_all, o.tier) = (p, min, all, None);
                    true
                }
                None => false,
            }
        },
        show: |o, w| {
            if let Some(t) = &o.tier {
                w.write_str("hbw")?;
                if t.budget > 0 {
                    write!(w, ":{}", SizeSuffix(t.budget))?;
                }
                return write!(w, "<{}", SizeSuffix(t.below as u64));
            }
            write!(w, "{}", o.policy)?;
            if o.policy_min_size > 0 {
                write!(w, "@{}", SizeSuffix(o.policy_min_size as u64))?;
            }
            Ok(())
        },
    },
    OptionDesc {
        name: "DOMALLOC_TOPOLOGY_ROOT",
        default: "/sys",
        doc: "Read the topology from this directory instead of /sys (for tests with fake sysfs trees); one that holds no topology is reported and the real one used.",
        path: true,
        parse: |v, o| set(&mut o.topology_root, Some(v)),
        show: |o, w| show_bytes(w, o.topology_root.unwrap_or(b"/sys")),
    },
    OptionDesc {
        name: "DOMALLOC_HBW_NODES",
        default: "detected",
        doc: "The high-bandwidth nodes (`hbw_malloc` and the fast tier) as a node list (`4-5`), replacing what HMAT says; unset, memkind's `MEMKIND_HBW_NODES` is honoured the same way.",
        path: false,
        parse: |v, o| parse_node_list(v).map(|m| o.hbw_nodes = Some(m)).is_some(),
        show: |o, w| match &o.hbw_nodes {
            Some(m) => write!(w, "{m}"),
            None => w.write_str("detected"),
        },
    },
    OptionDesc {
        name: "DOMALLOC_STATS",
        default: "0",
        doc: "Statistics report at exit: `1` or `text` (aligned tables), `json` (one JSON document); to stderr or `DOMALLOC_STATS_FILE`.",
        path: false,
        parse: |v, o| match (v, parse_01(v)) {
            (b"text", _) | (_, Some(true)) => set(&mut o.stats, StatsFormat::Text),
            (b"json", _) => set(&mut o.stats, StatsFormat::Json),
            (_, Some(false)) => set(&mut o.stats, StatsFormat::Off),
            _ => false,
        },
        show: |o, w| {
            w.write_str(match o.stats {
                StatsFormat::Off => "0",
                StatsFormat::Text => "text",
                StatsFormat::Json => "json",
            })
        },
    },
    OptionDesc {
        name: "DOMALLOC_STATS_FILE",
        default: "none",
        doc: "Write the report to this file instead: `%p` pid, `%r` MPI rank (Open MPI, MPICH, PMIx, MVAPICH, Slurm), `%h` host name, `%%` a percent sign (any other `%` is written as it is, with a warning). Implies the report (text unless `DOMALLOC_STATS=json`).",
        path: true,
        parse: |v, o| set(&mut o.stats_file, Some(v)),
        show: |o, w| show_bytes(w, o.stats_file.unwrap_or(b"none")),
    },
    OptionDesc {
        name: "DOMALLOC_PROF",
        default: "0",
        doc: "`1`: sampling heap profiler from start-up (call stacks of sampled allocations, by call site: allocated, live, live at the peak, remote-freed bytes), written to `DOMALLOC_PROF_FILE` at exit; `0`: off (the API can still start it).",
        path: false,
        parse: |v, o| parse_01(v).map(|b| o.prof = b).is_some(),
        show: |o, w| w.write_str(if o.prof { "1" } else { "0" }),
    },
    OptionDesc {
        name: "DOMALLOC_PROF_SAMPLE",
        default: "512k",
        doc: "Mean bytes between two sampled allocations (a random interval per thread; a number with an optional `k`, `M` or `G`, at least 1).",
        path: false,
        parse: |v, o| parse_size(v).filter(|&n| n > 0).map(|n| o.prof_sample = n).is_some(),
        show: |o, w| write!(w, "{}", SizeSuffix(o.prof_sample)),
    },
    OptionDesc {
        name: "DOMALLOC_PROF_FILE",
        default: "domalloc.%p.prof",
        doc: "Where the profile is written: the patterns of `DOMALLOC_STATS_FILE` (`%p`, `%r`, `%h`, `%%`). Collapsed stacks with raw addresses and the module map; `domalloc report --prof` symbolises them.",
        path: true,
        parse: |v, o| set(&mut o.prof_file, v),
        show: |o, w| show_bytes(w, o.prof_file),
    },
    OptionDesc {
        name: "DOMALLOC_PROF_SIGNAL",
        default: "none",
        doc: "A signal that writes the profile (and lets the program go on): `USR1`, `USR2` or `HUP` (chained to the program's own handler); `none`.",
        path: false,
        parse: |v, o| match (v, Signal::from_name(v)) {
            (b"none", _) => set(&mut o.prof_signal, None),
            (_, Some(s)) if s != Signal::Term => set(&mut o.prof_signal, Some(s)),
            _ => false,
        },
        show: |o, w| w.write_str(o.prof_signal.map_or("none", Signal::name)),
    },
    OptionDesc {
        name: "DOMALLOC_PROF_INTERVAL",
        default: "0",
        doc: "Also write the profile every this many seconds (`<n>ms`: milliseconds) while the profiler runs, each to `DOMALLOC_PROF_FILE` with `.0001`, `.0002`, ... appended, from a thread of the profiler's own; `0`: only at exit and on the signals.",
        path: false,
        parse: |v, o| {
            let ms = match v.strip_suffix(b"ms") {
                Some(n) => parse_u64(n),
                None => parse_u64(v).and_then(|s| s.checked_mul(1000)),
            };
            ms.map(|ms| o.prof_interval_ms = ms).is_some()
        },
        show: |o, w| match o.prof_interval_ms {
            ms if ms % 1000 == 0 => write!(w, "{}", ms / 1000),
            ms => write!(w, "{ms}ms"),
        },
    },
    OptionDesc {
        name: "DOMALLOC_VERBOSE",
        default: "0",
        doc: "`1`: print every option with its value and where it came from (environment or default), and the detected topology, to stderr at start-up.",
        path: false,
        parse: |v, o| parse_01(v).map(|b| o.verbose = b).is_some(),
        show: |o, w| w.write_str(if o.verbose { "1" } else { "0" }),
    },
    OptionDesc {
        name: "DOMALLOC_PURGE_THREAD",
        default: "auto",
        doc: "Background purge thread, so freed memory goes back to the OS even when the program makes no more allocator calls: `auto` starts it (with every signal blocked) the first time 4 MiB wait to be purged, again in a fork child; `1` at the first wait; `0` never (purges then run inside allocator calls).",
        path: false,
        parse: |v, o| match (v, parse_01(v)) {
            (b"auto", _) => set(&mut o.purge_thread, PurgeThread::Auto),
            (_, Some(true)) => set(&mut o.purge_thread, PurgeThread::On),
            (_, Some(false)) => set(&mut o.purge_thread, PurgeThread::Off),
            _ => false,
        },
        show: |o, w| {
            w.write_str(match o.purge_thread {
                PurgeThread::Auto => "auto",
                PurgeThread::On => "1",
                PurgeThread::Off => "0",
            })
        },
    },
    OptionDesc {
        name: "DOMALLOC_HUGE_CACHE",
        default: "128M",
        doc: "Bytes of freed huge blocks kept per node for reuse (a number with an optional `k`, `M` or `G`), on the node their pages are on (released after 2x the purge delay; hardened builds keep them inaccessible while cached).",
        path: false,
        parse: |v, o| parse_size(v).and_then(|n| usize::try_from(n).ok()).map(|n| o.huge_cache = n).is_some(),
        show: |o, w| write!(w, "{}", SizeSuffix(o.huge_cache as u64)),
    },
    OptionDesc {
        name: "DOMALLOC_FAIL_MAP_EVERY",
        default: "0",
        doc: "Fault injection: make every Nth OS mapping fail (0 = off). Mappings are counted from start-up on, its own tables included (the topology's excepted).",
        path: false,
        parse: |v, o| parse_u64(v).map(|n| o.fail_map_every = n).is_some(),
        show: |o, w| write!(w, "{}", o.fail_map_every),
    },
    OptionDesc {
        name: "DOMALLOC_FAIL_MAP_AFTER",
        default: "0",
        doc: "Fault injection: make every OS mapping after the Nth fail (0 = off). Mappings are counted from start-up on, its own tables included (the topology's excepted): on Linux the first `malloc` maps 5 (3 tables, the thread's heap, a segment), so N = 5 lets it and other small blocks of that segment succeed and fails the next mapping.",
        path: false,
        parse: |v, o| parse_u64(v).map(|n| o.fail_map_after = n).is_some(),
        show: |o, w| write!(w, "{}", o.fail_map_after),
    },
];

/// Stores `v` in `field`; true (a value the option accepts).
fn set<T>(field: &mut T, v: T) -> bool {
    *field = v;
    true
}

/// `0` or `1`: the boolean form the README's table shows (`yes`, `true`, `on`... are malformed).
fn parse_01(v: &[u8]) -> Option<bool> {
    match v {
        b"1" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// Writes a path (or other bytes) as text, `?` for what is not UTF-8.
fn show_bytes(w: &mut dyn Write, v: &[u8]) -> fmt::Result {
    w.write_str(core::str::from_utf8(v).unwrap_or("?"))
}

/// A size in the options' syntax: `128M`, `64k`, `1G`, or plain bytes.
struct SizeSuffix(u64);

impl fmt::Display for SizeSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0"),
            n if n % (1 << 30) == 0 => write!(f, "{}G", n >> 30),
            n if n % (1 << 20) == 0 => write!(f, "{}M", n >> 20),
            n if n % (1 << 10) == 0 => write!(f, "{}k", n >> 10),
            n => write!(f, "{n}"),
        }
    }
}

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
    /// These nodes first, the nearest of them to the allocating CPU before the others (Linux
    /// 5.15's `MPOL_PREFERRED_MANY`, as `numactl --preferred-many`; older kernels: the first
    /// node of the set, as `preferred`).
    PreferredMany(NodeMask),
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
            Policy::PreferredMany(m) => write!(f, "preferred:{m}"),
            Policy::Interleave(m) => write!(f, "interleave:{m}"),
        }
    }
}

/// The tier policy (`DOMALLOC_POLICY=hbw[:<budget>][<<size>]`): blocks below `below` bytes on
/// the high-bandwidth node nearest the allocating thread while the process has placed less
/// than `budget` bytes there (0: no limit), else on the thread's own node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierPolicy {
    /// Bytes per process on high-bandwidth nodes (0: no limit).
    pub budget: u64,
    /// Blocks of this size and more are not placed by tier (they stay local).
    pub below: usize,
}

/// Parses `hbw`, `hbw:512M`, `hbw<64K`, `hbw:1G<1M`.
pub fn parse_tier(v: &[u8]) -> Option<TierPolicy> {
    let rest = v.strip_prefix(b"hbw")?;
    let (budget_part, below_part) = match rest.iter().position(|&c| c == b'<') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let budget = match budget_part {
        b"" => 0,
        [b':', b @ ..] => parse_size(b).filter(|&b| b > 0)?,
        _ => return None,
    };
    let below = match below_part {
        None => 1 << 20,
        Some(b) => usize::try_from(parse_size(b).filter(|&b| b > 0)?).ok()?,
    };
    Some(TierPolicy { budget, below })
}

/// A delay in ms, or `never` (`u64::MAX`).
fn parse_ms_or_never(v: &[u8], ms: &mut u64) -> bool {
    match v {
        b"never" => set(ms, u64::MAX),
        _ => parse_u64(v).filter(|&n| n != u64::MAX).map(|n| *ms = n).is_some(),
    }
}

/// Writes what [`parse_ms_or_never`] reads.
fn show_ms_or_never(ms: u64, w: &mut dyn Write) -> fmt::Result {
    match ms {
        u64::MAX => w.write_str("never"),
        ms => write!(w, "{ms}"),
    }
}

/// Parsed options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `DOMALLOC_PURGE_DELAY` in ms; `u64::MAX` = never.
    pub purge_delay_ms: u64,
    /// `DOMALLOC_PURGE`.
    pub purge_mode: PurgeMode,
    /// `DOMALLOC_FIRST_TOUCH` is `fresh`: reused first-touch spans are purged first.
    pub fresh_spans: bool,
    /// `DOMALLOC_FIRST_TOUCH=always@<size>`: recycled blocks of first-touch spans of at least
    /// this many bytes are purged before they are handed out again (0: off).
    pub fresh_blocks_from: usize,
    /// `DOMALLOC_THP` is `1`: huge pages for huge blocks too.
    pub thp: bool,
    /// `DOMALLOC_THP` is `segments` or `1`: huge pages for segments.
    pub segment_thp: bool,
    /// `DOMALLOC_NUMA`.
    pub numa: NumaMode,
    /// `DOMALLOC_FOLLOW_DELAY` in ms; `u64::MAX` = never (only threads pinned to the new node).
    pub follow_delay_ms: u64,
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
    /// `DOMALLOC_POLICY=hbw...`: the tier policy (then `policy` is local).
    pub tier: Option<TierPolicy>,
    /// `DOMALLOC_HBW_NODES` (or `MEMKIND_HBW_NODES`): the high-bandwidth nodes; `None`: from HMAT.
    pub hbw_nodes: Option<NodeMask>,
    /// `DOMALLOC_PROF`.
    pub prof: bool,
    /// `DOMALLOC_PROF_SAMPLE` in bytes.
    pub prof_sample: u64,
    /// `DOMALLOC_PROF_FILE` (a path template).
    pub prof_file: &'static [u8],
    /// `DOMALLOC_PROF_SIGNAL`.
    pub prof_signal: Option<Signal>,
    /// `DOMALLOC_PROF_INTERVAL` in milliseconds (0: no periodic dumps).
    pub prof_interval_ms: u64,
    /// `DOMALLOC_POLICY` named `all`: its mask is every node with memory (set at start-up, once
    /// the topology is known).
    policy_all: bool,
}

impl Options {
    const DEFAULT: Options = Options {
        purge_delay_ms: 1000,
        purge_mode: PurgeMode::DontNeed,
        fresh_spans: true,
        fresh_blocks_from: 0,
        thp: false,
        segment_thp: true,
        numa: NumaMode::Auto,
        follow_delay_ms: 1000,
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
        hbw_nodes: None,
        tier: None,
        prof: false,
        prof_sample: 512 << 10,
        prof_file: b"domalloc.%p.prof",
        prof_signal: None,
        prof_interval_ms: 0,
        policy_all: false,
    };

    /// Reads every option of [`TABLE`] from the environment. A value the option does not accept
    /// (anything but the forms the table documents: no white space, no sign, nothing beyond
    /// 2^64) keeps the default and is reported through `bad`; an empty value is as unset.
    /// Returns the options and, per table entry, where its value came from.
    fn parse(bad: &mut dyn FnMut(&'static str, &[u8])) -> (Options, [Source; TABLE.len()]) {
        let mut o = Options::DEFAULT;
        let mut sources = [Source::Default; TABLE.len()];
        for (d, src) in TABLE.iter().zip(sources.iter_mut()) {
            let Some(v) = getenv(d.name.as_bytes()) else { continue };
            if v.is_empty() {
                continue;
            }
            let mut tried = o;
            let odd = |c: &u8| c.is_ascii_control() || (!d.path && c.is_ascii_whitespace());
            if v.iter().any(odd) || !(d.parse)(v, &mut tried) {
                bad(d.name, v);
                *src = Source::Malformed;
            } else {
                o = tried;
                *src = Source::Environment;
            }
        }
        if o.stats_file.is_some() && o.stats == StatsFormat::Off {
            o.stats = StatsFormat::Text;
        }
        (o, sources)
    }
}

/// Where an option's value came from (for `DOMALLOC_VERBOSE=1`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// Not set (or set empty).
    Default,
    /// The environment.
    Environment,
    /// Set, but malformed (or, for a path, holding nothing usable): the default is in force.
    Malformed,
}

/// Parses `local`, `bind:0-1`, `preferred:2`, `interleave:0,2@64k` (not `all`: see
/// [`parse_policy_or_all`]).
pub fn parse_policy(v: &[u8]) -> Option<(Policy, usize)> {
    match parse_policy_or_all(v)? {
        (p, min, false) => Some((p, min)),
        _ => None,
    }
}

/// [`parse_policy`], also taking `all` for the nodes of `bind:` and `interleave:` (as in
/// `interleave:all@1M`): then the mask returned is empty and the flag true; start-up fills in
/// every node with memory.
fn parse_policy_or_all(v: &[u8]) -> Option<(Policy, usize, bool)> {
    let (body, min) = match v.iter().position(|&c| c == b'@') {
        Some(i) => (&v[..i], usize::try_from(parse_size(&v[i + 1..])?).ok()?),
        None => (v, 0),
    };
    let (kind, arg) = match body.iter().position(|&c| c == b':') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &b""[..]),
    };
    let all = arg == b"all";
    let mask = |arg: &[u8]| -> Option<NodeMask> {
        let mut m = NodeMask::empty();
        if all {
            return Some(m);
        }
        let mut ok = true;
        if !crate::sys::for_each_in_list(arg, |n| if n >= NodeMask::CAPACITY { ok = false } else { m.insert(n) })
            || !ok
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
        b"preferred" => {
            let m = mask(arg)?;
            let first = m.iter().next();
            match (m.len(), first) {
                (1, Some(n)) => Policy::Preferred(n),
                _ => Policy::PreferredMany(m),
            }
        }
        _ => return None,
    };
    Some((p, min, all && matches!(p, Policy::Bind(_) | Policy::Interleave(_) | Policy::PreferredMany(_))))
}

/// A node list (`0-3,6`): not empty, every id below [`NodeMask::CAPACITY`].
fn parse_node_list(v: &[u8]) -> Option<NodeMask> {
    let mut m = NodeMask::empty();
    let mut ok = true;
    let listed = crate::sys::for_each_in_list(v, |n| if n < NodeMask::CAPACITY { m.insert(n) } else { ok = false });
    (listed && ok && !m.is_empty()).then_some(m)
}

/// Written only by `init`, under the start-up lock, before start-up is published.
static OPTIONS: SetOnce<Options> = SetOnce::new(Options::DEFAULT);
/// Where each option's value came from (same writer and rule as `OPTIONS`).
static SOURCES: SetOnce<[Source; TABLE.len()]> = SetOnce::new([Source::Default; TABLE.len()]);

/// The options in force (defaults before initialisation).
#[inline]
pub fn get() -> &'static Options {
    OPTIONS.get()
}

/// One warning line for a malformed value (cut to 64 bytes).
fn warn_malformed(name: &str, v: &[u8]) {
    let v = &v[..v.len().min(64)];
    os::eprint(format_args!(
        "domalloc: warning: ignoring {}={} (malformed; using the default)\n",
        name,
        core::str::from_utf8(v).unwrap_or("?")
    ));
}

/// Reads the environment into the options. Called once by global initialisation, which holds
/// the init lock and has not yet published initialisation.
///
/// Two options need the topology: `DOMALLOC_TOPOLOGY_ROOT` (a directory that holds none is
/// reported, and the real topology used), and a policy over `all` nodes. The topology is
/// detected here, which the start-up's own `topology::init` then finds done.
pub(crate) fn init() {
    let (mut o, mut sources) = Options::parse(&mut |name, v| warn_malformed(name, v));
    if let Some(root) = o.topology_root {
        if !topology::init_from_root(root) {
            os::eprint(format_args!(
                "domalloc: warning: ignoring DOMALLOC_TOPOLOGY_ROOT={} (no topology there: {}/devices/system/cpu/possible cannot be read); using the machine's\n",
                core::str::from_utf8(&root[..root.len().min(200)]).unwrap_or("?"),
                core::str::from_utf8(&root[..root.len().min(200)]).unwrap_or("?"),
            ));
            o.topology_root = None;
            if let Some(i) = TABLE.iter().position(|d| d.name == "DOMALLOC_TOPOLOGY_ROOT") {
                sources[i] = Source::Malformed;
            }
        }
    }
    // The topology, detected now (once; start-up's own call finds it done): before the fault
    // injection the options configure is switched on, so its mapping never counts in
    // DOMALLOC_FAIL_MAP_EVERY / _AFTER, whichever options are set.
    let detected = topology::init(o.topology_root);
    if o.policy_all {
        // Every node with memory.
        let nodes = if detected { topology::get().memory_nodes() } else { NodeMask::empty() };
        o.policy = match o.policy {
            _ if nodes.is_empty() => Policy::Local,
            Policy::Bind(_) => Policy::Bind(nodes),
            Policy::Interleave(_) => Policy::Interleave(nodes),
            Policy::PreferredMany(_) => Policy::PreferredMany(nodes),
            p => p,
        };
    }
    if o.hbw_nodes.is_none() {
        // memkind's variable, for programs and sites that set it already.
        if let Some(v) = getenv(b"MEMKIND_HBW_NODES").filter(|v| !v.is_empty()) {
            o.hbw_nodes = parse_node_list(v);
            if o.hbw_nodes.is_none() {
                warn_malformed("MEMKIND_HBW_NODES", v);
            }
        }
    }
    if let (Some(m), true) = (&o.hbw_nodes, detected) {
        topology::override_hbw_nodes(m);
    }
    if let Some(t) = o.stats_file {
        warn_unknown_percent(t);
    }
    // SAFETY: called once by start-up, under its lock, before publication (see `OPTIONS`).
    unsafe {
        OPTIONS.set(o);
        SOURCES.set(sources);
    }
    warn_unknown();
}

/// One warning for each `%` sequence of a `DOMALLOC_STATS_FILE` template other than `%p`, `%r`,
/// `%h` and `%%`, saying what is written instead (the two characters as they are).
fn warn_unknown_percent(t: &[u8]) {
    let mut i = 0;
    while i < t.len() {
        if t[i] == b'%' {
            match t.get(i + 1) {
                Some(b'p' | b'r' | b'h' | b'%') => i += 1,
                next => {
                    let seq = &t[i..(i + 2).min(t.len())];
                    os::eprint(format_args!(
                        "domalloc: warning: DOMALLOC_STATS_FILE={}: unknown sequence {} (known: %p %r %h %%) is written as it is: \"{}\"\n",
                        core::str::from_utf8(&t[..t.len().min(200)]).unwrap_or("?"),
                        core::str::from_utf8(seq).unwrap_or("?"),
                        if next.is_none() { "%" } else { core::str::from_utf8(seq).unwrap_or("?") },
                    ));
                }
            }
        }
        i += 1;
    }
}

/// Hands `line` one line per option, `domalloc: option NAME=VALUE (where it came from)`, for
/// `DOMALLOC_VERBOSE=1` (each formatted on the stack).
pub(crate) fn print_all(line: &mut dyn FnMut(&[u8])) {
    let o = get();
    for (d, src) in TABLE.iter().zip(SOURCES.get().iter()) {
        let mut buf = [0u8; 384];
        let mut w = crate::sys::BufWriter::new(&mut buf);
        let _ = write!(w, "domalloc: option {}=", d.name);
        let _ = (d.show)(o, &mut w);
        let _ = match src {
            Source::Default => write!(w, " (default)"),
            Source::Environment => {
                let raw = getenv(d.name.as_bytes()).unwrap_or(b"");
                let mut shown = [0u8; 256];
                let mut sw = crate::sys::BufWriter::new(&mut shown);
                let _ = (d.show)(o, &mut sw);
                if sw.as_bytes() == raw {
                    write!(w, " (environment)")
                } else {
                    write!(w, " (environment: {})", core::str::from_utf8(&raw[..raw.len().min(128)]).unwrap_or("?"))
                }
            }
            Source::Malformed => {
                let raw = getenv(d.name.as_bytes()).unwrap_or(b"");
                write!(
                    w,
                    " (default; the environment's {} is not used: see the warning above)",
                    core::str::from_utf8(&raw[..raw.len().min(64)]).unwrap_or("?")
                )
            }
        };
        let _ = writeln!(w);
        line(w.as_bytes());
    }
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
        if TABLE.iter().any(|o| known(o.name))
            || NOT_ALLOCATOR_OPTIONS.iter().any(|n| known(n))
            || is_test_variable(name)
        {
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
        let mut m = NodeMask::empty();
        m.insert(1);
        m.insert(3);
        assert_eq!(parse_policy(b"preferred:1,3"), Some((Policy::PreferredMany(m), 0)));
        assert_eq!(parse_policy(b"preferred:3-3"), Some((Policy::Preferred(3), 0)));
        assert_eq!(parse_policy(b"preferred:"), None);
        assert_eq!(Policy::PreferredMany(m).to_string(), "preferred:1,3");
        assert!(parse_policy(b"bind:").is_none());
        assert!(parse_policy(b"bogus").is_none());
        assert!(parse_policy(b"bind:5000").is_none());
    }

    #[test]
    fn tier_policies_parse() {
        assert_eq!(parse_tier(b"hbw"), Some(TierPolicy { budget: 0, below: 1 << 20 }));
        assert_eq!(parse_tier(b"hbw:512M"), Some(TierPolicy { budget: 512 << 20, below: 1 << 20 }));
        assert_eq!(parse_tier(b"hbw:1G<64K"), Some(TierPolicy { budget: 1 << 30, below: 64 << 10 }));
        assert_eq!(parse_tier(b"hbw<2M"), Some(TierPolicy { budget: 0, below: 2 << 20 }));
        for bad in [&b"hbw:"[..], b"hbw:0", b"hbw<0", b"hbwx", b"hbw:1M<", b"local"] {
            assert_eq!(parse_tier(bad), None, "{}", std::string::String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hbw_node_lists_parse() {
        assert_eq!(parse_node_list(b"4-5").map(|m| m.iter().collect::<std::vec::Vec<_>>()), Some(std::vec![4, 5]));
        assert_eq!(parse_node_list(b"2,3").map(|m| m.len()), Some(2));
        assert!(parse_node_list(b"").is_none());
        assert!(parse_node_list(b"x").is_none());
        assert!(parse_node_list(b"5000").is_none());
    }

    #[test]
    fn policies_print_as_they_parse() {
        for text in ["local", "bind:0-1", "preferred:3", "preferred:0-1,4", "interleave:0,2-4,7", "bind:5"] {
            let (p, _) = parse_policy(text.as_bytes()).unwrap();
            assert_eq!(p.to_string(), text);
            assert_eq!(parse_policy(p.to_string().as_bytes()).unwrap().0, p);
        }
    }
}
