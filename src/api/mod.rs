//! Layer 1, the API: what programs call.
//!
//! The entry points shared by every API (`alloc`: size and alignment in, block out, `errno` on
//! failure), the C semantics of the malloc family (`c`), the node-targeted API (`node_api`: `Node`,
//! `Interleaved`, `alloc_on_node`, the high-bandwidth tier), and the statistics report (`stats`).
//! `lib.rs` is this layer's face to programs.

pub(crate) mod alloc;
pub mod c;
pub(crate) mod node_api;
pub mod stats;
