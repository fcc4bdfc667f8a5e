//! The domalloc allocator comparison suite.
//!
//! Three binaries live in this crate:
//!
//! * `workloads` — the classic allocator stress programs (larson, xmalloc, cache-scratch,
//!   cache-thrash, rptest, mstress, cfrac, sh6bench, large, mleak) and workloads in the shape of
//!   mimalloc-bench's real programs (barnes, espresso, glibc-simple, glibc-thread, alloc-test1,
//!   alloc-testN, test-stress), each a subcommand. It never
//!   sets a global allocator: every allocation goes through the C `malloc`/`free`/`realloc`
//!   (directly through `libc`, or through `std::alloc::System` for the few Rust collections),
//!   which is exactly what `LD_PRELOAD=libfoo.so` replaces.
//! * `bench` — the runner: finds the allocators, runs every workload under every allocator,
//!   interleaving repetitions, measures wall time, CPU time and peak RSS of each child with
//!   `wait4`, and writes CSV, Markdown and SVG reports under `results/`; further parts give the
//!   contention report, the QEMU guest benchmark, real applications and the instruction report
//!   (malloc+free instructions per pair under callgrind).
//! * `hpc-app` — one hpcc, LAMMPS or other MPI run on N ranks under an allocator, with the
//!   inputs and checks of `bench --apps` (`runner::hpc`): `scripts/test-apps.sh` runs its
//!   scenarios with it.
//!
//! The modules here are shared by the binaries.

#![warn(missing_docs)]

pub mod callgrind;
pub mod chart;
pub mod common;
pub mod pin;
pub mod runner;
pub mod workloads;
