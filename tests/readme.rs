//! The README documents every option in the options table, and nothing else named DOMALLOC_*.

#[test]
fn readme_lists_every_option() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for o in domalloc::options::TABLE {
        let row = format!("| `{}` | `{}` |", o.name, o.default);
        assert!(readme.contains(&row), "README lacks the row for {} (default {})", o.name, o.default);
    }
    for word in readme.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("DOMALLOC_") && word.len() > "DOMALLOC_".len() {
            assert!(
                domalloc::options::TABLE.iter().any(|o| o.name == word),
                "README mentions {word}, which is not an option"
            );
        }
    }
}
