//! The README's shell commands, run, so that a false sentence fails.
//!
//! Every ```` ```sh ```` and ```` ```console ```` block of README.md is named in [`BLOCKS`] by the
//! start of its first line: run, or not run with the reason (a block missing from the list fails
//! the test: decide for it). What runs:
//!
//! - `sh` blocks as one bash script each (`set -e`), in a fresh folder that holds the programs and
//!   files the commands name (`app`, `solver`, `app.c`, `app.f90`, statistics files);
//! - `console` blocks command by command (`$ ...`), their output compared with the lines under
//!   them (a line `...` stands for any lines; a machine-specific tail "(...)" is compared only on
//!   the machine the comment names).
//!
//! The installation the commands use is made here: `ffi/install.sh` (with `NO_BUILD=1`) from
//! `libdomalloc.so`/`.a` built in release without LTO (minutes quicker than the README's
//! build) and this test's `domalloc` binary, into a prefix that stands for `/opt/domalloc`: the
//! one change made to the commands is that path. `domalloc` on `PATH` is that prefix's, and
//! `target/release/` in the folder points there too.
//!
//! `README_COMMANDS_FILE=path/to/file.md` checks another file (README text before it is merged).

mod common;
#[path = "../../tests/common/markdown.rs"]
mod markdown;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use markdown::{blocks, Block};

/// What to do with a block.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Run it as a bash script.
    Run,
    /// Run its `$` commands and compare their output.
    Console,
    /// Not run, for this reason.
    Skip(&'static str),
}

/// Every shell block of the README, by the start of its first line.
const BLOCKS: &[(&str, Plan)] = &[
    ("scripts/bench.sh ", Plan::Skip("the full benchmark (hours) and the full test suite (this test is part of it)")),
    (
        "cargo run --release --example global_allocator",
        Plan::Skip("release builds of the examples with LTO; scripts/test-site.sh (rust-examples) runs each this way"),
    ),
    (
        "ffi/install.sh /opt/domalloc",
        Plan::Skip("a release build with LTO; this test runs ffi/install.sh on a quicker build, scripts/test-site.sh on that one"),
    ),
    ("LD_PRELOAD=/opt/domalloc/lib/libdomalloc.so.0 ./app", Plan::Run),
    ("module use /opt/domalloc/share/modulefiles", Plan::Skip("needs Lmod; scripts/test-site.sh (lmod-modulefiles) runs these with real Lmod")),
    ("domalloc run -- ./app", Plan::Run),
    ("$ domalloc run --membind 7 -- ./app", Plan::Console),
    (
        "mpirun -np 64 -x LD_PRELOAD=/opt/domalloc/lib/libdomalloc.so.0 \\",
        Plan::Skip("an MPI job of 64 ranks; scripts/test-apps.sh runs MPI jobs with per-rank statistics and profiles"),
    ),
    ("$ mpirun -np 4 -x LD_PRELOAD=target/release/libdomalloc.so", Plan::Skip("LAMMPS on 4 MPI ranks; scripts/test-apps.sh runs it")),
    ("$ target/release/domalloc report tools/tests/data/job4/stats.*.json", Plan::Console),
    ("$ mpirun -np 2 -x LD_PRELOAD=target/release/libdomalloc.so", Plan::Skip("an MPI run of tests/c/prof_sites.c; scripts/test-ffi.sh prof runs it")),
    (
        "CARGO_TARGET_DIR=target/hardened cargo build",
        Plan::Skip("two release builds with LTO; scripts/test.sh tests both features (cargo test --features ...)"),
    ),
    ("scripts/qemu/run-guest.sh --binary", Plan::Skip("QEMU guests, minutes each; cargo test -p domalloc-numa-tests runs them")),
    ("scripts/qemu/run-guest.sh --topology 2n -- --tpn 1 11", Plan::Skip("a QEMU guest for 30 s; tests/guest.rs of numa-tests runs pattern 11")),
    ("cargo test -p domalloc-numa-tests --release", Plan::Skip("QEMU guests, minutes each; scripts/test.sh runs the first line")),
    ("cc app.c -ldomalloc", Plan::Run),
    (
        "mkdir -p target/sources && git archive",
        Plan::Skip("EasyBuild's real install; scripts/test-site.sh (easybuild) runs these lines as written"),
    ),
];

/// A line of a `Run` block that runs only on some machines, or never, or may exit with 1.
#[derive(Clone, Copy, Debug)]
enum LineRule {
    /// Not run: the reason.
    Never(&'static str),
    /// Run only where node 1 has memory and CPUs this process may use.
    NeedsNode1,
    /// Run only where CPUs 0 and 1 may be used.
    NeedsCpus01,
    /// Exit status 1 is what the README documents for some machines.
    MayExit1(&'static str),
}

/// By the start of the line (after `/opt/domalloc` is replaced).
const LINES: &[(&str, LineRule)] = &[
    ("mpirun -x LD_PRELOAD=", LineRule::Never("64 MPI ranks (and mpirun refuses root without its variables)")),
    ("domalloc run -N 1 --membind 1 ", LineRule::NeedsNode1),
    ("domalloc run --show -C 0-1 ", LineRule::NeedsCpus01),
    ("domalloc topo ", LineRule::MayExit1("exit status 1 when hwloc and domalloc differ")),
];

/// What the output of a `Run` block must hold, by the block's first line.
const EXPECT: &[(&str, &[&str])] = &[
    ("LD_PRELOAD=/opt/domalloc/lib/libdomalloc.so.0 ./app", &["app: malloc is domalloc's"]),
    (
        "domalloc run -- ./app",
        &["app: malloc is domalloc's", "domalloc: stats: pid", "agree:", "domalloc report: 4 rank(s)"],
    ),
    ("cc app.c -ldomalloc", &["app: malloc is domalloc's"]),
];

/// The user's program of the commands: says whose `malloc` it got (domalloc exports
/// `domalloc_node_of`, which knows only its own blocks).
const APP_C: &str = r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    void *p = malloc(100);
    int (*node_of)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "domalloc_node_of");
    int ours = p != NULL && node_of != NULL && node_of(p) >= 0;
    printf("app: malloc is %s\n", ours ? "domalloc's" : "not domalloc's");
    free(p);
    return 0;
}
"#;

const APP_F90: &str = "program app\n  print *, 'app: Fortran'\nend program app\n";

/// Lines joined where they end with `\`.
fn logical_lines(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in code.lines() {
        if let Some(head) = l.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(l);
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The machine the commands run on.
struct Machine {
    /// Nodes with memory.
    memory_nodes: Vec<usize>,
    /// Possible CPU ids, as the kernel lists them (`0-1`).
    possible_cpus: String,
    /// CPUs this process may use.
    allowed: Vec<usize>,
}

impl Machine {
    fn this() -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
        Machine {
            memory_nodes: common::parse_cpu_list(&read("/sys/devices/system/node/has_memory")),
            possible_cpus: read("/sys/devices/system/cpu/possible"),
            allowed: common::allowed_cpus(),
        }
    }

    fn node1_usable(&self) -> bool {
        let cpus = fs::read_to_string("/sys/devices/system/node/node1/cpulist").unwrap_or_default();
        self.memory_nodes.contains(&1) && common::parse_cpu_list(&cpus).iter().any(|c| self.allowed.contains(c))
    }

    /// Whether the machine is the one a console comment names (`# on a one-node machine`).
    fn matches(&self, comment: &str) -> bool {
        if comment.contains("one-node machine") {
            return self.memory_nodes.len() == 1;
        }
        if let Some(n) = comment
            .split("-CPU machine")
            .next()
            .and_then(|h| h.rsplit(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            return self.possible_cpus == if n == 1 { "0".to_string() } else { format!("0-{}", n - 1) };
        }
        true
    }
}

/// The folder the commands run in, with the installation they use.
struct Sandbox {
    dir: PathBuf,
    prefix: PathBuf,
    env: Vec<(String, String)>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn sh(script: &str, cwd: &Path, env: &[(String, String)]) -> std::process::Output {
    let mut c = Command::new("bash");
    c.arg("-c").arg(script).current_dir(cwd);
    for k in
        ["LD_PRELOAD", "DOMALLOC_LIB", "DOMALLOC_POLICY", "DOMALLOC_TOPOLOGY_ROOT", "DOMALLOC_STATS", "PKG_CONFIG_PATH"]
    {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("bash runs")
}

fn ok(o: &std::process::Output, what: &str) -> String {
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{what} failed ({}):\n{all}", o.status);
    all
}

impl Sandbox {
    /// Builds the libraries, installs them with the launcher, and lays out the folder.
    fn new() -> Sandbox {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-commands");
        let target = work.join("target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "--release", "--locked", "-p", "domalloc-ffi", "--manifest-path"])
            .arg(root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
            .output()
            .expect("cargo runs");
        ok(&out, "cargo build --release -p domalloc-ffi (no LTO)");
        fs::copy(env!("CARGO_BIN_EXE_domalloc"), target.join("release/domalloc")).unwrap();

        let prefix = work.join("opt-domalloc");
        let _ = fs::remove_dir_all(&prefix);
        let out = Command::new("bash")
            .arg(root().join("ffi/install.sh"))
            .arg(&prefix)
            .env("NO_BUILD", "1")
            .env("CARGO_TARGET_DIR", &target)
            .env("RPATH", "yes")
            .output()
            .expect("install.sh runs");
        ok(&out, "NO_BUILD=1 ffi/install.sh");

        let dir = work.join("cwd");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("target")).unwrap();
        std::os::unix::fs::symlink(prefix.join("bin"), dir.join("target/release")).unwrap();
        std::os::unix::fs::symlink(root().join("tools"), dir.join("tools")).unwrap();
        let path = format!("{}:{}", prefix.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        Sandbox { dir, prefix, env: vec![("PATH".into(), path)] }
    }

    /// A fresh copy of the user's files: `app` and `solver` built without domalloc, the sources,
    /// and statistics files for `domalloc report stats.*.json`.
    fn reset_files(&self) {
        let d = &self.dir;
        fs::write(d.join("app.c"), APP_C).unwrap();
        fs::write(d.join("app.f90"), APP_F90).unwrap();
        ok(&sh("cc -O1 app.c -o app && cp app solver && cp app app-built-for-memkind", d, &self.env), "cc app.c");
        for e in fs::read_dir(root().join("tools/tests/data/job4")).unwrap() {
            let p = e.unwrap().path();
            fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
        }
    }

    fn opt(&self) -> String {
        self.prefix.to_str().unwrap().to_string()
    }
}

/// A `Run` block as a bash script; returns it and the lines left out (with why).
fn script(code: &str, sb: &Sandbox, m: &Machine) -> (String, Vec<String>) {
    let mut s = String::from("set -eo pipefail\nset -x\n");
    let mut left_out = Vec::new();
    for line in logical_lines(code) {
        let line = line.replace("/opt/domalloc", &sb.opt());
        let t = line.trim_start();
        let rule = LINES.iter().find(|(start, _)| t.starts_with(start)).map(|(_, r)| *r);
        let skip = match rule {
            Some(LineRule::Never(why)) => Some(why.to_string()),
            Some(LineRule::NeedsNode1) if !m.node1_usable() => {
                Some("this machine has no node 1 with usable CPUs".into())
            }
            Some(LineRule::NeedsCpus01) if !(m.allowed.contains(&0) && m.allowed.contains(&1)) => {
                Some("CPUs 0 and 1 are not both usable here".into())
            }
            _ => None,
        };
        if let Some(why) = skip {
            left_out.push(format!("{t}  -- {why}"));
            continue;
        }
        if let Some(LineRule::MayExit1(why)) = rule {
            let _ = write!(s, "# may exit with 1: {why}\n{{\n{line}\n}} || [ $? -eq 1 ]\n");
        } else {
            s.push_str(&line);
            s.push('\n');
        }
    }
    (s, left_out)
}

/// One `$` command of a console block with its comment and the output shown under it.
struct ConsoleStep {
    command: String,
    comment: String,
    output: Vec<String>,
}

fn console_steps(code: &str) -> Vec<ConsoleStep> {
    let mut steps: Vec<ConsoleStep> = Vec::new();
    let mut continuing = false;
    for l in code.lines() {
        if let Some(cmd) = l.strip_prefix("$ ") {
            steps.push(ConsoleStep { command: String::new(), comment: String::new(), output: Vec::new() });
            continuing = true;
            add_command_line(steps.last_mut().unwrap(), cmd);
        } else if continuing {
            add_command_line(steps.last_mut().expect("a $ line first"), l.trim_start());
        } else {
            steps.last_mut().expect("a console block starts with a $ line").output.push(l.to_string());
        }
        continuing = continuing && l.ends_with('\\');
    }
    steps
}

fn add_command_line(step: &mut ConsoleStep, l: &str) {
    let (code, comment) = match l.find(" #") {
        Some(i) => (&l[..i], l[i + 2..].trim()),
        None => (l, ""),
    };
    let code = code.trim_end().strip_suffix('\\').unwrap_or(code.trim_end());
    step.command.push_str(code);
    step.command.push(' ');
    if !comment.is_empty() {
        step.comment = comment.to_string();
    }
}

/// Whether `actual` is `expected`, where an expected line starting with `...` (after spaces)
/// stands for any number of lines, and with `exact` false each line is compared up to its last
/// " (" (the machine-specific tail).
fn output_matches(expected: &[String], actual: &[&str], exact: bool) -> bool {
    let same = |e: &str, a: &str| {
        if exact {
            e == a
        } else {
            let cut = |s: &str| s.rfind(" (").map_or(s.len(), |i| i).min(s.len());
            e[..cut(e)] == a[..cut(a)]
        }
    };
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e.trim_start().starts_with("...") => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..], exact))
        }
        Some((e, rest)) => !actual.is_empty() && same(e, actual[0]) && output_matches(rest, &actual[1..], exact),
    }
}

#[test]
fn readme_shell_blocks_run() {
    let readme =
        std::env::var_os("README_COMMANDS_FILE").map(PathBuf::from).unwrap_or_else(|| root().join("README.md"));
    let text = fs::read_to_string(&readme).unwrap_or_else(|e| panic!("{}: {e}", readme.display()));
    let shell: Vec<Block> = blocks(&text).into_iter().filter(|b| b.lang == "sh" || b.lang == "console").collect();

    // Every block is decided for, and every entry of the list still names a block.
    let mut planned = Vec::new();
    for b in &shell {
        let first = b.code.lines().next().unwrap_or("");
        let plan = BLOCKS.iter().find(|(start, _)| first.starts_with(start)).map(|(_, p)| *p).unwrap_or_else(|| {
            panic!(
                "{}:{}: a ```{} block that tools/tests/readme_commands.rs does not know (first line {first:?}): \
                 add it to BLOCKS, to run or with the reason it is not run",
                readme.display(),
                b.line,
                b.lang
            )
        });
        planned.push((b, first, plan));
    }
    for (start, _) in BLOCKS {
        assert!(
            planned.iter().any(|(_, first, _)| first.starts_with(start)),
            "BLOCKS names {start:?}, which starts no ```sh or ```console block of {} any more",
            readme.display()
        );
    }

    let m = Machine::this();
    let sb = Sandbox::new();
    let mut ran = 0;
    for (b, first, plan) in &planned {
        let at = format!("{}:{}", readme.display(), b.line);
        match plan {
            Plan::Skip(why) => eprintln!("{at}: not run ({first}): {why}"),
            Plan::Run => {
                sb.reset_files();
                let (script, left_out) = script(&b.code, &sb, &m);
                let mut env = sb.env.clone();
                if first.starts_with("cc app.c -ldomalloc") {
                    // What `module load domalloc` sets, as the README says for this block.
                    let lib = sb.prefix.join("lib").display().to_string();
                    env.push(("LIBRARY_PATH".into(), lib.clone()));
                    env.push(("LD_LIBRARY_PATH".into(), lib));
                    env.push(("CPATH".into(), sb.prefix.join("include").display().to_string()));
                }
                let o = sh(&script, &sb.dir, &env);
                let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                assert!(o.status.success(), "{at}: the block fails ({}):\n{all}", o.status);
                assert!(
                    !all.contains("app: malloc is not domalloc's"),
                    "{at}: a program did not get domalloc's malloc:\n{all}"
                );
                for (start, wants) in EXPECT {
                    if first.starts_with(start) {
                        for w in *wants {
                            assert!(all.contains(w), "{at}: {w:?} is not in the output:\n{all}");
                        }
                    }
                }
                for l in &left_out {
                    eprintln!("{at}: line not run: {l}");
                }
                eprintln!("{at}: ran ({first})");
                ran += 1;
            }
            Plan::Console => {
                sb.reset_files();
                for step in console_steps(&b.code) {
                    let o = sh(&step.command, &sb.dir, &sb.env);
                    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                    let actual: Vec<&str> = all.lines().collect();
                    let exact = m.matches(&step.comment);
                    assert!(
                        output_matches(&step.output, &actual, exact),
                        "{at}: `{}`{} prints\n{all}\nnot what the README shows:\n{}",
                        step.command.trim(),
                        if exact { "" } else { " (compared up to each line's machine-specific \" (...)\")" },
                        step.output.join("\n")
                    );
                }
                eprintln!("{at}: ran, output as shown ({first})");
                ran += 1;
            }
        }
    }
    assert!(ran >= 4, "only {ran} blocks ran");
}

#[test]
fn console_output_matching() {
    let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(output_matches(&e(&["a", "  ...  (left out)", "z"]), &["a", "b", "c", "z"], true));
    assert!(output_matches(&e(&["a", "...", "z"]), &["a", "z"], true));
    assert!(!output_matches(&e(&["a", "z"]), &["a", "b", "z"], true));
    assert!(!output_matches(&e(&["x: 7 (nodes: 0)"]), &["x: 7 (nodes: 0-1)"], true));
    assert!(output_matches(&e(&["x: 7 (nodes: 0)"]), &["x: 7 (nodes: 0-1)"], false));
    assert!(!output_matches(&e(&["x: 7 (nodes: 0)"]), &["x: 8 (nodes: 0-1)"], false));
    let s = console_steps("$ a --x \\\n     --y   # on a 2-CPU machine\nout 1\n$ b\n");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].command.split_whitespace().collect::<Vec<_>>(), ["a", "--x", "--y"]);
    assert_eq!(s[0].comment, "on a 2-CPU machine");
    assert_eq!(s[0].output, ["out 1"]);
    assert_eq!(logical_lines("a \\\n  b\nc\n"), ["a    b", "c"]);
}
