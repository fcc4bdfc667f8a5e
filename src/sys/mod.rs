//! Layer 7, the platform.
//!
//! The allocator's lock (`lock`), atomics swappable for loom's (`sync`), contention counters
//! (`contention`), no-alloc helpers (`util`), and `os`: the one `Os` trait and its implementations,
//! the only place that names a libc type or a system call. Other layers use only what this file
//! re-exports (`os` is its own face).

mod lock;
mod sync;
mod contention;
mod util;
pub(crate) mod os;

pub(crate) use lock::{ForkLock, ForkStage, Lock};
pub(crate) use sync::{AtomicUsize, Ordering, cas_retry};
pub(crate) use contention::{LockKind, Phase, in_phase, op, report_line, set_domain_lock_probe};
pub(crate) use util::{BufWriter, Bytes, SetOnce, edit_distance, for_each_in_list, parse_size, parse_u64, trim};
