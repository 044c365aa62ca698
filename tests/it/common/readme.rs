//! The README's own text, for tests that run its recipes as printed (so
//! the two cannot drift): its sections, fenced blocks and commands.

pub fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The text of the README section headed `heading` (up to the next `## `).
pub fn section(readme: &str, heading: &str) -> String {
    let (_, rest) = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has a {heading:?} section"));
    rest.split("\n## ").next().unwrap().to_string()
}

/// The fenced blocks of `lang` in `text`, in order.
pub fn blocks(text: &str, lang: &str) -> Vec<String> {
    text.split(&format!("```{lang}\n"))
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

/// The one block of `lang` in `text` that contains `needle`.
pub fn block_with(text: &str, lang: &str, needle: &str) -> String {
    let found: Vec<String> = blocks(text, lang)
        .into_iter()
        .filter(|b| b.contains(needle))
        .collect();
    assert_eq!(found.len(), 1, "one ```{lang} block with {needle:?}");
    found.into_iter().next().unwrap()
}

/// The shell commands of a block: comments and blank lines dropped.
pub fn commands(block: &str) -> Vec<String> {
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The line of `block` that starts with `prefix`, its comment dropped.
pub fn command(block: &str, prefix: &str) -> String {
    commands(block)
        .into_iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("the README block has a command starting {prefix:?}:\n{block}"))
}

/// Replace `from` by `to` in a README text, which must contain it.
#[track_caller]
pub fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in:\n{text}");
    text.replace(from, to)
}

/// The files of a block that holds one or more, each headed by a comment
/// line naming its path (`# /etc/systemd/system/app.socket`, maybe with a
/// `: what it is` after it): (path, content without the heading).
pub fn files(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if let Some(path) = line.strip_prefix("# /") {
            let path = path.split(':').next().unwrap().trim();
            out.push((format!("/{path}"), String::new()));
        } else if let Some((_, content)) = out.last_mut() {
            content.push_str(line);
            content.push('\n');
        } else {
            panic!("a README block's file has no `# /path` heading:\n{block}");
        }
    }
    out
}
