//! The README's Rust code compiles and runs the way a program that depends on domalloc builds it.
//!
//! Read at run time (the README changes more often than this test): every ```` ```rust ```` block
//! of README.md becomes one binary of a generated crate that depends on this package by path,
//! built with cargo under `target/tmp/readme-snippets`, and run; `rust,no_run` blocks are only
//! built, `rust,ignore` blocks are skipped. A block without `fn main` is wrapped in one, as rustdoc
//! does. Every ```` ```toml ```` line `domalloc = "X.Y"` must accept this package's version.
//!
//! `README_SNIPPETS_FILE=path/to/file.md` checks another file (README text before it is merged).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    code: String,
}

/// The fenced code blocks of a CommonMark text: an opening fence is three or more backticks
/// followed by an info string without backticks, the closing one as many backticks or more.
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
        match &mut open {
            None => {
                let info = &trimmed[ticks..];
                if ticks >= 3 && !info.contains('`') {
                    open = Some((ticks, Block { line: i + 1, lang: info.trim().to_string(), code: String::new() }));
                }
            }
            Some((n, b)) => {
                if ticks >= *n && trimmed[ticks..].trim().is_empty() {
                    out.push(open.take().unwrap().1);
                } else {
                    b.code.push_str(line);
                    b.code.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed ``` block");
    out
}

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

    // Version requirements shown to users accept this version.
    let version = env!("CARGO_PKG_VERSION");
    for b in all.iter().filter(|b| b.lang == "toml") {
        for l in b.code.lines() {
            if let Some(rest) = l.trim().strip_prefix("domalloc = \"") {
                let req = rest.split('"').next().unwrap();
                assert!(
                    caret_accepts(req, version),
                    "{}:{}: `domalloc = \"{req}\"` does not accept this version {version}",
                    readme.display(),
                    b.line
                );
            }
        }
    }

    let rust: Vec<(&Block, bool)> = all
        .iter()
        .filter_map(|b| match rust_kind(&b.lang) {
            Some((run, false)) => Some((b, run)),
            _ => None,
        })
        .collect();
    assert!(!rust.is_empty(), "{} has no ```rust block", readme.display());

    // One crate, one binary per block.
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-snippets");
    let krate = work.join("crate");
    let _ = std::fs::remove_dir_all(krate.join("src"));
    std::fs::create_dir_all(krate.join("src/bin")).unwrap();
    let mut manifest = format!(
        "[package]\nname = \"readme-snippets\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\ndomalloc = {{ path = {:?} }}\n\n[workspace]\n",
        root.display().to_string()
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
