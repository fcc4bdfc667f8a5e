//! `bench --numa`: the NUMA locality section (integration point, not implemented yet).
//!
//! The plan: for every allocator of the run, boot the QEMU guests with 2 and 4 emulated NUMA
//! nodes that the `numa-tests/` harness builds, run its locality patterns (remote frees back to
//! a thread, thread migration, thread turnover across nodes, calloc + parallel first touch,
//! origin-aware free) with `LD_PRELOAD=<allocator>` inside the guest, and report per allocator
//! and pattern the fraction of pages found on the expected node (`move_pages` with no target
//! nodes). The results become a "NUMA locality" section of results.md and extra CSV rows.
//!
//! Until the harness exposes an entry point, [`run_section`] only reports that the section is
//! pending, so `--numa` is accepted and clearly says it did nothing.

use super::allocators::Allocator;

/// Outcome of the NUMA section, for the Markdown report.
#[derive(Clone, Debug)]
pub enum NumaOutcome {
    /// `--numa` was not given.
    NotRequested,
    /// Requested, but the QEMU harness is not available yet (with the reason).
    Pending(String),
}

impl NumaOutcome {
    /// Markdown paragraph for the report.
    pub fn markdown(&self) -> String {
        match self {
            NumaOutcome::NotRequested => "Not run (pass `--numa`).\n".into(),
            NumaOutcome::Pending(why) => format!("Requested with `--numa` but not run: {why}\n"),
        }
    }
}

/// Runs the NUMA locality patterns for every allocator (once the harness exists).
///
/// Integration point: call the numa-tests harness here, once per allocator, passing
/// `a.path` (the library to preload in the guest; `None` = glibc) and collect its per-pattern
/// page-placement results.
pub fn run_section(allocs: &[Allocator]) -> NumaOutcome {
    let names: Vec<&str> = allocs.iter().map(|a| a.name.as_str()).collect();
    let why = "the QEMU locality harness (numa-tests/) has no runner entry point yet; \
               this hook (bench-suite/src/runner/numa.rs) will run its patterns per allocator";
    println!("NUMA section: SKIPPED for [{}]: {why}", names.join(", "));
    NumaOutcome::Pending(why.into())
}
