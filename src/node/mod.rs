//! Layer 4, the nodes: one domain per NUMA node.
//!
//! Per-node segments and spans, purging (`domain`); huge blocks with their per-node cache (`huge`);
//! who places memory and asking the kernel where pages are (`placement`); placed blocks whose pages
//! are on another node than their span (`home_pool`). Other layers use only what this file
//! re-exports.

mod domain;
mod home_pool;
mod huge;
mod placement;

pub(crate) use domain::{
    affinity_within, domain, domain_slots, fork_locks, holds_a_domain_lock, init_span, node_of_cpu, set_table,
    solo_node, Domain, COUNTED_NODES, SPAN_UNIT,
};
pub(crate) use home_pool::{link_pooled, unlink_pooled};
#[cfg(feature = "hardened")]
pub(crate) use huge::flush_retired as huge_flush_retired;
pub(crate) use huge::{
    alloc as huge_alloc, alloc_placed as huge_alloc_placed, cache_age_ms as huge_cache_age_ms,
    check_live as huge_check_live, free as huge_free, realloc as huge_realloc, trim_slack as huge_trim_slack,
};
#[cfg(feature = "quarantine")]
pub(crate) use huge::{mark_freed as huge_mark_freed, retire as huge_retire};
pub(crate) use placement::{home_of, huge_by_policy, span_placement, tier_counts, BlockKind, Home};
