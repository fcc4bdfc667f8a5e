//! The README's Rust code compiles and runs the way a program that depends on domalloc builds it.
//!
//! Read at run time (the README changes more often than this test): every ```` ```rust ```` block
//! of README.md becomes one binary of a generated crate that depends on this package by path,
//! built with cargo under `target/tmp/readme-snippets`, and run; `rust,no_run` blocks are only
//! built, `rust,ignore` blocks are skipped. A block without `fn main` is wrapped in one, as rustdoc
//! does.
//!
//! Every ```` ```toml ```` line `domalloc = ...` is one of the forms users are told to write, and
//! each must be true: the path form (`domalloc = { path = "../domalloc" }`) is the generated
//! crate's own dependency line, with this repository laid at that relative path; the git form's URL
//! is `repository` in Cargo.toml (the test cannot reach it); a version requirement
//! (`domalloc = "X.Y"`) must accept this package's version and, while the crate is not on
//! crates.io ([`PUBLISHED`]), say so on its line.
//!
//! `README_SNIPPETS_FILE=path/to/file.md` checks another file (README text before it is merged).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/markdown.rs"]
mod markdown;

use markdown::{blocks, Block};

/// `rust`, `rust,no_run`, `rust,ignore`, ... -> (is Rust, run it, skip it).
fn rust_kind(lang: &str) -> Option<(bool, bool)> {
    let mut parts = lang.split(',').map(str::trim);
    if parts.next() != Some("rust") {
        return None;
    }
    let attrs: Vec<&str> = parts.collect();
    Some((!attrs.contains(&"no_run"), attrs.contains(&"ignore")))
}

fn program(code: &str) -> String {
    if code.contains("fn main") {
        code.to_string()
    } else {
        let mut s = String::from("fn main() {\n");
        for l in code.lines() {
            let _ = writeln!(s, "    {l}");
        }
        s.push_str("}\n");
        s
    }
}

/// Whether the crate is on crates.io. While it is not, a README line `domalloc = "X.Y"` must say
/// so (`not on crates.io yet`).
const PUBLISHED: bool = false;

/// A README line that adds domalloc as a dependency.
#[derive(Debug, PartialEq)]
enum DepLine {
    /// `domalloc = "0.2"`.
    Version(String),
    /// `domalloc = { path = "../domalloc" }`: the path.
    Path(String),
    /// `domalloc = { git = "URL" }`: the URL.
    Git(String),
}

/// Reads `domalloc = ...` (comments after `#` ignored); `None` for other lines, `Err` for a form
/// this test does not know.
fn dep_line(line: &str) -> Option<Result<DepLine, String>> {
    let code = line.split('#').next().unwrap().trim();
    let value = code.strip_prefix("domalloc")?.trim_start().strip_prefix('=')?.trim();
    let quoted = |v: &str| v.strip_prefix('"').and_then(|v| v.split_once('"')).map(|(q, _)| q.to_string());
    if value.starts_with('"') {
        return Some(quoted(value).map(DepLine::Version).ok_or(format!("unclosed string: {line}")));
    }
    let inner = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')).map(str::trim);
    let Some(inner) = inner else { return Some(Err(format!("not a string or an inline table: {line}"))) };
    let mut found = None;
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let Some(v) = quoted(v.trim()) else { return Some(Err(format!("{k}: not a string: {line}"))) };
        found = match k.trim() {
            "path" => Some(DepLine::Path(v)),
            "git" => Some(DepLine::Git(v)),
            "version" => Some(DepLine::Version(v)),
            k => return Some(Err(format!("key {k} is not checked by this test: {line}"))),
        };
    }
    Some(found.ok_or(format!("an empty table: {line}")))
}

/// `repository = "..."` of this package's Cargo.toml.
fn repository(manifest: &str) -> String {
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("repository").and_then(|v| v.trim_start().strip_prefix('=')))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("Cargo.toml has a repository")
}

/// Whether the requirement `req` ("0.2", "0.2.0", "^0.2", "1") accepts `version` (Cargo's caret
/// rules).
fn caret_accepts(req: &str, version: &str) -> bool {
    let req: Vec<u64> = req.trim_start_matches('^').split('.').map(|p| p.parse().unwrap()).collect();
    let ver: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    // The leftmost non-zero component (or the last one given) must match; the rest is a minimum.
    let fixed = req.iter().position(|&c| c != 0).unwrap_or(req.len() - 1);
    for (i, &c) in req.iter().enumerate() {
        if i <= fixed && ver[i] != c {
            return false;
        }
        if i > fixed {
            return ver[i..] >= req[i..];
        }
    }
    true
}

#[test]
fn readme_rust_blocks_build_and_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::env::var_os("README_SNIPPETS_FILE").map(PathBuf::from).unwrap_or_else(|| root.join("README.md"));
    let text = std::fs::read_to_string(&readme).unwrap_or_else(|e| panic!("{}: {e}", readme.display()));
    let all = blocks(&text);

    // The dependency lines shown to users: each form true, and a path form to build with.
    let version = env!("CARGO_PKG_VERSION");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut path_line = None;
    for b in all.iter().filter(|b| b.lang == "toml") {
        for (i, l) in b.code.lines().enumerate() {
            let at = format!("{}:{}", readme.display(), b.line + 1 + i);
            match dep_line(l) {
                None => {}
                Some(Err(e)) => panic!("{at}: {e}"),
                Some(Ok(DepLine::Version(req))) => {
                    assert!(
                        caret_accepts(&req, version),
                        "{at}: `{}` does not accept this version {version}",
                        l.trim()
                    );
                    assert!(
                        PUBLISHED || l.contains("not on crates.io yet"),
                        "{at}: `{}`: the crate is not on crates.io; the line must say `not on crates.io yet`",
                        l.trim()
                    );
                }
                Some(Ok(DepLine::Git(url))) => {
                    assert_eq!(url, repository(&manifest), "{at}: the git URL is not Cargo.toml's repository");
                }
                Some(Ok(DepLine::Path(p))) => {
                    assert!(Path::new(&p).is_relative(), "{at}: `{}`: a path relative to the user's project", l.trim());
                    path_line.get_or_insert((l.split('#').next().unwrap().trim().to_string(), p));
                }
            }
        }
    }
    let (path_line, rel) =
        path_line.unwrap_or_else(|| panic!("{}: no ```toml line `domalloc = {{ path = ... }}`", readme.display()));

    let rust: Vec<(&Block, bool)> = all
        .iter()
        .filter_map(|b| match rust_kind(&b.lang) {
            Some((run, false)) => Some((b, run)),
            _ => None,
        })
        .collect();
    assert!(!rust.is_empty(), "{} has no ```rust block", readme.display());

    // One crate, one binary per block.
    // The crate depends on domalloc with the README's own line: this repository is linked where
    // that relative path points (the crate sits two folders deep, so `../x` stays inside `work`).
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-snippets");
    let krate = work.join("project/crate");
    let _ = std::fs::remove_dir_all(krate.join("src"));
    std::fs::create_dir_all(krate.join("src/bin")).unwrap();
    let dep = krate.join(&rel);
    assert!(
        Path::new(&rel).components().filter(|c| matches!(c, std::path::Component::ParentDir)).count() <= 2,
        "{}: `{path_line}`: the test lays out at most two levels up",
        readme.display()
    );
    if std::fs::read_link(&dep).ok().as_deref() != Some(root) {
        let _ = std::fs::remove_file(&dep);
        std::fs::create_dir_all(dep.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(root, &dep).unwrap();
    }
    let mut manifest = format!(
        "[package]\nname = \"readme-snippets\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\n{path_line}\n\n[workspace]\n"
    );
    for (i, (b, _)) in rust.iter().enumerate() {
        let name = format!("line{}", b.line);
        let _ = write!(manifest, "\n[[bin]]\nname = \"{name}\"\npath = \"src/bin/{name}.rs\"\n");
        let header = format!("// {}:{} (block {})\n", readme.display(), b.line, i + 1);
        std::fs::write(krate.join(format!("src/bin/{name}.rs")), header + &program(&b.code)).unwrap();
    }
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    // The workspace's lock file: the same dependency versions, nothing to resolve.
    if !krate.join("Cargo.lock").exists() {
        std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = work.join("target");
    let out = Command::new(&cargo)
        .arg("build")
        .arg("--bins")
        .arg("--manifest-path")
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the README's Rust blocks do not build ({}):\n{}",
        readme.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    for (b, run) in &rust {
        if !run {
            eprintln!("{}:{}: built (no_run)", readme.display(), b.line);
            continue;
        }
        let exe = target.join("debug").join(format!("line{}", b.line));
        let out = Command::new(&exe).output().expect("the snippet starts");
        assert!(
            out.status.success(),
            "{}:{}: the block fails ({}):\n{}{}",
            readme.display(),
            b.line,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}:{}: built and ran", readme.display(), b.line);
    }
}

#[test]
fn dependency_lines() {
    assert_eq!(dep_line(r#"domalloc = "0.2"    # not on crates.io yet"#), Some(Ok(DepLine::Version("0.2".into()))));
    assert_eq!(
        dep_line(r#"domalloc = { path = "../domalloc" }  # beside"#),
        Some(Ok(DepLine::Path("../domalloc".into())))
    );
    assert_eq!(dep_line(r#"domalloc = { git = "https://x/y" }"#), Some(Ok(DepLine::Git("https://x/y".into()))));
    assert_eq!(dep_line(r#"domalloc-tools = "1""#), None);
    assert_eq!(dep_line("[dependencies]"), None);
    assert!(dep_line(r#"domalloc = { git = "https://x/y", branch = "main" }"#).unwrap().is_err());
    assert!(dep_line("domalloc = 2").unwrap().is_err());
}

#[test]
fn caret_requirements() {
    assert!(caret_accepts("0.2", "0.2.0"));
    assert!(caret_accepts("0.2", "0.2.7"));
    assert!(caret_accepts("0.2.0", "0.2.3"));
    assert!(!caret_accepts("0.2.4", "0.2.3"));
    assert!(!caret_accepts("0.1", "0.2.0"));
    assert!(!caret_accepts("0.3", "0.2.0"));
    assert!(caret_accepts("1", "1.4.0"));
    assert!(!caret_accepts("1", "2.0.0"));
}
