//! hpcc and LAMMPS under `mpirun`, in one place: inputs, command line and output checks, for
//! `bench --apps` and for `scripts/test-apps.sh` (through `src/bin/hpc-app.rs`).
//!
//! One set of inputs: hpcc's HPL with N = 1000, NB = 80 on a 1 x ranks grid (hpcc sizes its
//! other tests from it). N = 1000, not the benchmark's former 500: the test's results and the
//! README's hpcc profiles on 2 and 4 ranks are of N = 1000, and a longer run (a few seconds on
//! 2 ranks) is a steadier benchmark. LAMMPS' `bench/in.lj`: 4000 atoms, 100 steps, a thermo row
//! every 20 (the benchmark had 200 steps): 6 rows to compare.
//!
//! Every rank gets `OMP_NUM_THREADS` (1 unless asked) and `OPENBLAS_NUM_THREADS=1`, so results
//! do not depend on thread scheduling, and the allocator by `LD_PRELOAD` (never `mpirun`); a
//! preloaded rank first proves, with shell built-ins only, that the library is mapped into it.
//! A run passes when hpcc passes every verification it prints, or LAMMPS prints its 6 thermo
//! rows; its deterministic results (hpcc's verification lines, norms and sizes; LAMMPS' thermo
//! table) must be identical under every allocator.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::measure;

/// The program of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum App {
    /// HPC Challenge (`hpcc`).
    Hpcc,
    /// LAMMPS (`lmp`) on `in.lj`.
    Lammps,
    /// Any MPI program and its arguments: no inputs, no checks but its exit status.
    Program(Vec<String>),
}

/// One run of an app on `ranks` MPI ranks under an allocator.
#[derive(Clone, Debug)]
pub struct Run {
    /// The program.
    pub app: App,
    /// MPI ranks (`mpirun -np`).
    pub ranks: u32,
    /// `OMP_NUM_THREADS` of every rank (LAMMPS with more than one: `-sf omp` when it has the
    /// OPENMP package).
    pub threads: u32,
    /// The allocator's library, preloaded in every rank (none: glibc).
    pub preload: Option<PathBuf>,
    /// More variables for every rank.
    pub env: Vec<(String, String)>,
}

/// What a run gave.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `mpirun`'s measurements (its children are the ranks).
    pub measured: measure::Measured,
    /// Everything the run printed (`output.txt` in its directory).
    pub output: String,
    /// What was checked and the deterministic results, or why the run failed.
    pub check: Checked,
}

/// `Ok((what was checked, the deterministic results))` or `Err(why the run failed)`.
pub type Checked = Result<(String, String), String>;

const HPCCINF: &str = "HPLinpack benchmark input file
Innovative Computing Laboratory, University of Tennessee
HPL.out      output file name (if any)
8            device out (6=stdout,7=stderr,file)
1            # of problems sizes (N)
1000         Ns
1            # of NBs
80           NBs
0            PMAP process mapping (0=Row-,1=Column-major)
1            # of process grids (P x Q)
1            Ps
RANKS_Qs
16.0         threshold
1            # of panel fact
2            PFACTs (0=left, 1=Crout, 2=Right)
1            # of recursive stopping criterium
4            NBMINs (>= 1)
1            # of panels in recursion
2            NDIVs
1            # of recursive panel fact.
1            RFACTs (0=left, 1=Crout, 2=Right)
1            # of broadcast
1            BCASTs (0=1rg,1=1rM,2=2rg,3=2rM,4=Lng,5=LnM)
1            # of lookahead depth
1            DEPTHs (>=0)
2            SWAP (0=bin-exch,1=long,2=mix)
64           swapping threshold
0            L1 in (0=transposed,1=no-transposed) form
0            U  in (0=transposed,1=no-transposed) form
1            Equilibration (0=no,1=yes)
8            memory alignment in double (> 0)
##### This line (no. 32) is ignored (it serves as a separator). ######
0                      		Number of additional problem sizes for PTRANS
1200 10000 30000        	values of N
0                       	number of additional blocking sizes for PTRANS
40 9 8 13 13 20 16 32 64       	values of NB
";

const IN_LJ: &str = "# 3d Lennard-Jones melt (LAMMPS bench/in.lj; 10x10x10 fcc cells, 4000 atoms, 100 steps)
variable     x index 10
units        lj
atom_style   atomic
lattice      fcc 0.8442
region       box block 0 $x 0 $x 0 $x
create_box   1 box
create_atoms 1 box
mass         1 1.0
velocity     all create 1.44 87287 loop geom
pair_style   lj/cut 2.5
pair_coeff   1 1 1.0 1.0 2.5
neighbor     0.3 bin
neigh_modify delay 0 every 20 check no
fix          1 all nve
thermo       20
run          100
";

impl Outcome {
    /// Runs `cmd` in `dir` ([`measure::run_in`]) and `check`s what it printed when it exits 0.
    pub fn run(mut cmd: Command, dir: &Path, timeout: Duration, check: impl FnOnce(&str) -> Checked) -> Outcome {
        let (measured, output) = measure::run_in(&mut cmd, dir, timeout);
        let check = match measured.exit {
            measure::Exit::Code(0) => check(&output),
            _ => Err(super::compare::failure(&measured.exit, &output)),
        };
        Outcome { measured, output, check }
    }

    /// A run that could not start.
    pub fn failed(why: String) -> Outcome {
        Outcome { measured: measure::Measured::failed(why.clone()), output: why.clone(), check: Err(why) }
    }
}

/// Run by every preloaded rank as `sh -c RANK_CHECK sh LIBRARY PROGRAM ARGS...`: proves with
/// shell built-ins only (a child process would be a program of its own under the allocator)
/// that LIBRARY is mapped into the rank, then becomes the program.
const RANK_CHECK: &str = r#"lib=$1; shift; f=; while IFS= read -r l; do case $l in *"$lib"*) f=1;; esac; done </proc/$$/maps
[ -n "$f" ] || { echo "rank ${OMPI_COMM_WORLD_RANK:-?}: $lib is not loaded" >&2; exit 97; }; exec "$@""#;

/// Whether `prog` is on `PATH`.
pub fn have(prog: &str) -> bool {
    find(&[prog]).is_some()
}

/// The first of `names` on `PATH`.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

/// The LAMMPS program (Debian: `lmp`; other builds name it by their flavour).
pub fn lmp() -> Option<PathBuf> {
    find(&["lmp", "lmp_openmpi", "lmp_serial", "lmp_mpi"])
}

/// Whether this LAMMPS has the OPENMP package (`lmp -h` lists the installed packages).
fn lmp_has_openmp(lmp: &Path) -> bool {
    let out = Command::new(lmp).arg("-h").env_remove("LD_PRELOAD").stdin(Stdio::null()).output();
    let help = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    help.lines()
        .skip_while(|l| !l.starts_with("Installed packages"))
        .take_while(|l| !l.starts_with("List of"))
        .any(|l| l.split_whitespace().any(|w| w == "OPENMP"))
}

impl Run {
    /// A run of `app` on `ranks` ranks, one thread each, under glibc.
    pub fn new(app: App, ranks: u32) -> Run {
        Run { app, ranks, threads: 1, preload: None, env: Vec::new() }
    }

    /// The programs the run needs that are not installed.
    pub fn missing(&self) -> Vec<&'static str> {
        let needs = [("mpirun", true), ("hpcc", self.app == App::Hpcc), ("lmp", self.app == App::Lammps)];
        let found = |p: &str| if p == "lmp" { lmp().is_some() } else { have(p) };
        needs.iter().filter(|(p, needed)| *needed && !found(p)).map(|(p, _)| *p).collect()
    }

    /// Writes the app's inputs into `dir`.
    pub fn write_inputs(&self, dir: &Path) -> Result<(), String> {
        let (name, text) = match self.app {
            App::Hpcc => ("hpccinf.txt", HPCCINF.replace("RANKS_", &format!("{:<13}", self.ranks))),
            App::Lammps => ("in.lj", IN_LJ.to_string()),
            App::Program(_) => return Ok(()),
        };
        fs::write(dir.join(name), text).map_err(|e| format!("write {}: {e}", dir.join(name).display()))
    }

    /// The `mpirun` command line (run it in the directory of the inputs); notes on what it
    /// chose are printed.
    pub fn command(&self) -> Result<Command, String> {
        let mut cmd = Command::new("mpirun");
        // Idle ranks yield the CPU (the ranks may share cores with other work); shared memory
        // without the single-copy mechanism (it needs ptrace rights a container may lack).
        cmd.args(["--oversubscribe", "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism"])
            .args(["none", "--mca", "mpi_yield_when_idle", "1", "-np", &self.ranks.to_string()])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env_remove("LD_PRELOAD");
        let mut env =
            vec![("OMP_NUM_THREADS".into(), self.threads.to_string()), ("OPENBLAS_NUM_THREADS".into(), "1".into())];
        let lib = self.preload.as_ref().map(|p| fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display())));
        let lib = lib.transpose()?;
        env.extend(lib.iter().map(|p| ("LD_PRELOAD".into(), p.display().to_string())).chain(self.env.iter().cloned()));
        for (k, v) in &env {
            cmd.arg("-x").arg(format!("{k}={v}"));
        }
        if let Some(name) = lib.as_ref().and_then(|p| p.file_name()) {
            cmd.args(["sh", "-c", RANK_CHECK, "sh"]).arg(name);
        }
        match &self.app {
            App::Hpcc => _ = cmd.arg("hpcc"),
            App::Lammps => {
                let lmp = lmp().ok_or("no LAMMPS program (lmp) installed")?;
                cmd.arg(&lmp);
                if self.threads > 1 {
                    let omp = lmp_has_openmp(&lmp);
                    println!("{} has {}the OPENMP package", lmp.display(), if omp { "" } else { "no " });
                    if omp {
                        cmd.args(["-sf", "omp", "-pk", "omp", &self.threads.to_string()]);
                    }
                }
                cmd.args(["-in", "in.lj", "-log", "log.lammps", "-screen", "none"]);
            }
            App::Program(argv) => _ = cmd.args(argv),
        }
        Ok(cmd)
    }

    /// Writes the inputs into `dir` (created), runs the app there (output to `output.txt`;
    /// killed after `timeout`) and checks what it wrote.
    pub fn run(&self, dir: &Path, timeout: Duration) -> Outcome {
        let setup = fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()));
        match setup.and_then(|_| self.write_inputs(dir)).and_then(|_| self.command()) {
            Ok(cmd) => Outcome::run(cmd, dir, timeout, |_| self.check(dir)),
            Err(e) => Outcome::failed(e),
        }
    }

    /// Checks the output files of a run that exited 0 in `dir`: `Ok((what was checked, the
    /// deterministic results))`.
    pub fn check(&self, dir: &Path) -> Checked {
        let read = |f: &str| fs::read_to_string(dir.join(f)).map_err(|e| format!("{f}: {e}"));
        match self.app {
            App::Hpcc => {
                let out = read("hpccoutf.txt")?;
                let v = hpcc_results(&out);
                hpcc_passes(&out, &v)?;
                Ok((format!("every verification passed ({} result lines)", v.lines().count()), v))
            }
            App::Lammps => {
                let th = thermo_table(&read("log.lammps")?);
                let rows = th.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())).count();
                if rows != 6 {
                    return Err(format!("log.lammps: {rows} thermo rows, expected 6 (steps 0-100 by 20)"));
                }
                Ok((format!("{rows} thermo rows"), th))
            }
            App::Program(_) => Ok(("exit 0".into(), String::new())),
        }
    }
}

/// The keys of hpcc's summary section that do not depend on timing or on the clock (and
/// `(MPI)RandomAccess(_LCG)_(N|Errors|ErrorsFraction)`).
const HPCC_KEYS: &str = "Success CommWorldProcs HPL_N HPL_NB HPL_nprow HPL_npcol HPL_RnormI HPL_Anorm1 HPL_AnormI \
HPL_Xnorm1 HPL_XnormI HPL_BnormI DGEMM_N PTRANS_residual PTRANS_n PTRANS_nb STREAM_VectorSize FFT_N MPIFFT_N MPIFFT_maxErr";

fn hpcc_key(k: &str) -> bool {
    let ra = k.strip_prefix("MPI").unwrap_or(k).strip_prefix("RandomAccess_");
    HPCC_KEYS.split_whitespace().any(|x| x == k)
        || matches!(ra.map(|r| r.strip_prefix("LCG_").unwrap_or(r)), Some("N" | "Errors" | "ErrorsFraction"))
}

/// `Found <n> errors in` with the number.
fn found_errors(l: &str) -> Option<u64> {
    let rest = &l[l.find("Found ")? + 6..];
    let (n, tail) = rest.split_once(' ')?;
    tail.starts_with("errors in").then(|| n.parse().ok()).flatten()
}

/// hpcc's verification lines and deterministic results (timings and rates left out; DGEMM's
/// scaled residual too: its matrix is seeded from the clock): the same under every allocator.
pub fn hpcc_results(out: &str) -> String {
    let mut v = String::new();
    for l in out.lines() {
        let t = l.trim_start();
        if t.ends_with("...... PASSED")
            || t.ends_with("...... FAILED")
            || t.contains("tests completed and passed residual checks")
            || t.contains("tests completed and failed residual checks")
            || found_errors(t).is_some()
            || t.contains("Solution Validates")
            || t.contains("Failed Validation")
        {
            v += t;
            v.push('\n');
        }
    }
    // PTRANS's result table: the check column only.
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 8 && f[0] == "WALL" && (f[8] == "PASSED" || f[8] == "FAILED") {
            v += &format!("PTRANS {} {}\n", f[1..7].join(" "), [f[8], f.get(10).copied().unwrap_or("")].join(" "));
        }
    }
    let summary = out
        .lines()
        .skip_while(|l| !l.starts_with("Begin of Summary section"))
        .take_while(|l| !l.starts_with("End of Summary section"));
    for l in summary {
        if l.split_once('=').is_some_and(|(k, _)| hpcc_key(k)) {
            v += l;
            v.push('\n');
        }
    }
    v
}

/// hpcc passed every check it reports.
fn hpcc_passes(out: &str, results: &str) -> Result<(), String> {
    if !out.contains("End of Summary section") {
        return Err("hpccoutf.txt has no complete summary section".into());
    }
    if !results.lines().any(|l| l == "Success=1") {
        return Err("hpccoutf.txt: Success is not 1".into());
    }
    if !results.lines().any(|l| l.ends_with("...... PASSED")) {
        return Err("hpccoutf.txt: no HPL residual check PASSED".into());
    }
    let failed = |l: &str| {
        l.contains("FAILED")
            || l.contains("Failed Validation")
            || found_errors(l).is_some_and(|n| n > 0)
            || l.split_once(" tests completed and failed")
                .is_some_and(|(n, _)| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
            || l.split_once("_Errors=").is_some_and(|(_, n)| n.starts_with(|c: char| ('1'..='9').contains(&c)))
    };
    match results.lines().find(|l| failed(l)) {
        Some(l) => Err(format!("hpccoutf.txt: a check failed: {l}")),
        None => Ok(()),
    }
}

/// The thermo table of a LAMMPS log (from each `Step` header to `Loop time`), lines trimmed.
pub fn thermo_table(log: &str) -> String {
    let mut out = String::new();
    let mut on = false;
    for l in log.lines() {
        if l.trim_start().starts_with("Step") {
            on = true;
        } else if l.starts_with("Loop time") {
            on = false;
        }
        if on {
            out += l.trim();
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_command_line() {
        let dir = std::env::temp_dir().join(format!("hpc-inputs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        Run::new(App::Hpcc, 4).write_inputs(&dir).unwrap();
        let inf = fs::read_to_string(dir.join("hpccinf.txt")).unwrap();
        assert_eq!(inf.lines().count(), 36);
        assert!(inf.contains("\n1000         Ns\n") && inf.contains("\n4            Qs\n"), "{inf}");
        Run::new(App::Lammps, 2).write_inputs(&dir).unwrap();
        assert!(fs::read_to_string(dir.join("in.lj")).unwrap().contains("run          100"));
        let _ = fs::remove_dir_all(&dir);

        let lib = fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        let run = Run {
            env: vec![("DOMALLOC_STATS".into(), "json".into())],
            preload: Some(lib.clone()),
            ..Run::new(App::Program(vec!["./x".into(), "1".into()]), 4)
        };
        let args = run.command().unwrap().get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>();
        let line = args.join(" ");
        let env = format!("-x LD_PRELOAD={} -x DOMALLOC_STATS=json sh -c", lib.display());
        assert!(line.contains(&format!("-np 4 -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 {env}")), "{line}");
        assert!(line.ends_with(&format!("sh {} ./x 1", lib.file_name().unwrap().to_string_lossy())), "{line}");
    }

    #[test]
    fn hpcc_checks() {
        let out = "junk\n      ||Ax-b||_oo/(eps*(||A||_oo*||x||_oo+||b||_oo)*N)=   0.0123 ...... PASSED\n\
WALL   500   500  80  80   1   2     0.01 PASSED    0.316  0.00\n\
Found 0 errors in 4096 locations (passed).\n\
Begin of Summary section.\nVersionMajor=1\nSuccess=1\nHPL_N=1000\nHPL_Tflops=0.01\nRandomAccess_LCG_Errors=0\nMPIRandomAccess_N=1024\nEnd of Summary section.\n";
        let v = hpcc_results(out);
        assert_eq!(
            v,
            "||Ax-b||_oo/(eps*(||A||_oo*||x||_oo+||b||_oo)*N)=   0.0123 ...... PASSED\n\
Found 0 errors in 4096 locations (passed).\nPTRANS 500 500 80 80 1 2 PASSED 0.00\n\
Success=1\nHPL_N=1000\nRandomAccess_LCG_Errors=0\nMPIRandomAccess_N=1024\n"
        );
        assert_eq!(hpcc_passes(out, &v), Ok(()));
        let bad =
            [("Found 0 errors", "Found 3 errors"), ("LCG_Errors=0", "LCG_Errors=2"), ("=1\n", "=0\n"), ("End", "")];
        for (from, to) in bad {
            let bad = out.replace(from, to);
            assert!(hpcc_passes(&bad, &hpcc_results(&bad)).is_err(), "{to}");
        }
    }

    #[test]
    fn thermo() {
        let log = "x\n  Step Temp E_pair\n 0 1.44 -6.7\n 200 0.7 -5.6\nLoop time of 1.0 on 1 procs\nafter\n";
        assert_eq!(thermo_table(log), "Step Temp E_pair\n0 1.44 -6.7\n200 0.7 -5.6\n");
    }
}
