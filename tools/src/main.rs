//! `domalloc`: run a program with libdomalloc preloaded, or show the NUMA topology.
//!
//! ```text
//! domalloc run [OPTIONS] -- CMD [ARGS...]
//! domalloc topo [--fsroot DIR]
//! domalloc lib
//! ```
//! See `domalloc help` (or [`domalloc_tools::USAGE`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match domalloc_tools::main(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("domalloc: {e}");
            ExitCode::from(2)
        }
    }
}
