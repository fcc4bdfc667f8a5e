//! Layer 3, the arenas: memory between threads.
//!
//! Per-CPU and per-node queues of pages no heap owns and of parked empty spans (`queues`), and
//! returning memory to the OS: the maintenance sweep and the background purge thread (`purge`).
//! Other layers use only what this file re-exports.

mod purge;
mod queues;

pub(crate) use purge::{
    forget_purge_thread, free_span_list, maintain, page_queued, purge_thread_running, purge_wanted, set_heap_trim,
    sweep_all, thread_exited, thread_started,
};
pub(crate) use queues::{
    arena, arena_index, arena_node, cpus_of_node, fork_locks, node_arena, push_list, set_table, Arena,
};
