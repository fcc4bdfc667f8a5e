//! `domalloc`: run a program with libdomalloc preloaded (numactl-style options), show the NUMA
//! topology, merge per-rank statistics.
//!
//! ```text
//! domalloc run [OPTIONS] [--] CMD [ARGS...]
//! domalloc run -H | --show [OPTIONS]
//! domalloc topo [--fsroot PATH]
//! domalloc report [--svg PATH] [--csv PATH] [--json] [--outlier-factor X] FILE...
//! domalloc lib
//! ```
//! See `domalloc help` and `domalloc help run`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = domalloc_tools::cli::Cli::parse();
    match domalloc_tools::main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("domalloc: {e}");
            ExitCode::from(1)
        }
    }
}
