//! `stage` and `deploy`: from a directory and from each archive format,
//! symlinks kept as symlinks, ids that never collide, and every `--json`
//! output one parseable document.

use crate::common;

use common::{make_tar, require_tool, zstd, Dir, TarEntry, Tree};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A source tree with nested dirs, an executable, an empty dir, a hard link and symlinks
/// that point inside, at an absolute path, outside the tree and nowhere.
fn source(d: &Dir) -> PathBuf {
    let src = d.outside().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("version"), "src\n").unwrap();
    std::fs::write(src.join("sub/deeper/data.txt"), "nested\n").unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(d.outside().join("secret")).unwrap();
    std::fs::write(d.outside().join("secret/key"), "do not copy\n").unwrap();
    std::fs::hard_link(src.join("version"), src.join("hard")).unwrap();
    symlink("version", src.join("link")).unwrap();
    symlink("/etc/passwd", src.join("abs")).unwrap();
    symlink("../secret", src.join("out")).unwrap();
    symlink("../../nowhere", src.join("sub/dangling")).unwrap();
    src
}

/// The same tree as tar entries.
fn entries() -> Vec<TarEntry<'static>> {
    vec![
        TarEntry::Dir("empty"),
        TarEntry::Dir("sub"),
        TarEntry::Dir("sub/deeper"),
        TarEntry::File("version", "src\n"),
        TarEntry::File("sub/deeper/data.txt", "nested\n"),
        TarEntry::File("run.sh", "#!/bin/sh\necho hi\n"),
        TarEntry::Hardlink("hard", "version"),
        TarEntry::Symlink("link", "version"),
        TarEntry::Symlink("abs", "/etc/passwd"),
        TarEntry::Symlink("out", "../secret"),
        TarEntry::Symlink("sub/dangling", "../../nowhere"),
    ]
}

fn release_tree(d: &Dir, id: &str) -> Tree {
    Tree::of(&d.path("releases").join(id))
}

fn no_temp_trees(d: &Dir) {
    let left: Vec<_> = d
        .release_names()
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temp trees left behind: {left:?}");
}

#[test]
fn stage_a_directory_copies_symlinks_as_symlinks() {
    let d = Dir::new();
    let src = source(&d);
    let r = d
        .cmd()
        .args(["--json", "stage"])
        .arg(&src)
        .args(["--id", "r1"])
        .ok()
        .json();
    assert_eq!(r["release"], "r1", "{r}");
    Tree::of(&src).assert_same(&release_tree(&d, "r1"), "staged copy");
    let rel = d.path("releases/r1");
    assert!(std::fs::symlink_metadata(rel.join("out"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!rel.join("secret").exists());
    let mode = std::fs::metadata(rel.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    no_temp_trees(&d);
    // Staging does not activate.
    assert!(d.current().is_none());
}

fn stage_archive(name: &str, build: impl Fn(&Path)) {
    require_tool("python3");
    require_tool("zstd");
    let d = Dir::new();
    let src = source(&d);
    let archive = d.outside().join(name);
    build(&archive);
    d.cmd().arg("stage").arg(&archive).args(["--id", "a1"]).ok();
    Tree::of(&src).assert_same(&release_tree(&d, "a1"), name);
    let mode = std::fs::metadata(d.path("releases/a1/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "mode from the archive, not the source");
    no_temp_trees(&d);
}

#[test]
fn stage_tar() {
    stage_archive("app.tar", |p| make_tar(p, &entries(), false));
}

#[test]
fn stage_tar_gz() {
    stage_archive("app.tar.gz", |p| make_tar(p, &entries(), true));
}

#[test]
fn stage_tar_zst() {
    stage_archive("app.tar.zst", |p| {
        let tar = p.with_extension("");
        make_tar(&tar, &entries(), false);
        zstd(&tar, p);
        std::fs::remove_file(&tar).unwrap();
    });
}

#[test]
fn hostile_zst_archive_is_refused_by_deploy_leaving_nothing() {
    require_tool("python3");
    require_tool("zstd");
    let d = Dir::new();
    d.releases(&["v1"]);
    d.cmd().args(["activate", "v1"]).ok();
    let tar = d.outside().join("evil.tar");
    let mut e = entries();
    e.push(TarEntry::Symlink("escape", "/tmp"));
    e.push(TarEntry::File("escape/releasectl-test-evil", "pwned"));
    make_tar(&tar, &e, false);
    let zst = d.outside().join("evil.tar.zst");
    zstd(&tar, &zst);
    let before = d.tree();
    let r = d.cmd().arg("deploy").arg(&zst).expect(2);
    assert!(r.one_line_error().contains("archive refused"), "{r}");
    before.assert_same(&d.tree(), "hostile deploy");
    no_temp_trees(&d);
    assert!(!Path::new("/tmp/releasectl-test-evil").exists());
}

#[test]
fn deploy_stages_and_activates_with_a_time_id() {
    let d = Dir::new();
    let src = source(&d);
    let r = d.cmd().args(["--json", "deploy"]).arg(&src).ok().json();
    assert_eq!(r["outcome"], "activated", "{r}");
    let id = r["release"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "YYYYmmddTHHMMSSZ: {id}");
    assert!(id.ends_with('Z') && id.as_bytes()[8] == b'T', "{id}");
    assert_eq!(d.current().as_deref(), Some(id.as_str()));
    assert_eq!(d.current_version(), "src");
}

#[test]
fn ids_taken_in_the_same_second_get_a_suffix() {
    let d = Dir::new();
    let src = source(&d);
    // Whatever second the stage runs in (within the next minute), its
    // plain id and the -2 id are taken: it must choose -3, not merge.
    let now = SystemTime::now();
    let mut bases = Vec::new();
    for s in 0..60 {
        let base = releasectl::clock::compact_utc(now + Duration::from_secs(s));
        d.release(&base).release(&format!("{base}-2"));
        bases.push(base);
    }
    let r = d.cmd().args(["--json", "stage"]).arg(&src).ok().json();
    let id = r["release"].as_str().unwrap();
    let (base, n) = id.rsplit_once('-').unwrap();
    assert!(bases.iter().any(|b| b == base), "{id}");
    assert_eq!(n, "3", "{id}");
    assert_eq!(
        std::fs::read_to_string(d.path("releases").join(base).join("version")).unwrap(),
        format!("{base}\n"),
        "the existing release was touched"
    );
    Tree::of(&src).assert_same(&release_tree(&d, id), "suffixed release");
}

#[test]
fn two_deploys_back_to_back_get_two_ids() {
    let d = Dir::new();
    let src = source(&d);
    let first = d.cmd().args(["--json", "deploy"]).arg(&src).ok().json();
    let second = d.cmd().args(["--json", "deploy"]).arg(&src).ok().json();
    let (a, b) = (
        first["release"].as_str().unwrap(),
        second["release"].as_str().unwrap(),
    );
    assert_ne!(a, b);
    if let Some(suffix) = b.strip_prefix(a) {
        assert_eq!(suffix, "-2", "same second: {a} then {b}");
    }
    assert_eq!(d.current().as_deref(), Some(b));
    assert_eq!(d.release_names().len(), 2);
}

#[test]
fn concurrent_stagings_never_merge() {
    let d = Dir::new();
    let src = source(&d);
    let children: Vec<_> = (0..6)
        .map(|_| d.cmd().args(["--json", "stage"]).arg(&src).spawn())
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["result"]["release"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "{ids:?}");
    for id in &ids {
        Tree::of(&src).assert_same(&release_tree(&d, id), id);
    }
    no_temp_trees(&d);
}

#[test]
fn json_outputs_parse() {
    let d = Dir::new();
    let src = source(&d);
    d.cmd().arg("deploy").arg(&src).args(["--id", "j1"]).ok();
    d.cmd().arg("stage").arg(&src).args(["--id", "j2"]).ok();
    let status = d.cmd().args(["--json", "status"]).ok().json();
    assert_eq!(status["current"], "j1");
    assert_eq!(status["releases"], 2);
    let list = d.cmd().args(["--json", "list"]).ok().json()["releases"].clone();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .any(|r| r["id"] == "j1" && r["current"] == true && r["bad"] == false));
    let history = d.cmd().args(["--json", "history"]).ok().json()["entries"].clone();
    assert_eq!(history[0]["event"], "activated");
    assert_eq!(history[0]["to"], "j1");
    let prune = d.cmd().args(["--json", "prune", "--dry-run"]).ok().json();
    assert_eq!(prune["dry_run"], true);
    let recover = d.cmd().args(["--json", "recover"]).ok().json()["apps"].clone();
    assert_eq!(recover[0]["recovered"], false);
    // Errors are one JSON document too: the kind, the app and release,
    // and the state left behind.
    let err = d
        .cmd()
        .args(["--json", "activate", "nope"])
        .expect(2)
        .envelope();
    assert_eq!(err["exit_code"], 2);
    assert_eq!(err["error"]["kind"], "usage");
    assert_eq!(err["error"]["release"], "nope");
    assert_eq!(err["error"]["current"], "j1");
    assert!(err["error"]["message"].as_str().unwrap().contains("nope"));
}

#[test]
fn deploy_dry_run_changes_nothing() {
    let d = Dir::new();
    let src = source(&d);
    d.releases(&["v1"]);
    d.cmd().args(["activate", "v1"]).ok();
    let before = d.tree();
    let r = d.cmd().arg("deploy").arg(&src).arg("--dry-run").ok();
    assert!(r.stdout.contains("would stage"), "{r}");
    let j = d
        .cmd()
        .args(["--json", "deploy"])
        .arg(&src)
        .args(["--id", "v2", "--dry-run"])
        .ok()
        .json();
    assert_eq!(j["outcome"], "would_deploy", "{j}");
    assert_eq!(j["previous"], "v1", "{j}");
    before.assert_same(&d.tree(), "deploy --dry-run");
    // What a real deploy would refuse, the dry run refuses too.
    d.cmd()
        .arg("deploy")
        .arg(&src)
        .args(["--id", "v1", "--dry-run"])
        .expect(2);
    d.cmd()
        .arg("deploy")
        .arg(d.base().join("missing"))
        .arg("--dry-run")
        .expect(2);
    d.cmd()
        .arg("deploy")
        .arg(&src)
        .args(["--dry-run", "--expect-current", "v0"])
        .expect(2);
    before.assert_same(&d.tree(), "refused deploy --dry-run");
}

#[test]
fn a_source_containing_the_root_is_refused() {
    let d = Dir::new();
    d.releases(&["v1"]);
    let before = d.tree();
    let r = d.cmd().arg("stage").arg(d.base()).expect(2);
    assert!(r.one_line_error().contains("contains the app root"), "{r}");
    before.assert_same(&d.tree(), "stage of the root's parent");
}

#[test]
fn deploy_refused_by_expect_current_stages_nothing() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.cmd().args(["activate", "v1"]).ok();
    let src = d.outside().join("build");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("version"), "v2\n").unwrap();
    let before = d.tree();
    let r = d
        .cmd()
        .arg("deploy")
        .arg(&src)
        .args(["--id", "v2", "--expect-current", "nope"])
        .expect(2);
    assert!(r.one_line_error().contains("--expect-current"), "{r}");
    before.assert_same(&d.tree(), "deploy refused by --expect-current");
}

#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_full_disk_while_unpacking_is_an_operational_error() {
    // A small tmpfs as the app root: the archive is fine, the machine is not.
    common::require_root("mounting a small tmpfs");
    let d = Dir::new();
    let small = d.outside().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    let tar = d.outside().join("big.tar");
    let content = d.outside().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("big.bin"), vec![b'x'; 1 << 20]).unwrap();
    let packed = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&content)
        .arg("big.bin")
        .status()
        .unwrap();
    assert!(packed.success());
    let r = common::TestCommand::new()
        .arg("--root")
        .arg(&small)
        .arg("stage")
        .arg(&tar)
        .expect(1);
    assert!(r.one_line_error().contains("No space left"), "{r}");
    // A failed first stage leaves the root as it was: no temp tree, and
    // not even the releases/ it created.
    assert!(!small.join("releases").exists(), "releases/ left behind");
}

/// On a terminal, staging draws a progress line (files and bytes) on
/// stderr and erases it; through a pipe, or with --json, it draws none.
#[test]
fn a_terminal_sees_progress_a_pipe_does_not() {
    common::require_tool("script");
    let d = Dir::new();
    let src = d.outside().join("many");
    for i in 0..6000 {
        let dir = src.join(format!("d{}", i / 500));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), "x").unwrap();
    }
    let on_tty = |extra: &str, id: &str| {
        let line = format!(
            "{} --root {} {extra} stage {} --id {id}",
            common::BIN,
            d.root().display(),
            src.display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_tty("", "t1");
    assert!(
        shown.contains("staging: ") && shown.contains(" files, "),
        "no progress line on a terminal: {shown:?}"
    );
    assert!(
        shown.contains("\r\x1b[K"),
        "the line is not erased: {shown:?}"
    );
    let json = on_tty("--json", "t2");
    assert!(!json.contains("staging: "), "{json:?}");
    let piped = d.cmd().arg("stage").arg(&src).args(["--id", "t3"]).ok();
    assert!(!piped.stderr.contains("staging: "), "{piped}");
}

/// `stage --json --id ID SOURCE`, which must succeed: its result.
fn stage_json(d: &Dir, id: &str, source: &Path) -> serde_json::Value {
    d.cmd()
        .args(["--json", "stage", "--id", id])
        .arg(source)
        .ok()
        .json()
}

/// Staging an id again with the same content is a no-op that says so
/// (`unchanged`), so a deploy can be re-run; other content under that id is
/// refused, naming what differs, and nothing changes either way.
#[test]
fn staging_an_existing_id_again_is_unchanged_or_refused() {
    let d = Dir::new();
    let src = source(&d);
    let first = stage_json(&d, "r1", &src);
    assert_eq!(first["unchanged"], false, "{first}");
    let before = Tree::of(&d.root());

    let again = stage_json(&d, "r1", &src);
    assert_eq!(
        (&again["release"], &again["unchanged"]),
        (&"r1".into(), &true.into()),
        "{again}"
    );
    before.assert_same(&Tree::of(&d.root()), "an unchanged re-stage");

    // An archive, compressed or not, is the same content as its tree.
    let tar = d.outside().join("same.tar");
    make_tar(&tar, &entries(), false);
    let tgz = d.outside().join("same.tar.gz");
    make_tar(&tgz, &entries(), true);
    d.cmd().args(["stage", "--id", "r2"]).arg(&tar).ok();
    let before = Tree::of(&d.root());
    let r = stage_json(&d, "r2", &tgz);
    assert_eq!(r["unchanged"], true, "{r}");
    before.assert_same(
        &Tree::of(&d.root()),
        "an unchanged re-stage from an archive",
    );

    // One mode bit is a different release.
    std::fs::set_permissions(src.join("run.sh"), PermissionsExt::from_mode(0o700)).unwrap();
    let run = d.cmd().args(["stage", "--id", "r1"]).arg(&src).expect(2);
    let line = run.one_line_error();
    assert!(
        line.contains("r1 already exists with different content") && line.contains("run.sh"),
        "{line}"
    );
    before.assert_same(&Tree::of(&d.root()), "a refused re-stage");
    no_temp_trees(&d);
}

/// `stage --dry-run` reads the source and tells `would_stage` from
/// `unchanged` without leaving anything, not even `releases/`.
#[test]
fn stage_dry_run_changes_nothing() {
    let dry_run = |d: &Dir, src: &Path| {
        d.cmd()
            .args(["--json", "stage", "--dry-run", "--id", "r1"])
            .arg(src)
            .ok()
            .json()
    };
    let d = Dir::new();
    let src = source(&d);
    let before = Tree::of(&d.root());
    let r = dry_run(&d, &src);
    assert_eq!(r["outcome"], "would_stage", "{r}");
    before.assert_same(&Tree::of(&d.root()), "a dry run on an empty root");
    assert!(!d.path("releases").exists(), "a dry run created releases/");

    d.cmd().args(["stage", "--id", "r1"]).arg(&src).ok();
    let before = Tree::of(&d.root());
    let r = dry_run(&d, &src);
    assert_eq!(r["outcome"], "unchanged", "{r}");
    std::fs::write(src.join("sub/new"), "x").unwrap();
    let run = d
        .cmd()
        .args(["stage", "--dry-run", "--id", "r1"])
        .arg(&src)
        .expect(2);
    assert!(
        run.one_line_error().contains("added sub/new"),
        "{}",
        run.one_line_error()
    );
    before.assert_same(&Tree::of(&d.root()), "dry runs of a staged id");
    no_temp_trees(&d);
}

/// `--expect-current ''` is "only if nothing is current yet": the guard a
/// first deploy on a fleet host needs.
#[test]
fn expect_current_empty_means_no_current() {
    let d = Dir::new();
    d.releases(&["r1", "r2"]);
    d.cmd()
        .args(["activate", "r1", "--no-health", "--expect-current", ""])
        .ok();
    assert_eq!(d.current().as_deref(), Some("r1"));
    let before = d.tree().without(".releasectl/lock");
    let run = d
        .cmd()
        .args(["activate", "r2", "--no-health", "--expect-current", ""])
        .expect(2);
    assert!(
        run.one_line_error().contains("current is r1, not (none)"),
        "{}",
        run.one_line_error()
    );
    before.assert_same(
        &d.tree().without(".releasectl/lock"),
        "a refused activation",
    );
}

/// `find ROOT -printf` with modification times: [`Tree`] leaves mtimes
/// out, and "nothing is written" must hold for them too.
fn listing(root: &Path) -> String {
    let out = std::process::Command::new("find")
        .arg(root)
        .args(["-printf", "%p %y %m %U %T@\n"])
        .output()
        .unwrap();
    assert!(out.status.success(), "find failed");
    let mut lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines.join("\n")
}

fn assert_listing_same(before: &str, after: &str, what: &str) {
    if before != after {
        panic!("{what} wrote under ROOT:\n--- before\n{before}\n--- after\n{after}");
    }
}

/// An id already staged is compared, never written: `stage --dry-run` and
/// an unchanged re-stage (from a directory, from an archive, with a shared
/// path) leave ROOT as it was, mtimes included, and no temp tree comes and
/// goes under `releases/` (which would change its mtime).
#[test]
fn unchanged_restage_and_dry_run_write_nothing_under_root() {
    let d = Dir::new();
    let src = source(&d);
    let tar = d.outside().join("r.tar.gz");
    // A hard link to a symlink links the symlink itself, as unpacking does.
    let mut with_links = entries();
    with_links.push(TarEntry::Hardlink("link2", "link"));
    make_tar(&tar, &with_links, true);
    let shared = ["--shared-dir", "sub/logs"];
    d.cmd()
        .args(["stage", "--id", "dir"])
        .args(shared)
        .arg(&src)
        .ok();
    d.cmd().args(["stage", "--id", "tar"]).arg(&tar).ok();
    let before = listing(&d.root());
    for (id, from, extra) in [("dir", &src, &shared[..]), ("tar", &tar, &[][..])] {
        let r = d
            .cmd()
            .args(["--json", "stage", "--dry-run", "--id", id])
            .args(extra)
            .arg(from)
            .ok()
            .json();
        assert_eq!(r["outcome"], "unchanged", "{id}: {r}");
        let r = d
            .cmd()
            .args(["--json", "stage", "--id", id])
            .args(extra)
            .arg(from)
            .ok()
            .json();
        assert_eq!(r["unchanged"], true, "{id}: {r}");
        assert_listing_same(&before, &listing(&d.root()), &format!("re-staging {id}"));
    }
    // Without its shared path the directory gives another tree: refused.
    let run = d
        .cmd()
        .args(["stage", "--dry-run", "--id", "dir"])
        .arg(&src)
        .expect(2);
    assert!(
        run.one_line_error().contains("sub/logs"),
        "{}",
        run.one_line_error()
    );
    std::fs::write(src.join("version"), "other\n").unwrap();
    let run = d
        .cmd()
        .args(["stage", "--id", "dir"])
        .args(shared)
        .arg(&src)
        .expect(2);
    assert!(
        run.one_line_error().contains("changed version"),
        "{}",
        run.one_line_error()
    );
    assert_listing_same(&before, &listing(&d.root()), "refused re-stages");
}

/// Root activating the release already active over an app root another
/// user owns takes that user's `.releasectl/lock` too, but writes nothing
/// into it: a resumed rollout leaves ROOT as it was, mtimes included.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn activating_the_active_release_leaves_the_lock_file_untouched() {
    common::require_root("an app root owned by another user");
    let d = Dir::new();
    d.releases(&["r1"]);
    d.cmd().args(["activate", "r1", "--no-health"]).ok();
    crate::attack::chown_tree(&d.root());
    d.cmd().args(["activate", "r1", "--no-health"]).ok();
    assert!(
        d.path(".releasectl/lock").exists(),
        "the owner's lock was not taken"
    );
    let before = listing(&d.root());
    let r = d
        .cmd()
        .args(["--json", "activate", "r1", "--no-health"])
        .ok()
        .json();
    assert_eq!(r["outcome"], "already_active", "{r}");
    assert_listing_same(
        &before,
        &listing(&d.root()),
        "activating the active release",
    );
}
