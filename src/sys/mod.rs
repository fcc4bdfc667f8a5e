//! Layer 7, the platform.
//!
//! The allocator's lock (`lock`), atomics swappable for loom's (`sync`), contention counters
//! (`contention`), no-alloc helpers (`util`), and `os`: the one `Os` trait and its implementations,
//! the only place that names a libc type or a system call. Other layers use only what this file
//! re-exports (`os` is its own face).

mod contention;
mod lock;
pub(crate) mod os;
mod sync;
mod util;

pub(crate) use contention::{
    event, in_phase, op, report_line, set_domain_lock_probe, syscall, Event, LockKind, Phase, Syscall,
};
pub(crate) use lock::{ForkLock, ForkStage, Lock};
pub(crate) use sync::{cas_retry, AtomicUsize, Ordering};
pub(crate) use util::{edit_distance, for_each_in_list, parse_size, parse_u64, trim, BufWriter, Bytes, SetOnce};
