//! The command line (clap derive). Node and CPU lists are taken as text here and checked against
//! the topology by [`crate::run`], so a node that does not exist is refused with one line and
//! exit status 1, as numactl does; clap's own usage errors exit with status 2.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// `domalloc`: run programs with libdomalloc preloaded, show the NUMA topology, merge statistics.
#[derive(Debug, Parser)]
#[command(name = "domalloc", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run CMD with libdomalloc.so preloaded and numactl-style placement options.
    Run(RunArgs),
    /// NUMA topology: hwloc vs. domalloc's own detection (exit 1 if they disagree).
    Topo(TopoArgs),
    /// Merge per-rank statistics files (DOMALLOC_STATS=json) into a table, CSV, SVG, JSON.
    Report(ReportArgs),
    /// Print the path of the libdomalloc.so that `run` preloads.
    Lib,
}

/// `domalloc run`. Memory policies become `DOMALLOC_POLICY` for the allocator; `-N`/`-C` bind
/// the launcher itself before it executes CMD (the allocator never pins threads).
#[derive(Debug, Default, Args)]
#[command(
    group(ArgGroup::new("mempolicy").args(["policy", "interleave", "membind", "preferred", "preferred_many", "hbw", "localalloc"])),
    group(ArgGroup::new("cpubind").args(["cpunodebind", "physcpubind"])),
    after_help = "NODES and CPUS: lists like 0-3, 0,2, all, or !1 (all but 1). Nodes must exist (and have \
memory for memory policies), CPUs must exist and be allowed: otherwise one line on stderr, exit 1.\n\
Exit status: CMD's own (domalloc executes it in place); 127 if CMD is not found."
)]
pub struct RunArgs {
    /// DOMALLOC_POLICY: local | bind:NODES | preferred:NODES | interleave:NODES, optionally @SIZE;
    /// or the tier policy hbw[:BUDGET][<SIZE]
    /// (only blocks of at least SIZE, e.g. interleave:all@1M).
    #[arg(long, value_name = "P")]
    pub policy: Option<String>,
    /// Interleave memory over NODES (DOMALLOC_POLICY=interleave:NODES).
    #[arg(short = 'i', long, value_name = "NODES")]
    pub interleave: Option<String>,
    /// Allocate only on NODES (DOMALLOC_POLICY=bind:NODES).
    #[arg(short = 'm', long, value_name = "NODES")]
    pub membind: Option<String>,
    /// Prefer NODE, fall back to others (DOMALLOC_POLICY=preferred:NODE).
    #[arg(short = 'p', long, value_name = "NODE")]
    pub preferred: Option<String>,
    /// Prefer NODES, the nearest of them first, fall back to others
    /// (DOMALLOC_POLICY=preferred:NODES; Linux 5.15's MPOL_PREFERRED_MANY).
    #[arg(long, value_name = "NODES")]
    pub preferred_many: Option<String>,
    /// The tier policy: blocks below SIZE (default 1M) on the nearest high-bandwidth node, up to
    /// BUDGET bytes per process, then on the thread's own node (DOMALLOC_POLICY=hbw[:BUDGET][<SIZE];
    /// `--hbw` alone: no budget, 1M).
    #[arg(long, value_name = "[BUDGET][<SIZE]", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub hbw: Option<String>,
    /// Allocate on the node of the CPU the thread runs on (DOMALLOC_POLICY=local).
    #[arg(short = 'l', long)]
    pub localalloc: bool,
    /// Run CMD only on the CPUs of NODES (the launcher binds itself, then executes CMD).
    #[arg(short = 'N', long, value_name = "NODES")]
    pub cpunodebind: Option<String>,
    /// Run CMD only on CPUS (the launcher binds itself, then executes CMD).
    #[arg(short = 'C', long, value_name = "CPUS")]
    pub physcpubind: Option<String>,
    /// Show the nodes, their CPUs and memory, and the distances (like `numactl -H`); then exit.
    #[arg(short = 'H', long)]
    pub hardware: bool,
    /// Show the policy and CPU binding CMD would get (like `numactl --show`); then exit.
    #[arg(short = 's', long)]
    pub show: bool,
    /// DOMALLOC_NUMA: auto | 0 | 1.
    #[arg(long, value_name = "auto|0|1")]
    pub numa: Option<String>,
    /// DOMALLOC_STATS: statistics at exit, `text` (the default) or `--stats=json`.
    #[arg(long, value_name = "FORMAT", num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    pub stats: Option<String>,
    /// DOMALLOC_STATS_FILE: write the statistics to PATH (%p pid, %r MPI rank, %h host, %% %).
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<String>,
    /// DOMALLOC_VERBOSE=1: options and detected topology on stderr at start.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Any other option (NAME with or without the DOMALLOC_ prefix); repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// The library to preload (default: $DOMALLOC_LIB, else libdomalloc.so next to this program
    /// or in ../lib).
    #[arg(long, value_name = "PATH")]
    pub lib: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present_any = ["hardware", "show"]
    )]
    pub command: Vec<String>,
}

/// `domalloc topo`.
#[derive(Debug, Default, Args)]
pub struct TopoArgs {
    /// Read another machine's tree instead of this machine's /sys: the NAME.tar.bz2 that
    /// hwloc-gather-topology writes, or a directory with sys/ and proc/ (that tarball unpacked).
    #[arg(long, value_name = "PATH")]
    pub fsroot: Option<PathBuf>,
}

/// `domalloc report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Statistics files, one per rank (DOMALLOC_STATS=json DOMALLOC_STATS_FILE=stats.%r.json).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Write a chart (memory per node per rank; local vs remote frees per rank) to PATH.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
    /// Write the table (one row per rank and node, plus the rank's totals) as CSV to PATH.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Print the merged summary as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// A rank is an outlier when its value is more than X times the median of the ranks (or
    /// less than 1/X of it) and more than 3 MADs from it.
    #[arg(long, value_name = "X", default_value_t = 1.5)]
    pub outlier_factor: f64,
    /// Treat a broken invariant of the schema (allocs - frees = live_blocks, nodes sum to the
    /// totals, peaks >= current values, ...) as an error instead of a warning.
    #[arg(long)]
    pub strict: bool,
    /// The FILEs are heap profiles (DOMALLOC_PROF=1): symbolise and merge them, print the top
    /// call sites (live at the peak, live at the end, allocated; remote-freed share); --svg
    /// draws a flame graph.
    #[arg(long)]
    pub prof: bool,
    /// With --prof: the view of the flame graph and --collapsed: peak (bytes live at the
    /// peak), live (at the end), alloc (allocated), remote (freed on another node).
    #[arg(long, value_name = "VIEW", default_value = "peak")]
    pub view: String,
    /// With --prof: rows of each top table.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// With --prof: write the view's symbolised collapsed stacks to PATH.
    #[arg(long, value_name = "PATH")]
    pub collapsed: Option<PathBuf>,
}
