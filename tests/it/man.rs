//! `man/releasectl.1` is what `releasectl man` prints (see `src/manpage.rs`):
//! this test fails when the committed page is stale. The hand-written pages
//! are checked with `mandoc -T lint` here too, so a formatting slip fails
//! the build.

use crate::common::{self, BIN};
use std::path::{Path, PathBuf};
use std::process::Command;

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

/// The date on the committed page's `.TH` line: regenerated with it, an
/// unchanged page is byte-identical.
fn committed_date(page: &str) -> Option<String> {
    let th = page.lines().find(|l| l.starts_with(".TH "))?;
    th.split_whitespace().nth(3).map(str::to_string)
}

#[test]
fn releasectl_1_is_up_to_date() {
    let path = man_dir().join("releasectl.1");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let mut man = Command::new(BIN);
    man.arg("man");
    if let Some(date) = committed_date(&committed) {
        man.args(["--date", &date]);
    }
    let out = man.output().expect("run releasectl man");
    assert!(out.status.success(), "releasectl man failed: {out:?}");
    let fresh = String::from_utf8(out.stdout).expect("the page is UTF-8");
    assert!(
        committed == fresh,
        "{} is stale: regenerate it with `cargo run -q -- man > man/releasectl.1`",
        path.display()
    );
}

/// `mandoc -T lint` reports nothing on every page (style and warnings
/// included).
#[test]
#[ignore = "needs mandoc (installed by .ci/run; run with --include-ignored)"]
fn pages_are_lint_clean() {
    common::require_tool("mandoc");
    for page in ["releasectl.1", "releasectl.toml.5", "deploy@.service.8"] {
        let path = man_dir().join(page);
        assert!(path.is_file(), "{} is missing", path.display());
        let out = Command::new("mandoc")
            .args(["-T", "lint", "-W", "style"])
            .arg(&path)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && report.trim().is_empty(),
            "mandoc -T lint {page}:\n{report}"
        );
    }
}

/// What releasectl(1) says `--json` gives for several apps is what it
/// gives: the one envelope, the per-app reports under `result.apps` (it
/// once said "one JSON array").
#[test]
fn several_apps_under_json_are_described_as_they_are() {
    let page = std::fs::read_to_string(man_dir().join("releasectl.1")).unwrap();
    let flat = page.replace('\n', " ");
    assert!(
        !flat.contains("JSON array"),
        "releasectl.1 still says JSON array"
    );
    assert!(flat.contains("\\fBresult.apps\\fR lists the per\\-app reports"));
    let d = common::Dir::new();
    for app in ["api", "web"] {
        d.config(app, "root = \"{root}\"\n");
    }
    let doc = d.cmd_config().args(["--json", "status"]).ok().envelope();
    assert_eq!(doc["command"], "status", "{doc:#}");
    let apps = doc["result"]["apps"].as_array().expect("result.apps");
    assert_eq!(apps.len(), 2, "{doc:#}");
    assert_eq!(apps[1]["app"], "web", "{doc:#}");
}

/// `releasectl man | head -1`: a reader that went away is not an error.
/// The read end of stdout's pipe is closed before the run starts, so every
/// write of the page meets EPIPE (SIGPIPE is ignored by Rust programs):
/// exit 0, nothing on stderr (a `print!` panicked here, exit 101).
#[test]
fn man_page_to_a_closed_pipe_is_not_an_error() {
    to_a_closed_pipe(&["man"]);
}

/// The same for `releasectl completions bash | head`, which exited 1 with
/// "error: writing the completion script: Broken pipe".
#[test]
fn completions_to_a_closed_pipe_are_not_an_error() {
    for shell in ["bash", "zsh", "fish"] {
        to_a_closed_pipe(&["completions", shell]);
    }
}

#[track_caller]
fn to_a_closed_pipe(args: &[&str]) {
    let rounds = 3;
    let mut clean = 0;
    let mut seen = Vec::new();
    for _ in 0..rounds {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdout(writer)
            .output()
            .expect("run releasectl");
        if out.status.success() && out.stderr.is_empty() {
            clean += 1;
        } else {
            seen.push(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            ));
        }
    }
    assert_eq!(
        clean, rounds,
        "{args:?}: {clean} of {rounds} runs clean: {seen:?}"
    );
}
