//! `domalloc run`, by running the real binary: every option reaches the program (as a
//! `DOMALLOC_*` variable or as the CPU binding it starts with), `-H` and `--show` print what
//! numactl users expect, and every kind of refusal is one line on stderr with exit status 1 and
//! the program not started. Multi-node cases use fake sysfs trees (`DOMALLOC_TOPOLOGY_ROOT`).

mod common;

use common::*;

/// Runs `domalloc run ARGS -- sh -c SCRIPT` with a harmless preload; returns stdout.
fn run_sh(args: &[&str], script: &str, envs: &[(&str, &str)]) -> String {
    let lib = harmless_lib();
    let mut all: Vec<&str> = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", script]);
    let mut e = vec![("DOMALLOC_LIB", lib.as_str())];
    e.extend_from_slice(envs);
    let o = run(&all, &e);
    let (out, err) = text(&o);
    assert!(o.status.success(), "domalloc {all:?}: {err}");
    out
}

const SHOW_ENV: &str = r#"printf '%s|%s|%s|%s|%s|%s|%s\n' "$DOMALLOC_POLICY" "$DOMALLOC_STATS" "$DOMALLOC_STATS_FILE" "$DOMALLOC_NUMA" "$DOMALLOC_VERBOSE" "$DOMALLOC_PURGE_DELAY" "$LD_PRELOAD""#;

#[test]
fn memory_options_become_the_policy_variable() {
    let lib = harmless_lib();
    // Node 0 has memory on every machine; `all` is checked below on a fake tree.
    let cases: [(&[&str], &str); 6] = [
        (&["--membind", "0"], "bind:0"),
        (&["--interleave", "0"], "interleave:0"),
        (&["-i", "0"], "interleave:0"),
        (&["--preferred", "0"], "preferred:0"),
        (&["-p", "0"], "preferred:0"),
        (&["--localalloc"], "local"),
    ];
    for (args, want) in cases {
        assert_eq!(run_sh(args, SHOW_ENV, &[]), format!("{want}||||||{lib}\n"), "{args:?}");
    }
    assert!(run_sh(&["-l"], SHOW_ENV, &[]).starts_with("local|"));
    assert!(run_sh(&["-m", "0"], SHOW_ENV, &[]).starts_with("bind:0|"));
    let (tree, _) = four_node_tree("policy");
    let sys = sys_of(&tree);
    let env = [("DOMALLOC_TOPOLOGY_ROOT", sys.as_str())];
    assert!(run_sh(&["-m", "all"], SHOW_ENV, &env).starts_with("bind:0-2|"));
    assert!(run_sh(&["-i", "!1"], SHOW_ENV, &env).starts_with("interleave:0,2|"));
    assert!(run_sh(&["--policy", "bind:2,0@64K"], SHOW_ENV, &env).starts_with("bind:0,2@64K|"));
    assert!(run_sh(&["--preferred", "2"], SHOW_ENV, &env).starts_with("preferred:2|"));
    assert!(run_sh(&["--policy", "interleave:all@1M"], SHOW_ENV, &env).starts_with("interleave:0-2@1M|"));
    assert!(run_sh(&["--set", "POLICY=bind:all"], SHOW_ENV, &env).starts_with("bind:0-2|"));
    let _ = std::fs::remove_dir_all(tree);
}

#[test]
fn other_options_become_variables() {
    let lib = harmless_lib();
    let out = run_sh(
        &["--stats=json", "--stats-file", "/tmp/s.%r.json", "--numa", "1", "--set", "purge_delay=0"],
        SHOW_ENV,
        &[],
    );
    assert_eq!(out, format!("|json|/tmp/s.%r.json|1||0|{lib}\n"));
    assert_eq!(run_sh(&["--stats"], SHOW_ENV, &[]), format!("|1|||||{lib}\n"));
    // --verbose: the variable, and the launcher says what it set.
    let o =
        run(&["run", "-v", "--membind", "0", "--", "sh", "-c", "echo $DOMALLOC_VERBOSE"], &[("DOMALLOC_LIB", &lib)]);
    let (out, err) = text(&o);
    assert_eq!(out, "1\n");
    assert!(err.contains("domalloc: run: DOMALLOC_POLICY=bind:0") && err.contains("LD_PRELOAD="), "{err}");
    // --lib wins over DOMALLOC_LIB, and an LD_PRELOAD already set is kept after it.
    let o = run(
        &["run", "--lib", &lib, "--", "sh", "-c", "echo $LD_PRELOAD"],
        &[("DOMALLOC_LIB", "/nonexistent.so"), ("LD_PRELOAD", "/lib/other.so")],
    );
    assert_eq!(text(&o).0, format!("{lib}:/lib/other.so\n"));
    // The program's own arguments are its own, and its exit status is the launcher's.
    let o = run(&["run", "sh", "-c", "echo \"$@\"; exit 7", "sh", "--membind", "9"], &[("DOMALLOC_LIB", &lib)]);
    assert_eq!(text(&o).0, "--membind 9\n");
    assert_eq!(o.status.code(), Some(7));
    let o = run(&["run", "--", "/nonexistent/program"], &[("DOMALLOC_LIB", &lib)]);
    assert_eq!(o.status.code(), Some(127));
}

fn cpus_of_child(args: &[&str], envs: &[(&str, &str)]) -> Vec<usize> {
    let out = run_sh(args, "grep Cpus_allowed_list /proc/self/status", envs);
    parse_cpu_list(out.split(':').nth(1).expect("Cpus_allowed_list line"))
}

#[test]
fn cpu_binding_is_what_the_program_starts_with() {
    let allowed = allowed_cpus();
    let first = allowed[0].to_string();
    assert_eq!(cpus_of_child(&["--physcpubind", &first], &[]), [allowed[0]]);
    assert_eq!(cpus_of_child(&["-C", "all"], &[]), allowed);
    assert_eq!(cpus_of_child(&["--cpunodebind", "0"], &[]).first(), Some(&allowed[0]), "node 0 holds CPU {first}?");
    // Nodes of a fake tree whose CPUs are this machine's allowed CPUs.
    let (tree, allowed) = four_node_tree("bind");
    let sys = sys_of(&tree);
    let env = [("DOMALLOC_TOPOLOGY_ROOT", sys.as_str())];
    assert_eq!(cpus_of_child(&["-N", "0"], &env), [allowed[0]]);
    if allowed.len() > 1 {
        assert_eq!(cpus_of_child(&["-N", "1"], &env), allowed[1..]);
        assert_eq!(cpus_of_child(&["-N", "0,1", "--membind", "1"], &env), allowed);
        let last = allowed.last().unwrap().to_string();
        assert_eq!(cpus_of_child(&["-C", &format!("{first},{last}")], &env), [allowed[0], *allowed.last().unwrap()]);
    }
    // Node 3's only CPU is not allowed: left out of `all`.
    assert_eq!(cpus_of_child(&["-N", "all"], &env), allowed);
    let _ = std::fs::remove_dir_all(tree);
}

#[test]
fn refusals_are_one_line_and_exit_1() {
    let (tree, allowed) = four_node_tree("refuse");
    let sys = sys_of(&tree);
    let marker = tree.join("ran");
    let touch = format!("touch {}", marker.display());
    let lib = harmless_lib();
    let cases: [(&[&str], &str); 16] = [
        (&["--membind", "7"], "--membind 7: node 7 does not exist (nodes: 0-3)"),
        (&["-m", "3"], "--membind 3: node 3 has no memory (nodes with memory: 0-2)"),
        (&["--interleave", "0,9"], "node 9 does not exist"),
        (&["-i", "3"], "node 3 has no memory"),
        (&["--preferred", "5"], "--preferred 5: node 5 does not exist"),
        (&["-p", "3"], "node 3 has no memory"),
        (&["-p", "0-1"], "expected one node"),
        (&["--policy", "bind:8"], "--policy bind:8: node 8 does not exist"),
        (&["--policy", "scatter:0"], "invalid policy"),
        (&["--membind", "zero"], "not a node list"),
        (&["--cpunodebind", "6"], "--cpunodebind 6: node 6 does not exist"),
        (&["-N", "2"], "node 2 has no CPUs"),
        (&["-N", "3"], "none of the CPUs of node(s) 3 (4000) is allowed"),
        (&["--physcpubind", "5000"], "--physcpubind 5000: CPU 5000 does not exist"),
        (&["-C", "4000"], "CPU 4000 is not allowed for this process"),
        (
            &["--set", "no_such_option=1"],
            "unknown option DOMALLOC_NO_SUCH_OPTION (the options: ENVIRONMENT in `man 3 domalloc`",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "sh", "-c", &touch]);
        let o = run(&all, &[("DOMALLOC_TOPOLOGY_ROOT", &sys), ("DOMALLOC_LIB", &lib)]);
        assert_refused(&o, want, &format!("{args:?}"));
        assert!(!marker.exists(), "{args:?}: the program ran");
    }
    // The real machine too: a node no machine has.
    assert_refused(
        &run(&["run", "--membind", "1000", "--", "true"], &[("DOMALLOC_LIB", &lib)]),
        "node 1000 does not exist",
        "real",
    );
    let not_allowed = (0..4096).find(|c| !allowed.contains(c)).unwrap().to_string();
    let o = run(&["run", "-C", &not_allowed, "--", "true"], &[("DOMALLOC_LIB", &lib)]);
    assert_refused(&o, &format!("CPU {not_allowed} "), "real CPU");
    // No library: one line too.
    let o = run(&["run", "--", "true"], &[("DOMALLOC_LIB", "/nonexistent/libdomalloc.so")]);
    assert_refused(&o, "/nonexistent/libdomalloc.so: no such library", "no library");
    // Usage errors are clap's (exit 2): two policies, two bindings, no command.
    for args in
        [&["run", "-m", "0", "-i", "0", "true"][..], &["run", "-N", "0", "-C", "0", "true"], &["run", "--stats"]]
    {
        assert_eq!(run(args, &[]).status.code(), Some(2), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(tree);
}

#[test]
fn hardware_like_numactl() {
    let (tree, allowed) = four_node_tree("hw");
    let sys = sys_of(&tree);
    let o = run(&["run", "-H"], &[("DOMALLOC_TOPOLOGY_ROOT", &sys)]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let spaced = |c: &[usize]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ");
    let want = format!(
        "available: 4 nodes (0-3)\n\
         node 0 cpus: {}\nnode 0 size: 1024 MB\nnode 0 free: 512 MB\n\
         node 1 cpus: {}\nnode 1 size: 2048 MB\nnode 1 free: 1024 MB\n\
         node 2 cpus: \nnode 2 size: 4096 MB\nnode 2 free: 2048 MB\n\
         node 3 cpus: 4000\nnode 3 size: 0 MB\nnode 3 free: 0 MB\n\
         node distances:\n\
         node    0   1   2   3\n   0:  10  21  31  41\n   1:  21  10  32  42\n   2:  31  32  10  43\n   3:  41  42  43  10\n",
        allowed[0],
        spaced(&allowed[1..])
    );
    assert_eq!(out, want);
    // This machine: as many nodes as sysfs lists, each with its CPUs and size.
    let o = run(&["run", "--hardware"], &[]);
    let (out, _) = text(&o);
    assert!(
        o.status.success()
            && out.starts_with("available: ")
            && out.contains("node 0 size: ")
            && out.contains("node distances:\n"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(tree);
}

#[test]
fn show_like_numactl() {
    let (tree, allowed) = four_node_tree("show");
    let sys = sys_of(&tree);
    let lib = harmless_lib();
    let env = [("DOMALLOC_TOPOLOGY_ROOT", sys.as_str()), ("DOMALLOC_LIB", lib.as_str())];
    let spaced = |c: &[usize]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ");
    let o = run(&["run", "--show"], &env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let nodes = if allowed.len() > 1 { "0 1" } else { "0" };
    assert_eq!(
        out,
        format!(
            "policy: default\npreferred node: current\nphyscpubind: {}\ncpubind: {nodes}\nnodebind: {nodes}\nmembind: 0 1 2\nLD_PRELOAD={lib}\n",
            spaced(&allowed)
        )
    );
    let o = run(&["run", "-s", "-N", "0", "--interleave", "0,2", "--stats"], &env);
    let out = text(&o).0;
    assert_eq!(
        out,
        format!(
            "policy: interleave\npreferred node: current\ninterleavemask: 0 2\nphyscpubind: {}\ncpubind: 0\nnodebind: 0\nmembind: 0 1 2\n\
             DOMALLOC_POLICY=interleave:0,2\nLD_PRELOAD={lib}\nDOMALLOC_STATS=1\n",
            allowed[0]
        )
    );
    let out = text(&run(&["run", "--show", "--preferred", "2"], &env)).0;
    assert!(out.starts_with("policy: preferred\npreferred node: 2\n"), "{out}");
    let out = text(&run(&["run", "--show", "--membind", "1,2"], &env)).0;
    assert!(out.contains("\nmembind: 1 2\n") && out.contains("DOMALLOC_POLICY=bind:1-2\n"), "{out}");
    // An inherited DOMALLOC_POLICY is what the program gets when no option sets one.
    let mut env2 = env.to_vec();
    env2.push(("DOMALLOC_POLICY", "bind:2"));
    let out = text(&run(&["run", "--show"], &env2)).0;
    assert!(out.starts_with("policy: bind\n") && out.contains("membind: 2\n"), "{out}");
    // --show refuses what run refuses.
    assert_refused(&run(&["run", "--show", "-m", "3"], &env), "node 3 has no memory", "show");
    let _ = std::fs::remove_dir_all(tree);
}
