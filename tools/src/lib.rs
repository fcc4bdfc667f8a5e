//! The `domalloc` command's logic: `run` (start a program with `libdomalloc.so` in `LD_PRELOAD`
//! and `DOMALLOC_*` options set), `topo` (the NUMA topology as hwloc sees it next to what the
//! allocator detected, and whether they agree) and `lib` (where the library is).
//!
//! hwlocality lives here and in tests only: the allocator never calls hwloc.

#![warn(missing_docs)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub mod topo;

/// Usage text.
pub const USAGE: &str = "\
usage:
  domalloc run [OPTIONS] [--] CMD [ARGS...]   run CMD with libdomalloc.so preloaded
  domalloc topo [--fsroot DIR]                NUMA topology: hwloc vs. domalloc's own detection
                                              (exit 1 if they disagree); DIR: a machine's tree
                                              saved by hwloc-gather-topology
  domalloc lib                                print the path of libdomalloc.so that `run` preloads
  domalloc help | --version

run options (each sets a DOMALLOC_* variable for CMD and its children):
  --policy P          DOMALLOC_POLICY: local | bind:NODES | preferred:N | interleave:NODES,
                      optionally @SIZE (policy for blocks of at least SIZE, e.g. interleave:all@1M)
  --interleave NODES  numactl-style: --policy interleave:NODES   (NODES: 0-3, 0,2, or all)
  --membind NODES     numactl-style: --policy bind:NODES
  --preferred N       numactl-style: --policy preferred:N
  --localalloc        numactl-style: --policy local
  --numa auto|0|1     DOMALLOC_NUMA
  --stats             DOMALLOC_STATS=1: per-node statistics on stderr at exit
  --verbose           DOMALLOC_VERBOSE=1: options and detected topology on stderr at start
  --set NAME=VALUE    any other option (NAME with or without the DOMALLOC_ prefix)
  --lib PATH          the library to preload (default: $DOMALLOC_LIB, else libdomalloc.so next
                      to this program or in ../lib)
";

/// Runs the command line `args` (without the program name). Returns the exit status to use.
pub fn main(args: &[String]) -> Result<u8, String> {
    match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("topo") => topo::main(&args[1..]),
        Some("lib") => {
            println!("{}", find_library(None)?.display());
            Ok(0)
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            Ok(0)
        }
        Some("--version" | "-V") => {
            println!("domalloc {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        _ => {
            eprint!("{USAGE}");
            Ok(2)
        }
    }
}

/// What `domalloc run` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunPlan {
    /// The library to preload (as given; resolved by [`find_library`]).
    pub lib: Option<PathBuf>,
    /// `DOMALLOC_*` variables to set, in order.
    pub env: Vec<(String, String)>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// Parses `domalloc run`'s arguments. `memory_nodes` expands the node list `all`.
pub fn parse_run(args: &[String], memory_nodes: &dyn Fn() -> String) -> Result<RunPlan, String> {
    let mut plan = RunPlan::default();
    let mut i = 0;
    let set = |plan: &mut RunPlan, name: &str, value: String| {
        plan.env.retain(|(n, _)| n != name);
        plan.env.push((name.to_string(), value));
    };
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') {
            break;
        }
        // `--opt=value` or `--opt value`.
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let value = |i: &mut usize| -> Result<String, String> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            *i += 1;
            args.get(*i).cloned().ok_or_else(|| format!("{name} needs a value"))
        };
        let nodes = |v: String| if v == "all" { memory_nodes() } else { v };
        match name {
            "--policy" => {
                let v = value(&mut i)?;
                let v = expand_all(&v, memory_nodes);
                set(&mut plan, "DOMALLOC_POLICY", v);
            }
            "--interleave" | "-i" => {
                let v = nodes(value(&mut i)?);
                set(&mut plan, "DOMALLOC_POLICY", format!("interleave:{v}"));
            }
            "--membind" | "-m" => {
                let v = nodes(value(&mut i)?);
                set(&mut plan, "DOMALLOC_POLICY", format!("bind:{v}"));
            }
            "--preferred" | "-p" => {
                let v = value(&mut i)?;
                set(&mut plan, "DOMALLOC_POLICY", format!("preferred:{v}"));
            }
            "--localalloc" | "-l" => set(&mut plan, "DOMALLOC_POLICY", "local".into()),
            "--numa" => {
                let v = value(&mut i)?;
                if !matches!(v.as_str(), "auto" | "0" | "1" | "on" | "off" | "true" | "false" | "yes" | "no") {
                    return Err(format!("--numa: expected auto, 0 or 1, got {v:?}"));
                }
                set(&mut plan, "DOMALLOC_NUMA", v);
            }
            "--stats" => set(&mut plan, "DOMALLOC_STATS", "1".into()),
            "--verbose" | "-v" => set(&mut plan, "DOMALLOC_VERBOSE", "1".into()),
            "--set" => {
                let v = value(&mut i)?;
                let (n, val) = v.split_once('=').ok_or_else(|| format!("--set: expected NAME=VALUE, got {v:?}"))?;
                let n = n.trim().to_ascii_uppercase();
                let n = if n.starts_with("DOMALLOC_") { n } else { format!("DOMALLOC_{n}") };
                if !domalloc::options::TABLE.iter().any(|o| o.name == n) {
                    return Err(format!("--set: unknown option {n} (see the README's option table)"));
                }
                set(&mut plan, &n, val.to_string());
            }
            "--lib" => plan.lib = Some(PathBuf::from(value(&mut i)?)),
            _ => return Err(format!("unknown option {a:?}\n{USAGE}")),
        }
        i += 1;
    }
    plan.command = args[i..].to_vec();
    if plan.command.is_empty() {
        return Err(format!("run: no command given\n{USAGE}"));
    }
    if let Some((_, p)) = plan.env.iter().find(|(n, _)| n == "DOMALLOC_POLICY") {
        if domalloc::options::parse_policy(p.as_bytes()).is_none() {
            return Err(format!(
                "invalid policy {p:?}: expected local, bind:NODES, preferred:N or interleave:NODES, optionally @SIZE"
            ));
        }
    }
    Ok(plan)
}

/// Replaces a node list `all` in a policy (`interleave:all@1M`) by the nodes with memory.
fn expand_all(policy: &str, memory_nodes: &dyn Fn() -> String) -> String {
    let (body, tail) = match policy.find('@') {
        Some(i) => policy.split_at(i),
        None => (policy, ""),
    };
    match body.split_once(':') {
        Some((kind, "all")) => format!("{kind}:{}{tail}", memory_nodes()),
        _ => policy.to_string(),
    }
}

/// The node ids with memory as a list (`0-3`, `0,2`), from domalloc's own detection.
pub fn memory_node_list() -> String {
    let Some(t) = domalloc::topology::Topology::detect(None) else { return "0".into() };
    let nodes: Vec<usize> = t.memory_nodes().iter().collect();
    format_list(&nodes)
}

/// Formats ascending ids as a compact list: `0-3,6,8-9`.
pub fn format_list(ids: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            let _ = write!(out, "{}-{}", ids[i], ids[j]);
        } else {
            let _ = write!(out, "{}", ids[i]);
        }
        i = j + 1;
    }
    if out.is_empty() {
        out.push('0');
    }
    out
}

/// Finds `libdomalloc.so`: `explicit`, else `$DOMALLOC_LIB`, else next to this program, in
/// `../lib` or `../lib64` from it (an installed prefix), or in `../deps` (a cargo target folder).
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return check_library(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("DOMALLOC_LIB").filter(|p| !p.is_empty()) {
        return check_library(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("libdomalloc.so"),
        dir.join("../lib/libdomalloc.so"),
        dir.join("../lib64/libdomalloc.so"),
        dir.join("../lib/domalloc/libdomalloc.so"),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    Err(format!(
        "libdomalloc.so not found next to {} (nor in ../lib); pass --lib PATH or set DOMALLOC_LIB \
         (build it with `cargo build --release -p domalloc-ffi`)",
        exe.display()
    ))
}

fn check_library(p: PathBuf) -> Result<PathBuf, String> {
    if !p.is_file() {
        return Err(format!("{}: no such library", p.display()));
    }
    // The dynamic loader wants an absolute path (the program may change directory first).
    Ok(p.canonicalize().unwrap_or(p))
}

/// `LD_PRELOAD` with `lib` first (kept once), followed by what was there.
pub fn preload_value(lib: &Path, existing: Option<OsString>) -> OsString {
    let lib_s = lib.as_os_str();
    let mut out = OsString::from(lib_s);
    if let Some(old) = existing {
        let old = old.to_string_lossy().into_owned();
        for part in old.split([' ', ':']).filter(|s| !s.is_empty()) {
            if Path::new(part) != lib {
                out.push(":");
                out.push(part);
            }
        }
    }
    out
}

fn run(args: &[String]) -> Result<u8, String> {
    let plan = parse_run(args, &memory_node_list)?;
    let lib = find_library(plan.lib.as_deref())?;
    let mut cmd = std::process::Command::new(&plan.command[0]);
    cmd.args(&plan.command[1..]);
    cmd.env("LD_PRELOAD", preload_value(&lib, std::env::var_os("LD_PRELOAD")));
    for (n, v) in &plan.env {
        cmd.env(n, v);
    }
    if plan.env.iter().any(|(n, v)| n == "DOMALLOC_VERBOSE" && v == "1") {
        eprintln!("domalloc: run: LD_PRELOAD={}", lib.display());
        for (n, v) in &plan.env {
            eprintln!("domalloc: run: {n}={v}");
        }
    }
    // Replace this process, so the PID, signals and exit status are the program's (as numactl).
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    eprintln!("domalloc: run: cannot execute {}: {e}", plan.command[0]);
    Ok(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn run_options_become_variables() {
        let all = || "0-3".to_string();
        let p = parse_run(&s(&["--interleave=all", "--stats", "--", "ls", "-l"]), &all).unwrap();
        assert_eq!(p.env, vec![("DOMALLOC_POLICY".into(), "interleave:0-3".into()), ("DOMALLOC_STATS".into(), "1".into())]);
        assert_eq!(p.command, s(&["ls", "-l"]));
        let p = parse_run(&s(&["--policy", "interleave:all@1M", "--verbose", "prog"]), &all).unwrap();
        assert_eq!(p.env[0].1, "interleave:0-3@1M");
        assert_eq!(p.command, s(&["prog"]));
        let p = parse_run(&s(&["--membind", "1", "--preferred", "2", "x"]), &all).unwrap();
        assert_eq!(p.env, vec![("DOMALLOC_POLICY".into(), "preferred:2".into())]);
        let p = parse_run(&s(&["--set", "purge_delay=0", "--lib", "/x/libdomalloc.so", "x"]), &all).unwrap();
        assert_eq!(p.env, vec![("DOMALLOC_PURGE_DELAY".into(), "0".into())]);
        assert_eq!(p.lib, Some(PathBuf::from("/x/libdomalloc.so")));
        assert!(parse_run(&s(&["--policy", "bogus", "x"]), &all).is_err());
        assert!(parse_run(&s(&["--set", "NOPE=1", "x"]), &all).is_err());
        assert!(parse_run(&s(&["--stats"]), &all).is_err());
        assert!(parse_run(&s(&["--what", "x"]), &all).is_err());
    }

    #[test]
    fn lists_and_preload() {
        assert_eq!(format_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(format_list(&[0, 2, 3, 5]), "0,2-3,5");
        assert_eq!(format_list(&[]), "0");
        let lib = Path::new("/a/libdomalloc.so");
        assert_eq!(preload_value(lib, None), OsString::from("/a/libdomalloc.so"));
        assert_eq!(
            preload_value(lib, Some("/b/x.so /a/libdomalloc.so:/c/y.so".into())),
            OsString::from("/a/libdomalloc.so:/b/x.so:/c/y.so")
        );
    }
}
