//! `domalloc run`: numactl's everyday options for a program under libdomalloc.
//!
//! Memory policies (`--membind`, `--interleave`, `--preferred`, `--localalloc`, `--policy`)
//! become `DOMALLOC_POLICY` for the allocator; CPU binding (`--cpunodebind`, `--physcpubind`) is
//! done by the launcher on itself (`sched_setaffinity`) before it executes the program in place,
//! so the allocator never pins anything. Nodes and CPUs are checked against the topology domalloc
//! detects (`DOMALLOC_TOPOLOGY_ROOT` is honoured, so fake sysfs trees work): one that does not
//! exist, a memory policy on a node without memory, or a CPU the process may not use is refused
//! with one line and exit status 1, as numactl does.

use std::path::{Path, PathBuf};

use crate::cli::RunArgs;
use crate::hardware::{self, Machine, ShowInput};
use crate::{format_list, parse_list, Failure};

/// What `domalloc run` will do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunPlan {
    /// The library to preload (as given; resolved by [`crate::find_library`]).
    pub lib: Option<PathBuf>,
    /// `DOMALLOC_*` variables to set, in order, each once.
    pub env: Vec<(String, String)>,
    /// The CPUs to bind to (already checked against the allowed CPUs), if binding was asked.
    pub cpus: Option<Vec<usize>>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

impl RunPlan {
    fn set(&mut self, name: &str, value: String) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value));
    }

    /// The value this plan sets for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The sysfs root the program's allocator will read: `--set TOPOLOGY_ROOT=...`, else
/// `$DOMALLOC_TOPOLOGY_ROOT`, else `/sys`.
pub fn topology_root(args: &RunArgs) -> Option<PathBuf> {
    let from_set = args.set.iter().rev().find_map(|s| {
        let (n, v) = s.split_once('=')?;
        let n = n.trim().to_ascii_uppercase();
        (n == "TOPOLOGY_ROOT" || n == "DOMALLOC_TOPOLOGY_ROOT").then(|| PathBuf::from(v))
    });
    from_set.or_else(|| std::env::var_os("DOMALLOC_TOPOLOGY_ROOT").filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// Builds the plan and checks every node and CPU against `m`.
pub fn plan(args: &RunArgs, m: &Machine) -> Result<RunPlan, Failure> {
    let mut plan = RunPlan { lib: args.lib.clone(), command: args.command.clone(), ..RunPlan::default() };
    if let Some(p) = memory_policy(args, m)? {
        plan.set("DOMALLOC_POLICY", p);
    }
    if let Some(v) = &args.numa {
        if !matches!(v.as_str(), "auto" | "0" | "1" | "on" | "off" | "true" | "false" | "yes" | "no") {
            return Err(format!("run: --numa {v}: expected auto, 0 or 1"));
        }
        plan.set("DOMALLOC_NUMA", v.clone());
    }
    if let Some(v) = &args.stats {
        if !matches!(v.as_str(), "1" | "text" | "json") {
            return Err(format!("run: --stats={v}: expected text or json"));
        }
        plan.set("DOMALLOC_STATS", v.clone());
    }
    if let Some(v) = &args.stats_file {
        plan.set("DOMALLOC_STATS_FILE", v.clone());
    }
    if args.verbose {
        plan.set("DOMALLOC_VERBOSE", "1".into());
    }
    for s in &args.set {
        let (n, v) = s.split_once('=').ok_or_else(|| format!("run: --set {s}: expected NAME=VALUE"))?;
        let n = n.trim().to_ascii_uppercase();
        let n = if n.starts_with("DOMALLOC_") { n } else { format!("DOMALLOC_{n}") };
        let known = domalloc::options::TABLE.iter().any(|o| o.name == n) || n == "DOMALLOC_STATS_FILE";
        if !known {
            return Err(format!("run: --set {s}: unknown option {n} (the options: ENVIRONMENT in `man 3 domalloc`, or \"Options\" in the README)"));
        }
        let v = if n == "DOMALLOC_POLICY" { checked_policy("--set POLICY", v, m)? } else { v.to_string() };
        plan.set(&n, v);
    }
    if let Some(text) = &args.cpunodebind {
        plan.cpus = Some(cpus_of_nodes("--cpunodebind", text, m)?);
    }
    if let Some(text) = &args.physcpubind {
        plan.cpus = Some(cpu_list("--physcpubind", text, m)?);
    }
    Ok(plan)
}

/// The `DOMALLOC_POLICY` value the memory options ask for (checked), if any.
fn memory_policy(args: &RunArgs, m: &Machine) -> Result<Option<String>, Failure> {
    if let Some(p) = &args.policy {
        return checked_policy("--policy", p, m).map(Some);
    }
    if let Some(v) = &args.interleave {
        return Ok(Some(format!("interleave:{}", format_list(&memory_nodes(&format!("--interleave {v}"), v, m)?))));
    }
    if let Some(v) = &args.membind {
        return Ok(Some(format!("bind:{}", format_list(&memory_nodes(&format!("--membind {v}"), v, m)?))));
    }
    if let Some(v) = &args.preferred {
        return Ok(Some(format!("preferred:{}", one_memory_node(&format!("--preferred {v}"), v, m)?)));
    }
    if let Some(v) = &args.hbw {
        let p = if v.is_empty() || v.starts_with('<') { format!("hbw{v}") } else { format!("hbw:{v}") };
        return checked_policy("--hbw", &p, m).map(Some);
    }
    if let Some(v) = &args.preferred_many {
        return Ok(Some(format!("preferred:{}", format_list(&memory_nodes(&format!("--preferred-many {v}"), v, m)?))));
    }
    Ok(args.localalloc.then(|| "local".to_string()))
}

/// Checks a policy text (`bind:1-2@1M`): its syntax, and its nodes against `m` (`all` expanded
/// to the nodes with memory). Returns it with the node list normalised.
fn checked_policy(opt: &str, p: &str, m: &Machine) -> Result<String, Failure> {
    let (body, tail) = p.find('@').map_or((p, ""), |i| p.split_at(i));
    // Errors about the nodes name the whole option: `--policy bind:8: node 8 does not exist`.
    let shown = format!("{opt} {p}");
    let normalised = match body.split_once(':') {
        Some(("bind", list)) => format!("bind:{}{tail}", format_list(&memory_nodes(&shown, list, m)?)),
        Some(("interleave", list)) => format!("interleave:{}{tail}", format_list(&memory_nodes(&shown, list, m)?)),
        Some(("preferred", list)) => format!("preferred:{}{tail}", format_list(&memory_nodes(&shown, list, m)?)),
        _ => p.to_string(),
    };
    if body.starts_with("hbw") {
        if domalloc::options::parse_tier(p.as_bytes()).is_none() {
            return Err(format!("run: {opt} {p}: invalid tier policy (expected hbw, hbw:BUDGET, hbw<SIZE or hbw:BUDGET<SIZE, e.g. hbw:16G<1M)"));
        }
        return Ok(p.to_string());
    }
    if domalloc::options::parse_policy(normalised.as_bytes()).is_none() {
        return Err(format!(
            "run: {opt} {p}: invalid policy (expected local, bind:NODES, preferred:NODES or interleave:NODES, optionally @SIZE)"
        ));
    }
    Ok(normalised)
}

/// Nodes for a memory policy: each must exist and have memory. `label` names the option in
/// errors (`--membind 7`, `--policy bind:8`).
fn memory_nodes(label: &str, text: &str, m: &Machine) -> Result<Vec<usize>, Failure> {
    let with_memory = m.memory_nodes();
    let ids = parse_list(text, &with_memory)
        .ok_or_else(|| format!("run: {label}: not a node list (expected e.g. 0-3, 0,2, !1 or all)"))?;
    if ids.is_empty() {
        return Err(format!("run: {label}: no nodes left"));
    }
    for &n in &ids {
        if !m.nodes.contains(&n) {
            return Err(format!("run: {label}: node {n} does not exist (nodes: {})", format_list(&m.nodes)));
        }
        if !with_memory.contains(&n) {
            return Err(format!(
                "run: {label}: node {n} has no memory (nodes with memory: {})",
                format_list(&with_memory)
            ));
        }
    }
    Ok(ids)
}

fn one_memory_node(label: &str, text: &str, m: &Machine) -> Result<usize, Failure> {
    match memory_nodes(label, text, m)?.as_slice() {
        [n] => Ok(*n),
        _ => Err(format!("run: {label}: expected one node")),
    }
}

/// The CPUs of `NODES` that this process may use: each node must exist and have CPUs, and at
/// least one of the CPUs must be allowed.
fn cpus_of_nodes(opt: &str, text: &str, m: &Machine) -> Result<Vec<usize>, Failure> {
    let with_cpus = m.cpu_nodes();
    let ids = parse_list(text, &with_cpus)
        .ok_or_else(|| format!("run: {opt} {text}: not a node list (expected e.g. 0-3, 0,2, !1 or all)"))?;
    if ids.is_empty() {
        return Err(format!("run: {opt} {text}: no nodes left"));
    }
    let mut cpus = Vec::new();
    for &n in &ids {
        if !m.nodes.contains(&n) {
            return Err(format!("run: {opt} {text}: node {n} does not exist (nodes: {})", format_list(&m.nodes)));
        }
        if !with_cpus.contains(&n) {
            return Err(format!(
                "run: {opt} {text}: node {n} has no CPUs (nodes with CPUs: {})",
                format_list(&with_cpus)
            ));
        }
        cpus.extend(m.cpus_of[&n].iter().copied());
    }
    cpus.sort_unstable();
    let usable: Vec<usize> = cpus.iter().copied().filter(|c| m.allowed.contains(c)).collect();
    if usable.is_empty() {
        return Err(format!(
            "run: {opt} {text}: none of the CPUs of node(s) {} ({}) is allowed for this process (allowed: {})",
            format_list(&ids),
            format_list(&cpus),
            format_list(&m.allowed)
        ));
    }
    Ok(usable)
}

/// CPUs given by id: each must exist and be allowed for this process (`all`: the allowed ones).
fn cpu_list(opt: &str, text: &str, m: &Machine) -> Result<Vec<usize>, Failure> {
    let ids = parse_list(text, &m.allowed)
        .ok_or_else(|| format!("run: {opt} {text}: not a CPU list (expected e.g. 0-3, 0,2, !1 or all)"))?;
    if ids.is_empty() {
        return Err(format!("run: {opt} {text}: no CPUs left"));
    }
    for &c in &ids {
        if !m.cpus.contains(&c) {
            return Err(format!("run: {opt} {text}: CPU {c} does not exist (CPUs: {})", format_list(&m.cpus)));
        }
        if !m.allowed.contains(&c) {
            return Err(format!(
                "run: {opt} {text}: CPU {c} is not allowed for this process (allowed: {})",
                format_list(&m.allowed)
            ));
        }
    }
    Ok(ids)
}

/// `domalloc run`: `-H`, `--show`, or bind, set the variables and execute the program.
pub fn main(args: &RunArgs) -> Result<u8, Failure> {
    let machine = Machine::detect(topology_root(args).as_deref())?;
    if args.hardware {
        print!("{}", hardware::hardware_report(&machine));
        return Ok(0);
    }
    let plan = plan(args, &machine)?;
    let lib = crate::find_library(plan.lib.as_deref());
    let preload = lib.as_ref().map(|l| crate::preload_value(l, std::env::var_os("LD_PRELOAD")));
    if args.show {
        let mut env = vec![(
            "LD_PRELOAD".to_string(),
            match &preload {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(e) => format!("(not found: {e})"),
            },
        )];
        env.extend(plan.env.iter().cloned());
        let inherited = std::env::var("DOMALLOC_POLICY").ok();
        let policy = plan.get("DOMALLOC_POLICY").or(inherited.as_deref());
        let cpus = plan.cpus.clone().unwrap_or_else(|| machine.allowed.clone());
        print!("{}", hardware::show_report(&machine, &ShowInput { policy, cpus: &cpus, env: &env }));
        return Ok(0);
    }
    let lib = lib?;
    if let Some(cpus) = &plan.cpus {
        crate::affinity::set(cpus).map_err(|e| format!("run: cannot bind to CPUs {}: {e}", format_list(cpus)))?;
    }
    exec(&plan, &lib, crate::preload_value(&lib, std::env::var_os("LD_PRELOAD")))
}

/// Replaces this process by the program, so its PID, signals and exit status are the program's
/// (as numactl). Returns only if that failed: 127 when the program was not found, else 126.
fn exec(plan: &RunPlan, lib: &Path, preload: std::ffi::OsString) -> Result<u8, Failure> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&plan.command[0]);
    cmd.args(&plan.command[1..]);
    cmd.env("LD_PRELOAD", preload);
    for (n, v) in &plan.env {
        cmd.env(n, v);
    }
    if plan.get("DOMALLOC_VERBOSE") == Some("1") {
        eprintln!("domalloc: run: LD_PRELOAD={}", lib.display());
        for (n, v) in &plan.env {
            eprintln!("domalloc: run: {n}={v}");
        }
        if let Some(c) = &plan.cpus {
            eprintln!("domalloc: run: CPUs {}", format_list(c));
        }
    }
    let e = cmd.exec();
    eprintln!("domalloc: run: cannot execute {}: {e}", plan.command[0]);
    Ok(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn machine() -> Machine {
        Machine {
            root: "/fake".into(),
            nodes: vec![0, 1, 2, 3],
            memory: [(0, 1 << 30), (1, 1 << 30), (2, 1 << 30), (3, 0)].into(),
            cpus_of: [(0, vec![0, 1]), (1, vec![2, 3]), (2, vec![]), (3, vec![4, 5])].into(),
            cpus: vec![0, 1, 2, 3, 4, 5],
            allowed: vec![0, 1, 2, 3, 4],
            ..Machine::default()
        }
    }

    fn plan_of(line: &str) -> Result<RunPlan, Failure> {
        let cli = crate::cli::Cli::try_parse_from(format!("domalloc run {line}").split_whitespace())
            .map_err(|e| e.to_string())?;
        match cli.command {
            crate::cli::Command::Run(a) => plan(&a, &machine()),
            _ => unreachable!(),
        }
    }

    #[test]
    fn options_become_variables() {
        let p = plan_of("--interleave=all --stats -- ls -l").unwrap();
        assert_eq!(p.env, [("DOMALLOC_POLICY".into(), "interleave:0-2".into()), ("DOMALLOC_STATS".into(), "1".into())]);
        assert_eq!(p.command, ["ls", "-l"]);
        let p = plan_of("--policy interleave:all@1M --stats=json --stats-file s.%r.json -v prog").unwrap();
        assert_eq!(p.get("DOMALLOC_POLICY"), Some("interleave:0-2@1M"));
        assert_eq!(p.get("DOMALLOC_STATS"), Some("json"));
        assert_eq!(p.get("DOMALLOC_STATS_FILE"), Some("s.%r.json"));
        assert_eq!(p.get("DOMALLOC_VERBOSE"), Some("1"));
        assert_eq!(p.command, ["prog"]);
        assert_eq!(plan_of("-m 2,0 x").unwrap().get("DOMALLOC_POLICY"), Some("bind:0,2"));
        assert_eq!(plan_of("-p 1 x").unwrap().get("DOMALLOC_POLICY"), Some("preferred:1"));
        assert_eq!(plan_of("--preferred-many 2,0 x").unwrap().get("DOMALLOC_POLICY"), Some("preferred:0,2"));
        assert_eq!(plan_of("--hbw x").unwrap().get("DOMALLOC_POLICY"), Some("hbw"));
        assert_eq!(plan_of("--hbw=16G<1M x").unwrap().get("DOMALLOC_POLICY"), Some("hbw:16G<1M"));
        assert_eq!(plan_of("--hbw=<64K x").unwrap().get("DOMALLOC_POLICY"), Some("hbw<64K"));
        assert_eq!(plan_of("--policy hbw:512M x").unwrap().get("DOMALLOC_POLICY"), Some("hbw:512M"));
        assert_eq!(plan_of("--policy preferred:all x").unwrap().get("DOMALLOC_POLICY"), Some("preferred:0-2"));
        assert_eq!(plan_of("-l x").unwrap().get("DOMALLOC_POLICY"), Some("local"));
        assert_eq!(plan_of("-i !1 x").unwrap().get("DOMALLOC_POLICY"), Some("interleave:0,2"));
        let p = plan_of("--set purge_delay=0 --lib /x/libdomalloc.so x").unwrap();
        assert_eq!(p.env, [("DOMALLOC_PURGE_DELAY".into(), "0".into())]);
        assert_eq!(p.lib, Some(PathBuf::from("/x/libdomalloc.so")));
        // The command's own options stay its own.
        assert_eq!(plan_of("prog --stats -m 9").unwrap().command, ["prog", "--stats", "-m", "9"]);
    }

    #[test]
    fn cpu_binding() {
        assert_eq!(plan_of("-N 1 x").unwrap().cpus, Some(vec![2, 3]));
        assert_eq!(plan_of("-N 3 x").unwrap().cpus, Some(vec![4]), "CPU 5 is not allowed: left out");
        assert_eq!(plan_of("-N all x").unwrap().cpus, Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(plan_of("-C 1,3 x").unwrap().cpus, Some(vec![1, 3]));
        assert_eq!(plan_of("-C all x").unwrap().cpus, Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(plan_of("x").unwrap().cpus, None);
    }

    #[test]
    fn refusals_are_one_line() {
        let cases = [
            ("--membind 7 x", "node 7 does not exist"),
            ("--membind 3 x", "node 3 has no memory"),
            ("--interleave 0,9 x", "node 9 does not exist"),
            ("--preferred 3 x", "node 3 has no memory"),
            ("--preferred 0-1 x", "expected one node"),
            ("--preferred-many 0,3 x", "node 3 has no memory"),
            ("--hbw=lots x", "invalid tier policy"),
            ("--policy bind:5 x", "node 5 does not exist"),
            ("--policy bogus x", "invalid policy"),
            ("--policy interleave:0@zz x", "invalid policy"),
            ("--membind x1 x", "not a node list"),
            ("--cpunodebind 2 x", "node 2 has no CPUs"),
            ("--cpunodebind 8 x", "node 8 does not exist"),
            ("--physcpubind 9 x", "CPU 9 does not exist"),
            ("--physcpubind 5 x", "CPU 5 is not allowed"),
            ("--set NOPE=1 x", "unknown option DOMALLOC_NOPE"),
            ("--set policy=bind:7 x", "node 7 does not exist"),
            ("--numa maybe x", "expected auto, 0 or 1"),
            ("--stats=xml x", "expected text or json"),
        ];
        for (line, want) in cases {
            let e = plan_of(line).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{line}: {e}");
        }
        // Usage errors are clap's.
        assert!(plan_of("--membind 0 --interleave 1 x").is_err());
        assert!(plan_of("-N 0 -C 1 x").is_err());
        assert!(plan_of("--stats").is_err(), "no command");
    }
}
