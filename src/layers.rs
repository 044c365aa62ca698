//! The layer map of docs/architecture.md, held against the code: every
//! `crate::` path in a file of one layer must name its own layer or one
//! that layer may import. Comments are skipped (a doc link is no import);
//! `super::` stays inside a folder and is not looked at.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The files at the crate root that every layer may use. They import
/// nothing but each other.
const BASE: [&str; 7] = [
    "clock",
    "error",
    "fault",
    "log",
    "passwd",
    "progress",
    "release_id",
];

/// Each layer, lowest first, and the layers it may import besides itself.
const LAYERS: [(&str, &[&str]); 8] = [
    ("base", &[]),
    ("fs", &["base"]),
    ("config", &["fs", "base"]),
    ("host", &["config", "fs", "base"]),
    ("state", &["host", "config", "fs", "base"]),
    ("staging", &["state", "host", "config", "fs", "base"]),
    ("activation", &["state", "host", "config", "fs", "base"]),
    (
        "cli",
        &[
            "activation",
            "staging",
            "state",
            "host",
            "config",
            "fs",
            "base",
        ],
    ),
];

/// The layer a module at the crate root belongs to; `None` for what is no
/// layer (a file only the crate root declares, such as this one).
fn layer_of(top: &str) -> Option<&'static str> {
    if BASE.contains(&top) {
        return Some("base");
    }
    LAYERS.iter().map(|(l, _)| *l).find(|l| *l == top)
}

/// The layer of a source file, from its path below src/.
fn file_layer(rel: &Path) -> Option<&'static str> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    layer_of(first.strip_suffix(".rs").unwrap_or(first))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first segment of every `crate::` path in `code` (outside comments),
/// with the line it is on; `use crate::{a, b}` gives `a` and `b`.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        for (i, _) in line.match_indices("crate::") {
            let before = line[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || "_:$".contains(c)) {
                continue; // `$crate::` or part of a longer path
            }
            let rest = &line[i + "crate::".len()..];
            let names = match rest.strip_prefix('{') {
                Some(group) => group_heads(group),
                None => vec![ident(rest)],
            };
            found.extend(
                names
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| (n + 1, s.to_string())),
            );
        }
    }
    found
}

/// The leading identifier of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !c.is_alphanumeric() && c != '_')
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of each item of a `use` group, `group` being what
/// follows its `{`: `a, b::{c, d}}` gives `a` and `b`.
fn group_heads(group: &str) -> Vec<&str> {
    let (mut heads, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                heads.push(ident(group[start..i].trim()));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(ident(group[start..i].trim()));
                start = i + 1;
            }
            _ => {}
        }
    }
    heads
}

/// Every import that breaks the map, as `file:line: layer -> layer (name)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let Some(from) = file_layer(rel) else {
            continue;
        };
        let allowed: BTreeSet<&str> = LAYERS
            .iter()
            .find(|(l, _)| *l == from)
            .map(|(l, may)| may.iter().copied().chain([*l]).collect())
            .unwrap();
        let code = std::fs::read_to_string(&file).unwrap();
        for (line, name) in crate_paths(&code) {
            let to = layer_of(&name).unwrap_or("an unknown module");
            if !allowed.contains(to) {
                bad.push(format!(
                    "src/{}:{line}: {from} imports {to} (crate::{name})",
                    rel.display()
                ));
            }
        }
    }
    bad
}

#[test]
fn every_import_goes_down_the_layer_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "imports against docs/architecture.md:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_folder_and_base_file_is_on_the_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let module = name.strip_suffix(".rs").unwrap_or(&name);
        if ["lib", "main", "layers"].contains(&module) {
            continue;
        }
        assert!(layer_of(module).is_some(), "src/{name} is on no layer");
    }
}

#[test]
fn paths_are_read_from_code_not_comments() {
    let code = "use crate::{log, state::{lock, pending}, fs};\n\
                // crate::cli in a comment\n\
                /// [`crate::staging`]\n\
                let x = crate::fs::dir::io_error(e, w); // crate::cli\n\
                $crate::error::usage(m)\n";
    let names: Vec<(usize, String)> = crate_paths(code);
    let want = [(1, "log"), (1, "state"), (1, "fs"), (4, "fs")];
    assert_eq!(
        names,
        want.map(|(n, s)| (n, s.to_string())).to_vec(),
        "{code}"
    );
}
