//! Layer 6, the configuration: read-only after start-up.
//!
//! What start-up decided (`state`), the `DOMALLOC_*` options (`options`, public), CPUs, nodes and
//! tiers (`topology`, public). Other layers use only what this file re-exports.

pub mod options;
mod state;
pub mod topology;

pub(crate) use state::{elapsed_ms, numa_enabled, page_queries, policy, print_banner, set, Config};
