//! The workloads. Each one does a fixed amount of work (scaled by `--scale`), so wall time
//! compares across allocators, and checks its own results: blocks carry stamps or full
//! patterns that are verified before they are freed, and a workload exits non-zero when any
//! check fails.

use crate::common::{Outcome, Params};

pub mod alloc_test;
pub mod barnes;
pub mod cache;
pub mod cfrac;
pub mod churn;
pub mod espresso;
pub mod glibc;
pub mod large;
pub mod larson;
pub mod malloc_large;
pub mod mleak;
pub mod mstress;
pub mod rptest;
pub mod sh6bench;
pub mod test_stress;
pub mod xmalloc;

/// One workload: its name, its `--help` text and its entry point.
pub struct Workload {
    /// Subcommand name.
    pub name: &'static str,
    /// One line: what it stresses.
    pub summary: &'static str,
    /// The full `--help` text (what it does, what it stresses, how it checks itself).
    pub help: &'static str,
    /// Runs it; `Err` is a failed self-check or a bad parameter.
    pub run: fn(&Params) -> Result<Outcome, String>,
    /// The workload-specific options it takes (`load`, `iterations`, `object-size`).
    pub knobs: &'static [&'static str],
}

/// Every workload, in report order (the default set of `bench`).
pub const ALL: &[Workload] = &[
    larson::WORKLOAD,
    xmalloc::WORKLOAD,
    cache::SCRATCH,
    cache::THRASH,
    rptest::WORKLOAD,
    mstress::WORKLOAD,
    cfrac::WORKLOAD,
    sh6bench::WORKLOAD,
    large::WORKLOAD,
    malloc_large::WORKLOAD,
    mleak::WORKLOAD,
    barnes::WORKLOAD,
    espresso::WORKLOAD,
    glibc::SIMPLE,
    glibc::THREAD,
    alloc_test::ONE,
    alloc_test::MANY,
    test_stress::WORKLOAD,
    churn::WORKLOAD,
];

/// Finds a workload by name.
pub fn find(name: &str) -> Option<&'static Workload> {
    ALL.iter().find(|w| w.name == name)
}
