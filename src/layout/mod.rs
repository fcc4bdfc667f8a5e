//! Layer 5, the layout: where metadata lives.
//!
//! 4 MiB segments and span descriptors, pointer to metadata in O(1) (`segment`); one span's blocks,
//! the encoded free lists and the remote-free hand-off (`page`); the lock-free remote-free word
//! (`remote`, also compiled by loom-model/); size classes (`size_class`, public); the intrusive
//! list (`list`). Other layers use only what this file re-exports.

mod codec;
mod list;
mod page;
mod remote;
mod segment;
pub mod size_class;

pub(crate) use codec::Codec;
pub(crate) use list::{Linked, List};
pub(crate) use page::{
    bump, collect, collect_remote, disown, extend, give_up, hold_back, in_free_lists, is_freed, is_unused, link_key,
    may_be_freed, pop, push_remote, reclaim, set_link_key, set_next, set_next_k, take_counts, Block, Page, PF_PLACED,
};
pub(crate) use segment::{
    big_aligned_segment, init_header, lookup, page_of, segmap_contains, segmap_set, segment_of, PageKind, Segment,
    SpanPlacement, LARGE_MAX, PAGES, PAGE_SHIFT, PAGE_SIZE, PLACEMENTS, SEGMENT_SIZE, SEG_HUGE, SEG_NORMAL, THP_SIZE,
};
