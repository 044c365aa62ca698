//! Manifests and `verify`: `stage` records what it wrote (type, mode, size,
//! SHA-256, symlink targets) and `verify` names every path that differs
//! since; activation with verification refuses a release that differs,
//! before anything changes.

use crate::common;

use common::{make_tar, Dir, TarEntry};
use std::os::unix::fs::{symlink, PermissionsExt};

/// A staged release `r1` (from a directory) with files, a subdirectory,
/// an executable and a symlink.
fn staged(d: &Dir) {
    let src = d.outside().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("index.html"), "hello\n").unwrap();
    std::fs::write(src.join("sub/app.js"), "let x = 1;\n").unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(src.join("config.ini"), "a=1\n").unwrap();
    symlink("index.html", src.join("home")).unwrap();
    d.cmd().arg("stage").arg(&src).args(["--id", "r1"]).ok();
}

fn differences(v: &serde_json::Value) -> Vec<String> {
    v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["change"].as_str().unwrap(),
                d["path"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn an_untouched_release_matches() {
    let d = Dir::new();
    staged(&d);
    let r = d.cmd().args(["--json", "verify", "r1"]).ok().json();
    assert_eq!(r["matches"], true, "{r:#}");
    let text = d.cmd().args(["verify", "r1"]).ok().stdout;
    assert!(text.contains("r1 matches its manifest"), "{text}");
}

/// One byte changed (same size), a file added, a file chmodded, a file
/// replaced by a symlink: each is named, exit 14, one JSON document.
#[test]
fn every_kind_of_change_is_named() {
    let d = Dir::new();
    staged(&d);
    let rel = d.path("releases/r1");
    std::fs::write(rel.join("index.html"), "hellO\n").unwrap();
    std::fs::write(rel.join("sub/extra.js"), "").unwrap();
    std::fs::set_permissions(rel.join("run.sh"), PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::remove_file(rel.join("config.ini")).unwrap();
    symlink("/etc/passwd", rel.join("config.ini")).unwrap();

    let r = d.cmd().args(["--json", "verify", "r1"]).expect(14);
    let doc = r.json();
    assert_eq!(doc["matches"], false);
    assert_eq!(
        differences(&doc),
        [
            "changed config.ini",
            "changed index.html",
            "changed run.sh",
            "added sub/extra.js",
        ]
    );
    let details: Vec<&str> = doc["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["detail"].as_str().unwrap())
        .collect();
    assert_eq!(details[0], "file replaced by a symlink");
    assert_eq!(details[1], "content");
    assert_eq!(details[2], "mode 0755 -> 0700");
    assert!(r.one_line_error().contains("4 path(s) differ"), "{r}");

    // Removed too.
    std::fs::remove_file(rel.join("sub/app.js")).unwrap();
    let doc = d.cmd().args(["--json", "verify", "r1"]).expect(14).json();
    assert!(differences(&doc).contains(&"removed sub/app.js".to_string()));
}

/// `activate --verify` (and `verify = true`) refuse a release that differs:
/// `current` stays, no intent is left, the attempt is in the history with
/// the differences, and the release counts as bad.
#[test]
fn activation_with_verification_refuses_a_changed_release() {
    let d = Dir::new();
    staged(&d);
    d.releases(&["r0"]);
    d.cmd().args(["activate", "r0"]).ok();
    std::fs::write(d.path("releases/r1/index.html"), "tampered\n").unwrap();

    let r = d.cmd().args(["activate", "r1", "--verify"]).expect(14);
    assert!(
        r.one_line_error()
            .contains("r1 does not match its manifest")
            && r.one_line_error().contains("index.html"),
        "{r}"
    );
    assert_eq!(d.current().as_deref(), Some("r0"));
    assert!(d.pending().is_none());
    let last = d.history().pop().unwrap();
    assert_eq!(last["event"], "aborted", "{last}");
    assert!(last["reason"].as_str().unwrap().contains("index.html"));

    // Through the config, the same; without verification it would go.
    d.config("web", "root = \"{root}\"\nverify = true\n");
    d.cmd_config().args(["activate", "web:r1"]).expect(14);
    assert_eq!(d.current().as_deref(), Some("r0"));
    std::fs::write(d.path("releases/r1/index.html"), "hello\n").unwrap();
    d.cmd_config().args(["activate", "web:r1"]).ok();
    assert_eq!(d.current().as_deref(), Some("r1"));
}

/// A release made by hand has no manifest: verify says so (exit 14), and
/// activation with verification refuses it.
#[test]
fn a_release_without_manifest_cannot_be_verified() {
    let d = Dir::new();
    d.releases(&["r0", "hand"]);
    d.cmd().args(["activate", "r0"]).ok();
    let r = d.cmd().args(["verify", "hand"]).expect(14);
    assert!(r.one_line_error().contains("has no manifest"), "{r}");
    d.cmd().args(["activate", "hand", "--verify"]).expect(14);
    assert_eq!(d.current().as_deref(), Some("r0"));
}

/// Archives get manifests too, hard links included; verify without a
/// release checks the current one.
#[test]
fn archives_get_manifests_and_verify_defaults_to_current() {
    let d = Dir::new();
    let tar = d.outside().join("app.tar");
    make_tar(
        &tar,
        &[
            TarEntry::Dir("sub"),
            TarEntry::File("sub/a.txt", "a\n"),
            TarEntry::Hardlink("b.txt", "sub/a.txt"),
            TarEntry::Symlink("link", "sub/a.txt"),
        ],
        false,
    );
    d.cmd().arg("stage").arg(&tar).args(["--id", "t1"]).ok();
    d.cmd().args(["activate", "t1"]).ok();
    d.cmd().args(["verify"]).ok();
    std::fs::remove_file(d.path("releases/t1/b.txt")).unwrap();
    let doc = d.cmd().args(["--json", "verify"]).expect(14).json();
    assert_eq!(differences(&doc), ["removed b.txt"]);
}

/// `verify APP` is that app's current release, as `status APP` is that
/// app: a bare word naming a configured app is the app; `APP:RELEASE`
/// names a release, also one whose id is an app's name.
#[test]
fn verify_takes_an_app_like_every_other_command() {
    let d = Dir::new();
    staged(&d);
    d.cmd().args(["activate", "r1"]).ok();
    let src = d.outside().join("src");
    d.cmd().arg("stage").arg(&src).args(["--id", "web"]).ok();
    for app in ["shop", "web"] {
        d.config(app, "root = \"{root}\"\n");
    }
    let r = d
        .cmd_config()
        .args(["--json", "verify", "shop"])
        .ok()
        .json();
    assert_eq!(
        (&r["app"], &r["release"]),
        (&"shop".into(), &"r1".into()),
        "{r:#}"
    );
    // An app name wins over a release id: `web` is the app here…
    let r = d.cmd_config().args(["--json", "verify", "web"]).ok().json();
    assert_eq!(
        (&r["app"], &r["release"]),
        (&"web".into(), &"r1".into()),
        "{r:#}"
    );
    // … and APP:RELEASE names the release called `web`.
    let r = d
        .cmd_config()
        .args(["--json", "verify", "shop:web"])
        .ok()
        .json();
    assert_eq!(r["release"], "web", "{r:#}");
    // A word that is no app is a release id, refused as before when the
    // app is ambiguous.
    let r = d.cmd_config().args(["verify", "r1"]).expect(2);
    assert!(
        r.one_line_error().contains("several apps configured"),
        "{r}"
    );
}
