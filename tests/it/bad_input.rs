//! Bad input: each case exits 2 with a one-line error naming the problem,
//! and a full listing of the tree (root, .releasectl/, config dir and the
//! place hostile input aims at) is the same before and after.

use crate::common;

use common::{is_root, make_tar, os_bytes, Dir, TarEntry, TestCommand};
use std::ffi::OsString;

/// v1 (current) and v2, activated once so `.releasectl/` with its lock and
/// history exists and would show any stray write.
fn deployed() -> Dir {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.cmd().args(["activate", "v1"]).ok();
    d
}

/// Run `cmd` and require: exit 2, one stderr line containing every needle,
/// and an unchanged tree.
fn refused(d: &Dir, cmd: &mut TestCommand, needles: &[&str]) {
    refused_with(2, d, cmd, needles)
}

/// The same with another exit status: a damaged state file is not bad
/// input (exit 1), but it must change nothing either.
fn refused_with(code: i32, d: &Dir, cmd: &mut TestCommand, needles: &[&str]) {
    let before = d.tree();
    let r = cmd.expect(code);
    let line = r.one_line_error();
    for n in needles {
        assert!(line.contains(n), "error does not mention {n:?}\n{r}");
    }
    before.assert_same(&d.tree(), &r.shown);
}

fn refuse_id(id: impl Into<OsString>, needle: &str) {
    let d = deployed();
    // `--` so that ids starting with '-' reach releasectl, not clap.
    refused(
        &d,
        d.cmd().args(["activate".into(), "--".into(), id.into()]),
        &["release", needle],
    );
}

#[test]
fn dot_dot() {
    refuse_id("..", "\"..\"");
}

#[test]
fn dot_dot_slash() {
    refuse_id("../x", "../x");
}

#[test]
fn slash() {
    refuse_id("a/b", "a/b");
}

#[test]
fn empty() {
    refuse_id("", "empty");
}

#[test]
fn too_long() {
    refuse_id("x".repeat(129), "129 bytes");
}

#[test]
fn exactly_128_bytes_is_only_missing() {
    // The limit itself is allowed: the refusal is about existence, not length.
    refuse_id("x".repeat(128), "does not exist");
}

#[test]
fn leading_dot() {
    refuse_id(".hidden", "start with");
}

#[test]
fn leading_dash() {
    refuse_id("-v1", "start with");
}

#[test]
fn colon_in_root_mode() {
    refuse_id("web:v1", "':'");
}

#[test]
fn whitespace() {
    refuse_id("v 1", "' '");
    refuse_id("v1\t", "'\\t'");
}

#[test]
fn newline() {
    refuse_id("v1\nv2", "'\\n'");
}

#[test]
fn non_utf8() {
    refuse_id(os_bytes(b"v\xff1"), "UTF-8");
}

#[test]
fn escaped_slash() {
    refuse_id("a\\x2fb", "'/'");
    refuse_id("\\x2e\\x2e", "\"..\"");
    refuse_id("\\x2e\\x2e\\x2fv1", "start with");
}

#[test]
fn bad_expect_current() {
    let d = deployed();
    refused(
        &d,
        d.cmd()
            .args(["activate", "v2", "--expect-current", "../v1"]),
        &["../v1"],
    );
}

#[test]
fn release_missing() {
    let d = deployed();
    refused(
        &d,
        d.cmd().args(["activate", "v9"]),
        &["v9", "does not exist"],
    );
}

#[test]
fn release_is_a_symlink_to_a_sibling() {
    let d = deployed();
    std::os::unix::fs::symlink("v2", d.path("releases/v3")).unwrap();
    refused(&d, d.cmd().args(["activate", "v3"]), &["v3", "symlink"]);
}

#[test]
fn release_is_a_regular_file() {
    let d = deployed();
    std::fs::write(d.path("releases/v3"), "not a tree").unwrap();
    refused(
        &d,
        d.cmd().args(["activate", "v3"]),
        &["v3", "not a directory"],
    );
}

#[test]
fn current_is_a_real_directory() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    std::fs::create_dir(d.path("current")).unwrap();
    std::fs::write(d.path("current/index.html"), "operator's own tree").unwrap();
    refused(
        &d,
        d.cmd().args(["activate", "v1"]),
        &["current", "not a symlink"],
    );
}

#[test]
fn current_is_a_file() {
    let d = Dir::new();
    d.releases(&["v1"]);
    std::fs::write(d.path("current"), "x").unwrap();
    refused(
        &d,
        d.cmd().args(["activate", "v1"]),
        &["current", "not a symlink"],
    );
}

#[test]
fn current_points_outside_releases() {
    let d = deployed();
    std::fs::remove_file(d.path("current")).unwrap();
    std::os::unix::fs::symlink("../outside", d.path("current")).unwrap();
    refused(
        &d,
        d.cmd().args(["activate", "v2"]),
        &["current", "../outside"],
    );
}

#[test]
fn root_does_not_exist() {
    let d = Dir::new();
    let missing = d.base().join("nope");
    let before = d.tree();
    let r = TestCommand::new()
        .arg("--root")
        .arg(&missing)
        .args(["activate", "v1"])
        .expect(2);
    let line = r.one_line_error();
    assert!(
        line.contains("nope") && line.contains("does not exist"),
        "{r}"
    );
    assert!(!missing.exists(), "the missing root was created");
    before.assert_same(&d.tree(), &r.shown);
}

#[test]
fn lock_file_is_a_symlink() {
    let d = deployed();
    let target = d.write("outside/lock-target", "do not touch\n");
    // The lock in ROOT is the owner's: root takes it only over an app root
    // another user owns (its own is in /run/releasectl, see src/lock.rs).
    if is_root() {
        let chowned = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(d.root())
            .status()
            .unwrap();
        assert!(chowned.success());
    }
    let _ = std::fs::remove_file(d.path(".releasectl/lock"));
    std::os::unix::fs::symlink(&target, d.path(".releasectl/lock")).unwrap();
    refused_with(
        1,
        &d,
        d.cmd().args(["activate", "v2"]),
        &["lock", "symlink"],
    );
}

// ---- config files ----

fn refuse_config(body: &str, needles: &[&str]) {
    let d = Dir::new();
    d.releases(&["v1"]);
    let file = d.config("web", body);
    let file = file.display().to_string();
    let mut all = vec![file.as_str()];
    all.extend_from_slice(needles);
    refused(&d, d.cmd_config().args(["activate", "web:v1"]), &all);
    // The same config is refused by every command that reads it.
    refused(&d, d.cmd_config().args(["status"]), &all);
}

#[test]
fn config_unknown_key() {
    refuse_config(
        "root = \"{root}\"\n[services]\nunits = []\nactoin = \"reload\"\n",
        &[":4:", "services.actoin", "unknown field"],
    );
}

#[test]
fn config_wrong_type() {
    refuse_config("root = \"{root}\"\nkeep = \"five\"\n", &[":2:", "`keep`"]);
}

#[test]
fn config_relative_root() {
    refuse_config(
        "keep = 3\nroot = \"srv/web\"\n",
        &[":2:", "`root`", "absolute"],
    );
}

#[test]
fn config_invalid_toml() {
    refuse_config("root = \"{root}\"\n\nkeep = = 3\n", &[":3:", "`keep`"]);
}

#[test]
fn config_relative_hook() {
    refuse_config(
        "root = \"{root}\"\n[hooks]\npre_activate = [[\"warm-cache\"]]\n",
        &[":3:", "hooks.pre_activate", "absolute"],
    );
}

#[test]
fn config_health_times_out_of_range() {
    for (body, needle) in [
        ("timeout = 0", "0 is not a number of seconds more than 0"),
        ("timeout = -1", "-1 is not"),
        ("timeout = nan", "NaN is not"),
        (
            "interval = -0.5",
            "-0.5 is not a number of seconds 0 or more",
        ),
    ] {
        let key = format!("`health.{}`", body.split(' ').next().unwrap());
        refuse_config(
            &format!("root = \"{{root}}\"\n[health]\ncommand = [\"/bin/true\"]\n{body}\n"),
            &[":4:", &key, needle],
        );
    }
}

#[test]
fn config_unknown_app() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.config("web", "root = \"{root}\"\n");
    refused(
        &d,
        d.cmd_config().args(["activate", "api:v1"]),
        &["api", "web"],
    );
}

// ---- hostile archives ----

fn refuse_archive(entries: &[TarEntry], needle: &str) {
    let d = deployed();
    let tar = d.base().join("outside/hostile.tar");
    make_tar(&tar, entries, false);
    refused(&d, d.cmd().arg("stage").arg(&tar), &["archive", needle]);
    refused(&d, d.cmd().arg("deploy").arg(&tar), &["archive", needle]);
}

#[test]
fn archive_with_dot_dot_entry() {
    refuse_archive(
        &[
            TarEntry::File("ok.txt", "fine"),
            TarEntry::File("../../outside/evil", "pwned"),
        ],
        "'..'",
    );
}

#[test]
fn archive_with_absolute_entry() {
    let d = Dir::new();
    let abs = d.outside().join("evil");
    refuse_archive(
        &[
            TarEntry::File("ok.txt", "fine"),
            TarEntry::File(abs.to_str().unwrap(), "pwned"),
        ],
        "absolute",
    );
    assert!(!abs.exists());
}

#[test]
fn archive_writing_through_an_absolute_symlink() {
    let d = Dir::new();
    let out = d.outside().display().to_string();
    refuse_archive(
        &[
            TarEntry::Symlink("escape", &out),
            TarEntry::File("escape/evil", "pwned"),
        ],
        "escape/evil",
    );
    assert!(!d.outside().join("evil").exists());
}

#[test]
fn archive_writing_through_a_relative_symlink() {
    refuse_archive(
        &[
            TarEntry::Dir("a"),
            TarEntry::Symlink("a/up", "../../../../outside"),
            TarEntry::File("a/up/evil", "pwned"),
        ],
        "a/up/evil",
    );
}

#[test]
fn stage_with_taken_id() {
    let d = deployed();
    let src = d.outside().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("version"), "x").unwrap();
    refused(
        &d,
        d.cmd().arg("stage").arg(&src).args(["--id", "v1"]),
        &["v1", "exists"],
    );
    refused(
        &d,
        d.cmd().arg("stage").arg(&src).args(["--id", "../v3"]),
        &["../v3"],
    );
}

#[test]
fn releases_dir_is_a_symlink() {
    let d = Dir::new();
    std::fs::create_dir_all(d.outside().join("v1")).unwrap();
    std::fs::write(d.outside().join("v1/version"), "v1\n").unwrap();
    std::os::unix::fs::symlink(d.outside(), d.path("releases")).unwrap();
    refused(
        &d,
        d.cmd().args(["activate", "v1"]),
        &["releases", "not a directory"],
    );
    let src = d.base().join("src");
    std::fs::create_dir(&src).unwrap();
    refused(
        &d,
        d.cmd().arg("stage").arg(&src).args(["--id", "v2"]),
        &["releases", "not a directory"],
    );
}

#[test]
fn root_is_a_symlink() {
    let d = Dir::new();
    d.releases(&["v1"]);
    let link = d.base().join("link");
    std::os::unix::fs::symlink(d.root(), &link).unwrap();
    let before = d.tree();
    let r = TestCommand::new()
        .arg("--root")
        .arg(&link)
        .args(["activate", "v1"])
        .expect(2);
    assert!(r.one_line_error().contains("symlink"), "{r}");
    before.assert_same(&d.tree(), &r.shown);
}

#[test]
fn archive_with_hard_link_leaving_the_release() {
    let d = Dir::new();
    let target = d.write("outside/target", "secret\n");
    refuse_archive(
        &[
            TarEntry::File("ok.txt", "fine"),
            TarEntry::Hardlink("grab", target.to_str().unwrap()),
        ],
        "grab",
    );
    refuse_archive(
        &[
            TarEntry::File("ok.txt", "fine"),
            TarEntry::Hardlink("grab", "../../outside/target"),
        ],
        "'..'",
    );
}

#[test]
fn bad_app_part_in_config_mode() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.config("web", "root = \"{root}\"\n");
    d.cmd_config().args(["activate", "web:v1"]).ok();
    for (request, needle) in [
        ("web:../x", "../x"),
        ("../etc:v1", "app name"),
        ("web:", "empty"),
        (":v1", "empty"),
        ("web:a\\x2fb", "'/'"),
        ("web\\x3av1\\x3a", "':'"),
        ("web:v1\\x", "escape"),
    ] {
        refused(&d, d.cmd_config().args(["activate", request]), &[needle]);
    }
}

#[test]
fn stage_source_with_a_fifo_is_refused_leaving_nothing() {
    let d = deployed();
    let src = d.outside().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/file"), "x").unwrap();
    let ok = std::process::Command::new("mkfifo")
        .arg(src.join("a/pipe"))
        .status()
        .unwrap();
    assert!(ok.success());
    refused(
        &d,
        d.cmd().arg("stage").arg(&src).args(["--id", "v3"]),
        &["special files", "pipe"],
    );
}
