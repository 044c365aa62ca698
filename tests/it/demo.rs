//! `examples/demo.sh`, the README's tour, runs the binary cargo built,
//! wherever `CARGO_TARGET_DIR` puts it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, PermissionsExt::from_mode(0o755)).unwrap();
}

/// With `CARGO_TARGET_DIR` set, the demo runs `$CARGO_TARGET_DIR/debug/releasectl`
/// (not `target/debug/releasectl`). The build itself is skipped: `cargo` on
/// `PATH` is the real one except that `build` does nothing (a fresh target
/// directory would cost a full build), and the binary there records each
/// call before running the real one.
#[test]
fn demo_runs_the_binary_in_cargo_target_dir() {
    let real_cargo = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v cargo"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    let debug = tmp.path().join("tgt/debug");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&debug).unwrap();
    script(
        &bin.join("cargo"),
        &format!(
            "[ \"$1\" = build ] && exit 0\nexec '{}' \"$@\"\n",
            real_cargo.trim()
        ),
    );
    let calls = tmp.path().join("calls");
    script(
        &debug.join("releasectl"),
        &format!(
            "echo \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            calls.display(),
            env!("CARGO_BIN_EXE_releasectl")
        ),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.sh"))
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", tmp.path().join("tgt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo.sh failed:\n{text}");
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        calls.contains("deploy") && calls.contains("prune"),
        "demo.sh did not run $CARGO_TARGET_DIR/debug/releasectl (calls: {calls:?}):\n{text}"
    );
}
