//! What hooks and health commands print reaches root's terminal escaped:
//! a deploy user's release file that `nginx -t` (here `cat`) shows cannot
//! retitle the terminal, clear it or overwrite a line with a CR.

use crate::common::{require_root, Dir, BIN};
use std::process::{Command, Stdio};

/// Escape sequences, BEL, CR tricks, a tab and bytes that are not UTF-8.
const BANNER: &[u8] = b"ok\x1b]0;pwned\x07\x1b[2J\rfake line\tTAB\xff\xfeend\n";

/// The hook's output as we must show it: the same text, escaped.
const SHOWN: &str = "ok\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\rfake line\tTAB\\xff\\xfeend";

/// v1 and v2, owned by the deploy user (uid 65534), who wrote `banner`
/// into v2; every hook phase and the health command print it on stdout
/// and on stderr.
fn scene() -> Dir {
    require_root("uid 65534 writes the release");
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    std::fs::write(d.path("releases/v1/banner"), "v1\n").unwrap();
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(d.root())
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg("printf \"$0\" > releases/v2/banner")
        .arg(octal(BANNER))
        .current_dir(d.root())
        .status()
        .unwrap();
    assert!(status.success(), "uid 65534 could not write the banner");
    let show = r#"["/bin/sh", "-c", "cat banner; cat banner >&2"]"#;
    d.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[hooks]\npre_activate = [{show}]\npost_swap = [{show}]\n\
             post_activate = [{show}]\n[health]\ncommand = {show}\n"
        ),
    );
    d
}

/// `bytes` as a printf format that writes them back.
fn octal(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:03o}")).collect()
}

/// Activate v2 with `flags`; stderr's raw bytes.
fn activate(d: &Dir, flags: &[&str]) -> Vec<u8> {
    let out = Command::new(BIN)
        .arg("--config-dir")
        .arg(d.etc())
        .args(flags)
        .args(["activate", "web:v2"])
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "activate failed: {out:?}");
    out.stderr
}

#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn hook_and_health_output_is_escaped() {
    let d = scene();
    let err = activate(&d, &[]);
    let text = String::from_utf8(err.clone())
        .unwrap_or_else(|e| panic!("stderr is not UTF-8 ({e}): {err:?}"));
    let raw: Vec<String> = [0x1b, 0x07, b'\r']
        .iter()
        .filter(|b| err.contains(b))
        .map(|b| format!("{b:#04x}"))
        .collect();
    assert!(raw.is_empty(), "raw {raw:?} in stderr: {text:?}");
    // Three hooks and the health check, each on stdout and stderr.
    let shown = text.lines().filter(|l| l.ends_with(SHOWN)).count();
    assert_eq!(shown, 8, "escaped banner lines in {text:?}");
    assert_eq!(d.current().as_deref(), Some("v2"));
}

/// `-q` prints errors only: the hooks' output is not shown.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn quiet_leaves_hook_output_out() {
    let d = scene();
    let err = activate(&d, &["-q"]);
    let text = String::from_utf8_lossy(&err);
    assert!(
        !text.contains("pwned") && !text.contains("fake line"),
        "{text:?}"
    );
}

/// A line without end is shown in bounded pieces, and a flood of output
/// is cut with a count of what was left out; the hook is not blocked.
#[test]
fn long_output_is_bounded() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.config(
        "web",
        "root = \"{root}\"\n[hooks]\npost_swap = [[\"/bin/sh\", \"-c\", \
         \"head -c 3000000 /dev/zero | tr '\\\\0' x\"]]\n",
    );
    let out = Command::new(BIN)
        .arg("--config-dir")
        .arg(d.etc())
        .args(["activate", "web:v1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    let pieces: Vec<&str> = text.lines().filter(|l| l.starts_with("| x")).collect();
    assert!(
        pieces.iter().all(|l| l.len() <= 4096 + 2),
        "a piece over 4096 bytes"
    );
    let shown: usize = pieces.iter().map(|l| l.len() - 2).sum();
    assert_eq!(shown, 1 << 20, "bytes shown");
    assert!(
        text.contains(&format!(
            "({} more bytes of output not shown)",
            3000000 - (1 << 20)
        )),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
}
