//! One direction of dependency: every file of `src/` uses only files of its own layer or of the
//! layers below it. The layers are the table in `src/lib.rs`'s module documentation (the one
//! place they are written down): rows `//! | N. name | files | job |`, layer 1 at the top. This
//! test reads that table and every `crate::...` path in the code of `src/` (comments and strings
//! aside), and fails naming each path that reaches up, and each file the table does not place.

use std::collections::BTreeMap;
use std::path::Path;

/// Layer number of each module file (`alloc` for `src/alloc.rs`, `os` for `src/os/*`).
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else { continue };
        let mut cells = row.split(" | ");
        let head = cells.next().unwrap_or("");
        let Some((num, _)) = head.split_once(". ") else { continue };
        let Ok(layer) = num.trim().parse::<usize>() else { continue };
        let files = cells.next().unwrap_or("");
        for f in files.split(',') {
            let f = f.trim().trim_matches('`');
            let module = f.trim_end_matches(".rs").trim_end_matches('/');
            if !module.is_empty() {
                map.insert(module.to_string(), layer);
            }
        }
    }
    map
}

/// The code of a Rust file without comments, string and char literals (so that doc text like
/// "see `crate::stats`" does not count as a dependency).
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

/// The crate modules a file's code names: `crate::x`, and `use crate::{x, y::z}`.
fn used_modules(code: &str) -> Vec<String> {
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

#[test]
fn no_file_imports_from_a_layer_above_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let table = layers(&lib);
    assert!(table.len() > 10, "the layer table in src/lib.rs was not found (rows `//! | N. name | files | job |`)");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "rs") {
            files.push((p.file_stem().unwrap().to_string_lossy().into_owned(), p));
        }
    }
    for entry in std::fs::read_dir(root.join("os")).unwrap() {
        files.push(("os".to_string(), entry.unwrap().path()));
    }
    let mut problems = Vec::new();
    for (module, path) in &files {
        let Some(&own) = table.get(module) else {
            problems.push(format!("{}: not in the layer table of src/lib.rs", path.display()));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(path).unwrap());
        for used in used_modules(&code) {
            match table.get(&used) {
                Some(&layer) if layer < own => problems.push(format!(
                    "{}: uses crate::{} (layer {}) from layer {}",
                    path.strip_prefix(&root).unwrap().display(),
                    used,
                    layer,
                    own
                )),
                Some(_) => {}
                // Not a module: an item of the crate root (`crate::collect`), i.e. of lib.rs.
                None => {
                    let lib_layer = table.get("lib").copied().unwrap_or(1);
                    if lib_layer < own {
                        problems.push(format!(
                            "{}: uses crate::{} (an item of lib.rs, layer {}) from layer {}",
                            path.strip_prefix(&root).unwrap().display(),
                            used,
                            lib_layer,
                            own
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "dependencies that run upwards:\n  {}", problems.join("\n  "));
}

#[test]
fn the_checker_sees_an_upward_import() {
    // The test above must be able to fail: a layer-7 file naming a layer-2 module is reported.
    let lib = "//! | 2. thread cache | `heap.rs` | x |\n//! | 7. platform | `util.rs` | y |\n";
    let table = layers(lib);
    assert_eq!(table.get("heap"), Some(&2));
    assert_eq!(table.get("util"), Some(&7));
    let code = code_only("// crate::heap in a comment\nuse crate::{heap::Heap, util};\nfn f() { crate::heap::x(); let s = \"crate::heap\"; }");
    let used = used_modules(&code);
    assert_eq!(used, ["heap", "util", "heap"]);
}
