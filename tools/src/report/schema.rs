//! The statistics document the allocator writes with `DOMALLOC_STATS=json` (schema in the
//! project's interface notes, `"domalloc_stats": 1`): reading it strictly (every documented key
//! present, with its type; unknown keys ignored, as the schema asks of consumers) and checking
//! its invariants.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

/// The schema version this tool reads.
pub const SCHEMA: u64 = 1;

/// One statistics document (one process, one rank).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StatsDoc {
    /// Schema version (1).
    pub domalloc_stats: u64,
    /// domalloc's version.
    pub version: String,
    /// Process id.
    pub pid: u64,
    /// MPI/Slurm rank; `null` when no rank variable was set.
    #[serde(deserialize_with = "nullable")]
    pub rank: Option<u64>,
    /// Host name.
    pub host: String,
    /// Seconds from start-up to the report.
    pub elapsed_s: f64,
    /// Whether the NUMA logic was on.
    pub numa: bool,
    /// Process-wide figures.
    pub process: Process,
    /// Sums over the nodes.
    pub totals: Counters,
    /// Per node (the node whose domain owns the blocks).
    pub nodes: Vec<NodeCounters>,
    /// Size classes ever used.
    pub classes: Vec<Class>,
    /// Large blocks.
    pub large: Blocks,
    /// Huge blocks.
    pub huge: Blocks,
}

/// `"process"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Process {
    /// Resident set now.
    pub rss_bytes: u64,
    /// Peak resident set.
    pub rss_peak_bytes: u64,
}

/// The counters of `"totals"` and of each node.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Counters {
    /// Blocks allocated.
    pub allocs: u64,
    /// Blocks freed.
    pub frees: u64,
    /// Blocks live now.
    pub live_blocks: u64,
    /// Bytes in use now.
    pub in_use_bytes: u64,
    /// High-water mark of `in_use_bytes`.
    pub in_use_peak_bytes: u64,
    /// Bytes mapped now.
    pub mapped_bytes: u64,
    /// High-water mark of `mapped_bytes`.
    pub mapped_peak_bytes: u64,
    /// Resident bytes (from /proc/self/numa_maps).
    pub resident_bytes: u64,
    /// Frees by a thread on the block's node.
    pub local_frees: u64,
    /// Frees by a thread on another node.
    pub remote_frees: u64,
    /// Blocks sent back to their node by a free on another node.
    pub went_home: u64,
    /// Bytes returned to the OS.
    pub purged_bytes: u64,
    /// Huge blocks served from the cache.
    pub huge_cache_hits: u64,
    /// Huge blocks that needed a new mapping.
    pub huge_cache_misses: u64,
}

impl Counters {
    /// The keys that add up over nodes (peaks do not), with their values.
    pub fn additive(&self) -> [(&'static str, u64); 12] {
        [
            ("allocs", self.allocs),
            ("frees", self.frees),
            ("live_blocks", self.live_blocks),
            ("in_use_bytes", self.in_use_bytes),
            ("mapped_bytes", self.mapped_bytes),
            ("resident_bytes", self.resident_bytes),
            ("local_frees", self.local_frees),
            ("remote_frees", self.remote_frees),
            ("went_home", self.went_home),
            ("purged_bytes", self.purged_bytes),
            ("huge_cache_hits", self.huge_cache_hits),
            ("huge_cache_misses", self.huge_cache_misses),
        ]
    }

    /// Remote frees as a share of all frees (`None` without frees).
    pub fn remote_share(&self) -> Option<f64> {
        let frees = self.local_frees + self.remote_frees;
        (frees > 0).then(|| self.remote_frees as f64 / frees as f64)
    }
}

/// One entry of `"nodes"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct NodeCounters {
    /// Node id.
    pub node: u64,
    /// The node's counters.
    #[serde(flatten)]
    pub counters: Counters,
}

/// One entry of `"classes"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Class {
    /// Class index.
    pub class: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Blocks allocated.
    pub allocs: u64,
    /// Blocks freed.
    pub frees: u64,
    /// Blocks live now.
    pub live_blocks: u64,
    /// Bytes in use now.
    pub in_use_bytes: u64,
    /// Spans of this class.
    pub spans: u64,
    /// Blocks those spans hold.
    pub capacity_blocks: u64,
}

/// `"large"` and `"huge"`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Blocks {
    /// Blocks allocated.
    pub allocs: u64,
    /// Blocks freed.
    pub frees: u64,
    /// Blocks live now.
    pub live_blocks: u64,
    /// Bytes in use now.
    pub in_use_bytes: u64,
}

/// A key that must be present but may be `null` (serde would let a plain `Option` be missing).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)
}

/// Reads one file. The error names the file and says what is wrong with it.
pub fn load(path: &Path) -> Result<StatsDoc, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if text.trim().is_empty() {
        return Err(format!("{shown}: empty file (the program may have died before writing its statistics)"));
    }
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{shown}: not valid JSON: {e}"))?;
    match value.get("domalloc_stats") {
        None => return Err(format!("{shown}: not a domalloc statistics file (no \"domalloc_stats\" key)")),
        Some(v) if v.as_u64() != Some(SCHEMA) => {
            return Err(format!("{shown}: unsupported \"domalloc_stats\": {v} (this tool reads version {SCHEMA})"))
        }
        Some(_) => {}
    }
    // Parse the text again (not the Value) so errors carry a line and column.
    serde_json::from_str(&text).map_err(|e| format!("{shown}: does not follow the statistics schema: {e}"))
}

/// The schema's invariants that `doc` breaks (empty: none).
pub fn invariant_violations(doc: &StatsDoc) -> Vec<String> {
    let mut bad = Vec::new();
    let mut blocks = |what: &str, allocs: u64, frees: u64, live: u64| {
        if allocs.checked_sub(frees) != Some(live) {
            bad.push(format!("{what}: allocs {allocs} - frees {frees} != live_blocks {live}"));
        }
    };
    let t = &doc.totals;
    blocks("totals", t.allocs, t.frees, t.live_blocks);
    for n in &doc.nodes {
        let c = &n.counters;
        blocks(&format!("node {}", n.node), c.allocs, c.frees, c.live_blocks);
    }
    for c in &doc.classes {
        blocks(&format!("class {}", c.class), c.allocs, c.frees, c.live_blocks);
    }
    blocks("large", doc.large.allocs, doc.large.frees, doc.large.live_blocks);
    blocks("huge", doc.huge.allocs, doc.huge.frees, doc.huge.live_blocks);
    for (i, (key, total)) in t.additive().iter().enumerate() {
        let sum: u64 = doc.nodes.iter().map(|n| n.counters.additive()[i].1).sum();
        if sum != *total {
            bad.push(format!("{key}: nodes sum to {sum}, totals say {total}"));
        }
    }
    if doc.process.rss_peak_bytes < doc.process.rss_bytes {
        bad.push(format!(
            "process: rss_peak_bytes {} < rss_bytes {}",
            doc.process.rss_peak_bytes, doc.process.rss_bytes
        ));
    }
    for (what, c) in std::iter::once(("totals".to_string(), t))
        .chain(doc.nodes.iter().map(|n| (format!("node {}", n.node), &n.counters)))
    {
        for (k, peak, now) in
            [("in_use", c.in_use_peak_bytes, c.in_use_bytes), ("mapped", c.mapped_peak_bytes, c.mapped_bytes)]
        {
            if peak < now {
                bad.push(format!("{what}: {k}_peak_bytes {peak} < {k}_bytes {now}"));
            }
        }
        if c.local_frees + c.remote_frees != c.frees {
            bad.push(format!(
                "{what}: local_frees {} + remote_frees {} != frees {}",
                c.local_frees, c.remote_frees, c.frees
            ));
        }
    }
    let by_kind: u64 = doc.classes.iter().map(|c| c.allocs).sum::<u64>() + doc.large.allocs + doc.huge.allocs;
    if by_kind != t.allocs {
        bad.push(format!("totals.allocs {} != classes + large + huge allocs {by_kind}", t.allocs));
    }
    let mut ids: Vec<u64> = doc.nodes.iter().map(|n| n.node).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        bad.push("a node appears twice in \"nodes\"".to_string());
    }
    bad
}
