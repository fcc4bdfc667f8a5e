//! `hpc-app`: one run of `runner::hpc` (hpcc, LAMMPS or another MPI program on N ranks under an
//! allocator, as `bench --apps` runs them), for `scripts/test-apps.sh`.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use domalloc_bench_suite::runner::hpc::{App, Run};

/// Runs hpcc, LAMMPS (or the MPI program after `--`) on N ranks under an allocator, as
/// `bench --apps` does: writes the inputs into DIR, runs there (output in DIR/output.txt),
/// checks the output and writes the deterministic results to DIR/results (identical under every
/// correct allocator). Exits 1 when the run or a check failed; stops it after 10 minutes.
#[derive(Parser, Debug)]
#[command(name = "hpc-app")]
struct Options {
    /// hpcc, lammps, or run (the program and arguments after `--`)
    #[arg(value_parser = ["hpcc", "lammps", "run"])]
    app: String,
    /// The run's directory (created)
    #[arg(long)]
    dir: PathBuf,
    /// MPI ranks
    #[arg(long, default_value_t = 2)]
    ranks: u32,
    /// OMP_NUM_THREADS of every rank (LAMMPS: with -sf omp when it has the OPENMP package)
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// The allocator's library, preloaded in every rank (each rank checks it is mapped)
    #[arg(long, value_name = "LIB")]
    preload: Option<PathBuf>,
    /// A variable for every rank
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = name_value)]
    env: Vec<(String, String)>,
    /// The program and its arguments (`run`)
    #[arg(last = true, required_if_eq("app", "run"))]
    program: Vec<String>,
}

fn name_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("takes NAME=VALUE")?;
    Ok((k.to_string(), v.to_string()))
}

fn main() -> ExitCode {
    let o = Options::parse();
    let app = match o.app.as_str() {
        "hpcc" => App::Hpcc,
        "lammps" => App::Lammps,
        _ => App::Program(o.program.clone()),
    };
    let run = Run { preload: o.preload, env: o.env, threads: o.threads, ..Run::new(app, o.ranks) };
    let r = run.run(&o.dir, Duration::from_secs(600));
    let what = format!("{} on {} rank(s)", o.app, o.ranks);
    match r.check {
        Ok((checked, results)) => {
            if let Err(e) = std::fs::write(o.dir.join("results"), &results) {
                println!("write {}/results: {e}", o.dir.display());
                return ExitCode::FAILURE;
            }
            print!("{results}");
            println!("{what}: {:.1} s, {checked}", r.measured.wall);
            ExitCode::SUCCESS
        }
        Err(why) => {
            let lines: Vec<&str> = r.output.lines().collect();
            lines[lines.len().saturating_sub(20)..].iter().for_each(|l| println!("  | {l}"));
            println!("FAILED {what} ({}): {why}", o.dir.display());
            ExitCode::FAILURE
        }
    }
}
