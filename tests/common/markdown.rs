//! The fenced code blocks of a Markdown file, for the tests that run the README's blocks
//! (`tests/readme_snippets.rs` here, `tools/tests/readme_commands.rs`), each including this file
//! with `#[path]` (the `domalloc` package does not depend on the tools).

/// One fenced code block.
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The info string (`rust,no_run`, `sh`, ...).
    pub lang: String,
    /// Its lines, each ending with `\n`, without the fence's indentation.
    pub code: String,
}

/// The fenced code blocks of a CommonMark text: an opening fence is three or more backticks
/// followed by an info string without backticks, the closing one as many backticks or more.
/// Fences may be indented (as in a list item): that much indentation is taken off each line.
pub fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
        match &mut open {
            None => {
                let info = &trimmed[ticks..];
                if ticks >= 3 && !info.contains('`') {
                    let block = Block { line: i + 1, lang: info.trim().to_string(), code: String::new() };
                    open = Some((ticks, indent, block));
                }
            }
            Some((n, ind, b)) => {
                if ticks >= *n && trimmed[ticks..].trim().is_empty() {
                    out.push(open.take().unwrap().2);
                } else {
                    b.code.push_str(&line[indent.min(*ind)..]);
                    b.code.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed ``` block");
    out
}
