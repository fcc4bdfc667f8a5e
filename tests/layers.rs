//! The architecture of `src/`, checked: seven layers, one folder each, in the table of
//! `src/lib.rs`'s module documentation (rows `//! | N. name | `folder/` | faces | job |`, layer
//! 1 at the top). This test reads that table and
//! 1. every `crate::...` path in the code of `src/` (comments and strings aside): a file uses
//!    only its own layer and the layers below it (one direction of dependency);
//! 2. every folder's `mod.rs`: its modules are private except the ones the table names as faces
//!    beside `mod.rs` (the compiler then refuses any path into the insides from outside);
//! 3. every file of `src/` lies in a layer's folder (only `lib.rs` at the top).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Layer {
    number: usize,
    /// Modules `mod.rs` may declare non-private.
    faces: Vec<String>,
}

/// The layers by folder name (`thread` for `src/thread/`).
fn layers(lib: &str) -> BTreeMap<String, Layer> {
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else { continue };
        let cells: Vec<&str> = row.split(" | ").collect();
        let Some((num, _)) = cells[0].split_once(". ") else { continue };
        let Ok(number) = num.trim().parse::<usize>() else { continue };
        let folder = cells.get(1).unwrap_or(&"").trim().trim_matches('`').trim_end_matches('/').to_string();
        let faces = cells
            .get(2)
            .unwrap_or(&"")
            .split(',')
            .map(|f| f.trim().trim_matches('`').to_string())
            .filter(|f| !f.is_empty())
            .collect();
        if !folder.is_empty() {
            map.insert(folder, Layer { number, faces });
        }
    }
    map
}

/// The code of a Rust file without comments, string and char literals (so that doc text like
/// "see `crate::api::stats`" does not count as a dependency).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i + 1 < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // a char literal ('x' or '\n'); lifetimes ('a) are left alone
            i += if b[i + 1] == b'\\' { 4 } else { 3 };
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The first path segment after each `crate::` (`thread` for `crate::thread::Heap`), also in
/// `use crate::{a, b::c}`.
fn used_roots(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
        rest = after;
    }
    found
}

/// The modules a `mod.rs` declares and whether each is private: (name, private).
fn declared_modules(code: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for line in code.lines() {
        let t = line.trim();
        let (private, rest) = if let Some(r) = t.strip_prefix("mod ") {
            (true, r)
        } else if let Some(r) = t.strip_prefix("pub mod ").or_else(|| t.strip_prefix("pub(crate) mod ")) {
            (false, r)
        } else {
            continue;
        };
        if let Some(name) = rest.strip_suffix(';') {
            out.push((name.trim().to_string(), private));
        }
    }
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Everything wrong with the tree at `root` against the table in its `lib.rs`.
fn problems(root: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let table = layers(&lib);
    let mut problems = Vec::new();
    if table.len() < 5 {
        return vec![
            "the layer table in src/lib.rs was not found (rows `//! | N. name | `folder/` | faces | job |`)".into()
        ];
    }
    let mut files = Vec::new();
    rs_files(root, &mut files);
    for path in &files {
        let rel = path.strip_prefix(root).unwrap();
        let shown = rel.display().to_string();
        let folder = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let own = if rel == Path::new("lib.rs") {
            1
        } else if let Some(l) = table.get(&folder).filter(|_| rel.components().count() > 1) {
            l.number
        } else {
            problems.push(format!("{shown}: not in a layer's folder (the table of src/lib.rs)"));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(path).unwrap());
        for used in used_roots(&code) {
            match table.get(&used) {
                Some(l) if l.number < own => {
                    problems.push(format!("{shown}: uses crate::{used} (layer {}) from layer {own}", l.number))
                }
                Some(_) => {}
                None => {
                    // An item of the crate root (`crate::stats()`): lib.rs is layer 1.
                    if own > 1 {
                        problems
                            .push(format!("{shown}: uses crate::{used} (an item of lib.rs, layer 1) from layer {own}"));
                    }
                }
            }
        }
        if rel.file_name().is_some_and(|f| f == "mod.rs") && rel.components().count() == 2 {
            let faces = &table[&folder].faces;
            for (m, private) in declared_modules(&code) {
                if !private && !faces.contains(&m) {
                    problems.push(format!(
                        "{shown}: module `{m}` is not private, and the table names no such face of `{folder}/`"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn layers_are_folders_used_downwards_through_their_faces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = problems(&root);
    assert!(found.is_empty(), "the architecture of src/ is broken:\n  {}", found.join("\n  "));
}

#[test]
fn the_checker_sees_each_kind_of_break() {
    // The test above must be able to fail: an upward import, an open face, a stray file.
    let dir = std::env::temp_dir().join(format!("domalloc-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["thread", "sys"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("lib.rs"),
        "//! | 2. thread cache | `thread/` | | x |\n//! | 3. a | `a/` | | x |\n//! | 4. b | `b/` | | x |\n//! | 5. c | `c/` | | x |\n//! | 7. platform | `sys/` | `os` | y |\nmod thread;\nmod sys;\n",
    )
    .unwrap();
    std::fs::write(dir.join("thread/mod.rs"), "mod heap;\npub(crate) mod refill;\n").unwrap();
    std::fs::write(dir.join("thread/heap.rs"), "// crate::api in a comment\nuse crate::sys::Lock;\n").unwrap();
    std::fs::write(dir.join("sys/mod.rs"), "pub(crate) mod os;\nmod util;\n").unwrap();
    std::fs::write(dir.join("sys/util.rs"), "fn f() { crate::thread::free(); let s = \"crate::thread\"; }\n").unwrap();
    std::fs::write(dir.join("stray.rs"), "\n").unwrap();
    let mut found = problems(&dir);
    found.sort();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        found,
        [
            "stray.rs: not in a layer's folder (the table of src/lib.rs)",
            "sys/util.rs: uses crate::thread (layer 2) from layer 7",
            "thread/mod.rs: module `refill` is not private, and the table names no such face of `thread/`",
        ]
    );
}
