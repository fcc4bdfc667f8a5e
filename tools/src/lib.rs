//! The `domalloc` command's logic:
//!
//! - `run` ([`run`]): start a program with `libdomalloc.so` in `LD_PRELOAD`, numactl-style: memory
//!   policies become `DOMALLOC_POLICY` for the allocator, CPU binding (`-N`/`-C`) is done by the
//!   launcher on itself before `exec` (the allocator never pins), `-H` and `--show` print the
//!   hardware and what the program would get;
//! - `topo` ([`topo`]): the NUMA topology as hwloc sees it next to what the allocator detected, and
//!   precisely where they agree or not;
//! - `report` ([`report`]): merge per-rank statistics files (`DOMALLOC_STATS=json`) into a table,
//!   a CSV file, an SVG chart and a merged JSON summary, and flag outlier ranks;
//! - `lib`: where the library is.
//!
//! hwlocality lives here and in tests only: the allocator never calls hwloc.

#![warn(missing_docs)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub mod affinity;
pub mod cli;
pub mod fsroot;
pub mod hardware;
pub mod report;
pub mod run;
pub mod topo;

/// An error the command reports as one line (`domalloc: <message>`) before exiting with
/// status 1, as numactl does for nodes or CPUs that do not exist.
pub type Failure = String;

/// Runs the parsed command line. Returns the exit status to use.
pub fn main(cli: cli::Cli) -> Result<u8, Failure> {
    match cli.command {
        cli::Command::Run(args) => run::main(&args),
        cli::Command::Topo(args) => topo::main(&args),
        cli::Command::Report(args) => report::main(&args),
        cli::Command::Lib => {
            println!("{}", find_library(None)?.display());
            Ok(0)
        }
    }
}

/// Formats ascending ids as a compact list: `0-3,6,8-9` (`none` when empty).
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
        out.push_str("none");
    }
    out
}

/// Parses a numactl-style id list: `all`, `N`, `N-M` and commas between them (`0-3,6`); a
/// leading `!` takes every id of `all` except those listed. Returns the ids ascending, without
/// duplicates, or `None` if the text is not such a list.
pub fn parse_list(text: &str, all: &[usize]) -> Option<Vec<usize>> {
    let text = text.trim();
    let (invert, body) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut ids = std::collections::BTreeSet::new();
    if body == "all" {
        ids.extend(all.iter().copied());
    } else {
        for part in body.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if a > b || b >= 1 << 20 {
                return None;
            }
            ids.extend(a..=b);
        }
    }
    if invert {
        Some(all.iter().copied().filter(|i| !ids.contains(i)).collect())
    } else {
        Some(ids.into_iter().collect())
    }
}

/// Bytes in binary units with one decimal (`12.0 MiB`, `512 B`).
pub fn human_bytes(b: u64) -> String {
    bytesize::ByteSize(b).display().iec().to_string()
}

/// Finds `libdomalloc.so`: `explicit`, else `$DOMALLOC_LIB`, else next to this program, in
/// `../lib` or `../lib64` from it (an installed prefix).
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
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

fn check_library(p: PathBuf) -> Result<PathBuf, Failure> {
    if !p.is_file() {
        return Err(format!("{}: no such library", p.display()));
    }
    // The dynamic loader wants an absolute path (the program may change directory first).
    Ok(p.canonicalize().unwrap_or(p))
}

/// `LD_PRELOAD` with `lib` first (kept once), followed by what was there.
pub fn preload_value(lib: &Path, existing: Option<OsString>) -> OsString {
    let mut out = OsString::from(lib.as_os_str());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(format_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(format_list(&[0, 2, 3, 5]), "0,2-3,5");
        assert_eq!(format_list(&[]), "none");
        let all = [0, 1, 2, 3];
        assert_eq!(parse_list("all", &all), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_list("3,0-1", &all), Some(vec![0, 1, 3]));
        assert_eq!(parse_list("!1", &all), Some(vec![0, 2, 3]));
        assert_eq!(parse_list(" 7 ", &all), Some(vec![7]));
        for bad in ["", "x", "1-", "3-1", "1,,2", "-1", "0x1"] {
            assert_eq!(parse_list(bad, &all), None, "{bad:?}");
        }
    }

    #[test]
    fn bytes_and_preload() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1024.0 KiB");
        let lib = Path::new("/a/libdomalloc.so");
        assert_eq!(preload_value(lib, None), OsString::from("/a/libdomalloc.so"));
        assert_eq!(
            preload_value(lib, Some("/b/x.so /a/libdomalloc.so:/c/y.so".into())),
            OsString::from("/a/libdomalloc.so:/b/x.so:/c/y.so")
        );
    }
}
