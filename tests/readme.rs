//! The README documents every allocator option in the options table, every variable the tools
//! and test harnesses read in the tools table, and nothing else named DOMALLOC_*.

/// Variables read by the launcher, the benchmark and the test harnesses, not by the allocator
/// (the allocator keeps the list: it does not warn about them).
const TOOL_VARIABLES: &[&str] = domalloc::options::NOT_ALLOCATOR_OPTIONS;

#[test]
fn readme_lists_every_option() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for o in domalloc::options::TABLE {
        let row = format!("| `{}` | `{}` |", o.name, o.default);
        assert!(readme.contains(&row), "README lacks the row for {} (default {})", o.name, o.default);
    }
    for v in TOOL_VARIABLES {
        assert!(readme.contains(&format!("| `{v}` |")), "README lacks the tools-table row for {v}");
        assert!(!domalloc::options::TABLE.iter().any(|o| o.name == *v), "{v} is an allocator option");
    }
    // The C header's own macros (version macros) may be named too.
    let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/domalloc.h")).unwrap();
    let macros: Vec<&str> =
        header.lines().filter_map(|l| l.strip_prefix("#define ")).filter_map(|l| l.split_whitespace().next()).collect();
    for word in readme.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("DOMALLOC_") && word.len() > "DOMALLOC_".len() {
            assert!(
                domalloc::options::TABLE.iter().any(|o| o.name == word)
                    || TOOL_VARIABLES.contains(&word)
                    || macros.contains(&word),
                "README mentions {word}, which is neither an option, a tool variable nor a macro of include/domalloc.h"
            );
        }
    }
}
