//! Shared paths: `[shared]` (or `--shared-dir` / `--shared-file`) link a
//! release's `storage/`, `.env`... into `ROOT/shared/`, seeded on the first
//! deploy; data written there outlives releases, rollback and prune never
//! touch it, and `verify` judges the link, not what is behind it.

use crate::common;

use common::{make_tar, Dir, TarEntry, Tree};
use std::path::{Path, PathBuf};

/// A Laravel-like tree: `storage/logs`, `storage/app`, `.env`, `public/`.
fn laravel(d: &Dir, name: &str, version: &str) -> PathBuf {
    let src = d.outside().join(name);
    for dir in ["storage/logs", "storage/app", "public"] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    std::fs::write(src.join("version"), format!("{version}\n")).unwrap();
    std::fs::write(src.join(".env"), format!("APP_NAME={version}\n")).unwrap();
    std::fs::write(src.join("storage/logs/.gitignore"), "*\n").unwrap();
    std::fs::write(
        src.join("storage/app/seed.txt"),
        format!("seed of {version}\n"),
    )
    .unwrap();
    std::fs::write(
        src.join("public/index.php"),
        format!("<?php // {version}\n"),
    )
    .unwrap();
    src
}

fn shared_tree(d: &Dir) -> Tree {
    Tree::of(&d.path("shared"))
}

fn link(d: &Dir, rel: &str) -> String {
    std::fs::read_link(d.path(rel))
        .unwrap_or_else(|e| panic!("{rel} is not a symlink: {e}"))
        .to_string_lossy()
        .into_owned()
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.as_ref().display()))
}

fn no_temp_trees(d: &Dir) {
    if !d.path("releases").exists() {
        return;
    }
    let left: Vec<_> = d
        .release_names()
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temp trees left behind: {left:?}");
}

/// Three deploys, through the config and through `--root` flags: release
/// 1's writes into `storage` are what release 3 sees, every release links
/// to the one `shared/`, `verify` passes, and rollback and prune leave
/// `shared/` byte-identical.
fn three_deploys(d: &Dir, deploy: impl Fn(&Path, &str)) {
    // An old release put in place by hand, linking into shared/ as well:
    // prune removes it, and its link as a name only.
    d.release("old");
    std::fs::create_dir_all(d.path("shared")).unwrap();
    std::os::unix::fs::symlink("../../shared/storage", d.path("releases/old/storage")).unwrap();
    for (i, id) in ["r1", "r2", "r3"].iter().enumerate() {
        deploy(&laravel(d, &format!("src{i}"), id), id);
        if *id == "r1" {
            // The app, running release 1, writes into its storage.
            std::fs::write(
                d.path("current/storage/logs/laravel.log"),
                "written by r1\n",
            )
            .unwrap();
            std::fs::create_dir(d.path("current/storage/app/uploads")).unwrap();
            std::fs::write(d.path("current/storage/app/uploads/a.jpg"), "jpeg\n").unwrap();
        }
    }
    assert_eq!(d.current().as_deref(), Some("r3"));
    assert_eq!(d.current_version(), "r3");
    for id in ["r1", "r2", "r3"] {
        assert_eq!(
            link(d, &format!("releases/{id}/storage")),
            "../../shared/storage"
        );
        assert_eq!(link(d, &format!("releases/{id}/.env")), "../../shared/.env");
        // public/ is the release's own.
        let index = read(d.path(&format!("releases/{id}/public/index.php")));
        assert!(index.contains(id), "{index}");
    }
    assert_eq!(
        read(d.path("current/storage/logs/laravel.log")),
        "written by r1\n"
    );
    assert_eq!(read(d.path("current/storage/app/uploads/a.jpg")), "jpeg\n");
    // Seeded once, by release 1.
    assert_eq!(read(d.path("current/.env")), "APP_NAME=r1\n");
    assert_eq!(read(d.path("shared/storage/app/seed.txt")), "seed of r1\n");
    for id in ["r1", "r2", "r3"] {
        d.cmd().args(["verify", id]).ok();
    }

    let before = shared_tree(d);
    d.cmd().arg("rollback").ok();
    assert_eq!(d.current().as_deref(), Some("r2"));
    before.assert_same(&shared_tree(d), "shared/ after rollback");
    d.cmd().args(["prune", "--keep", "1"]).ok();
    assert!(!d.path("releases/old").exists(), "{:?}", d.release_names());
    before.assert_same(&shared_tree(d), "shared/ after prune");
    assert_eq!(
        read(d.path("current/storage/logs/laravel.log")),
        "written by r1\n"
    );
}

#[test]
fn laravel_deployed_three_times_with_the_config() {
    let d = Dir::new();
    d.config(
        "web",
        "root = \"{root}\"\n[shared]\ndirs = [\"storage\"]\nfiles = [\".env\"]\n",
    );
    three_deploys(&d, |src, id| {
        d.cmd_config()
            .args(["deploy", "--app", "web"])
            .arg(src)
            .args(["--id", id])
            .ok();
    });
}

#[test]
fn laravel_deployed_three_times_with_root_flags() {
    let d = Dir::new();
    three_deploys(&d, |src, id| {
        d.cmd()
            .arg("deploy")
            .arg(src)
            .args([
                "--id",
                id,
                "--shared-dir",
                "storage",
                "--shared-file",
                ".env",
            ])
            .ok();
    });
}

/// The first deploy moves the release's own `storage` and `.env` into
/// `shared/`; a later release's `storage` (here from an archive) is
/// discarded, not merged, and its manifest holds the link only.
#[test]
fn first_deploy_seeds_and_later_copies_are_discarded() {
    let d = Dir::new();
    let flags = ["--shared-dir", "storage", "--shared-file", ".env"];
    let src = laravel(&d, "src1", "r1");
    d.cmd()
        .arg("deploy")
        .arg(&src)
        .args(["--id", "r1"])
        .args(flags)
        .ok();
    assert_eq!(read(d.path("shared/.env")), "APP_NAME=r1\n");
    assert_eq!(read(d.path("shared/storage/app/seed.txt")), "seed of r1\n");
    assert_eq!(read(d.path("shared/storage/logs/.gitignore")), "*\n");
    assert!(d
        .path("shared/storage")
        .symlink_metadata()
        .unwrap()
        .is_dir());
    // Moved, not copied: the release holds the link only.
    assert!(!d
        .path("releases/r1/storage")
        .symlink_metadata()
        .unwrap()
        .is_dir());

    let tar = d.outside().join("r2.tar");
    make_tar(
        &tar,
        &[
            TarEntry::File("version", "r2\n"),
            TarEntry::File(".env", "APP_NAME=r2\n"),
            TarEntry::Dir("storage"),
            TarEntry::Dir("storage/app"),
            TarEntry::File("storage/app/seed.txt", "seed of r2\n"),
            TarEntry::File("storage/app/extra.txt", "only in r2\n"),
        ],
        false,
    );
    let before = shared_tree(&d);
    d.cmd()
        .arg("deploy")
        .arg(&tar)
        .args(["--id", "r2"])
        .args(flags)
        .ok();
    before.assert_same(&shared_tree(&d), "shared/ after the second deploy");
    assert_eq!(read(d.path("current/storage/app/seed.txt")), "seed of r1\n");
    assert!(!d.path("current/storage/app/extra.txt").exists());
    assert_eq!(read(d.path("current/.env")), "APP_NAME=r1\n");

    let manifest = read(d.path("releases/.staged/r2"));
    assert!(
        manifest.contains(r#"{"path":"storage","type":"symlink","target":"../../shared/storage"}"#),
        "{manifest}"
    );
    assert!(!manifest.contains("extra.txt"), "{manifest}");
    d.cmd().args(["verify", "r2"]).ok();
    // Writing into shared/ changes nothing verify looks at: it does not
    // follow the link.
    std::fs::write(d.path("shared/storage/app/seed.txt"), "changed\n").unwrap();
    std::fs::write(d.path("shared/.env"), "APP_NAME=edited\n").unwrap();
    d.cmd().args(["verify", "r2"]).ok();
    d.cmd().args(["activate", "r1", "--verify"]).ok();
}

/// A shared path below a directory the release does not ship gets its
/// parents made inside the release (0755); a directory with nothing to
/// seed is made empty in `shared/`; links climb one `../` per level.
#[test]
fn deeper_paths_get_parents_and_longer_links() {
    let d = Dir::new();
    let src = laravel(&d, "src", "r1");
    d.cmd()
        .arg("stage")
        .arg(&src)
        .args(["--id", "r1", "--shared-dir", "public/uploads"])
        .args(["--shared-dir", "var/cache/app"])
        .ok();
    assert_eq!(
        link(&d, "releases/r1/public/uploads"),
        "../../../shared/public/uploads"
    );
    assert_eq!(
        link(&d, "releases/r1/var/cache/app"),
        "../../../../shared/var/cache/app"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| p.symlink_metadata().unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(d.path("releases/r1/var")), 0o755);
    assert_eq!(mode(d.path("releases/r1/var/cache")), 0o755);
    assert!(d.path("shared/public/uploads").is_dir());
    assert!(d.path("shared/var/cache/app").is_dir());
    assert_eq!(
        std::fs::read_dir(d.path("shared/var/cache/app"))
            .unwrap()
            .count(),
        0
    );
    // The links resolve.
    std::fs::write(d.path("releases/r1/var/cache/app/x"), "x").unwrap();
    assert_eq!(read(d.path("shared/var/cache/app/x")), "x");
    d.cmd().args(["verify", "r1"]).ok();
}

/// A shared file that `shared/` lacks and the release does not ship:
/// exit 2, one line naming it, and the tree exactly as before (no
/// release, no temp tree, no `shared/`, not even `releases/`), on a fresh
/// root and on one with releases.
#[test]
fn a_shared_file_with_nothing_to_seed_is_refused() {
    let d = Dir::new();
    let src = d.outside().join("src");
    std::fs::create_dir_all(src.join("storage")).unwrap();
    std::fs::write(src.join("version"), "r1\n").unwrap();
    for round in ["fresh root", "with a release"] {
        let before = d.tree();
        for cmd in ["stage", "deploy"] {
            let r = d
                .cmd()
                .arg(cmd)
                .arg(&src)
                .args(["--shared-dir", "storage", "--shared-file", ".env"])
                .expect(2);
            let line = r.one_line_error();
            assert!(line.contains(".env") && line.contains("seed"), "{r}");
            before.assert_same(&d.tree(), &format!("{round}: {cmd}"));
            no_temp_trees(&d);
        }
        d.cmd().arg("deploy").arg(&src).ok();
    }
}

/// Bad shared paths from flags and from the config: exit 2 naming the
/// flag or key and the path, nothing changed.
#[test]
fn bad_shared_paths_are_refused_before_anything() {
    let d = Dir::new();
    let src = laravel(&d, "src", "r1");
    d.cmd().arg("deploy").arg(&src).args(["--id", "r0"]).ok();
    let before = d.tree();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--shared-dir", "../x"], &["--shared-dir", "../x", ".."]),
        (
            &["--shared-dir", "storage/../../x"],
            &["--shared-dir", ".."],
        ),
        (
            &["--shared-file", "/etc/passwd"],
            &["--shared-file", "/etc/passwd", "absolute"],
        ),
        (
            &["--shared-dir", ".releasectl"],
            &["--shared-dir", ".releasectl"],
        ),
        (
            &["--shared-file", ".releasectl/lock"],
            &["--shared-file", ".releasectl"],
        ),
        (
            &["--shared-dir", "releases/r0"],
            &["--shared-dir", "releases"],
        ),
        (&["--shared-file", "current"], &["--shared-file", "current"]),
        (&["--shared-dir", "shared"], &["--shared-dir", "shared"]),
        (&["--shared-dir", "."], &["--shared-dir", "`.`"]),
        (&["--shared-dir", ""], &["--shared-dir", "empty"]),
        (&["--shared-dir", "a//b"], &["--shared-dir", "a//b"]),
        (
            &["--shared-dir", "storage", "--shared-dir", "storage/logs"],
            &["--shared-dir storage/logs", "nests"],
        ),
        (
            &["--shared-dir", "storage", "--shared-file", "storage"],
            &["--shared-file storage", "already"],
        ),
    ];
    for (flags, needles) in cases {
        for cmd in ["stage", "deploy"] {
            let r = d.cmd().arg(cmd).arg(&src).args(*flags).expect(2);
            let line = r.one_line_error();
            for n in *needles {
                assert!(line.contains(n), "{flags:?}: no {n:?} in\n{r}");
            }
            before.assert_same(&d.tree(), &format!("{cmd} {flags:?}"));
        }
    }
    // A dry run refuses them too.
    d.cmd()
        .args(["deploy", "--dry-run"])
        .arg(&src)
        .args(["--shared-dir", "../x"])
        .expect(2);

    // From the config: the key and the line; a flag clashing with it too.
    for (body, needles) in [
        (
            "dirs = [\"../up\"]",
            &[":4: key `shared.dirs`", "../up"][..],
        ),
        (
            "files = [\"/abs\"]",
            &[":4: key `shared.files`", "absolute"],
        ),
        (
            "dirs = [\"a\", \"a/b\"]",
            &[":4: key `shared.dirs`", "nests"],
        ),
        (
            "dirs = [\"x\"]\nfiles = [\"x\"]",
            &[":5: key `shared.files`", "already"],
        ),
        ("links = [\"x\"]", &[":4: key `shared.links`"]),
    ] {
        d.config("web", &format!("root = \"{{root}}\"\n\n[shared]\n{body}\n"));
        let before = d.tree();
        let r = d.cmd_config().arg("stage").arg(&src).expect(2);
        for n in needles {
            assert!(r.one_line_error().contains(n), "{body}: no {n:?} in\n{r}");
        }
        before.assert_same(&d.tree(), body);
    }
    d.config("web", "root = \"{root}\"\n[shared]\ndirs = [\"storage\"]\n");
    let before = d.tree();
    let r = d
        .cmd_config()
        .arg("deploy")
        .arg(&src)
        .args(["--shared-file", "storage"])
        .expect(2);
    assert!(r.one_line_error().contains("shared.dirs storage"), "{r}");
    before.assert_same(&d.tree(), "flag clashing with the config");
}

/// A hostile archive that ships `storage` as a symlink to a directory
/// outside ROOT (and to /etc), or `public` as one when the shared path is
/// `public/uploads`, or `.env` as one: root never follows it. The symlink
/// is not a seed: a shared directory is made empty, a shared file with
/// only a symlink to seed from is refused (exit 2), and a symlink on the
/// way to a shared path is refused (exit 2); nothing outside ROOT changes.
#[test]
fn hostile_archive_symlinks_are_never_followed() {
    let d = Dir::new();
    let victim = d.outside().join("victim");
    std::fs::create_dir_all(victim.join("uploads")).unwrap();
    std::fs::write(victim.join("passwd"), "root:x:0:0\n").unwrap();
    std::fs::write(victim.join("uploads/keep"), "victim's\n").unwrap();
    let outside = || Tree::of(&victim);
    let victim_before = outside();
    let etc_before = std::fs::symlink_metadata("/etc").unwrap();
    let v = victim.to_str().unwrap();
    let tar = |name: &str, entry: TarEntry| {
        let p = d.outside().join(name);
        make_tar(&p, &[TarEntry::File("version", "h\n"), entry], false);
        p
    };

    // storage -> victim and -> /etc on a first deploy: an empty shared
    // dir, the release's link, exit 0.
    for (i, target) in [v, "/etc"].into_iter().enumerate() {
        let a = tar(&format!("s{i}.tar"), TarEntry::Symlink("storage", target));
        let id = format!("s{i}");
        d.cmd()
            .arg("deploy")
            .arg(&a)
            .args(["--id", &id, "--shared-dir", "storage"])
            .ok();
        assert_eq!(
            link(&d, &format!("releases/{id}/storage")),
            "../../shared/storage"
        );
        let meta = d.path("shared/storage").symlink_metadata().unwrap();
        assert!(meta.is_dir(), "shared/storage is not a real directory");
        assert_eq!(
            std::fs::read_dir(d.path("shared/storage")).unwrap().count(),
            0
        );
        d.cmd().args(["verify", &id]).ok();
    }

    // .env -> victim/passwd with nothing in shared/: refused, unchanged.
    let a = tar("e.tar", TarEntry::Symlink(".env", &format!("{v}/passwd")));
    let before = d.tree();
    let r = d
        .cmd()
        .arg("deploy")
        .arg(&a)
        .args(["--shared-file", ".env"])
        .expect(2);
    assert!(r.one_line_error().contains("symlink"), "{r}");
    before.assert_same(&d.tree(), ".env symlink");

    // public -> victim, shared path public/uploads: refused, unchanged,
    // on a first deploy and when shared/public/uploads exists.
    let a = tar("p.tar", TarEntry::Symlink("public", v));
    for round in ["first", "seeded"] {
        if round == "seeded" {
            std::fs::create_dir_all(d.path("shared/public/uploads")).unwrap();
        }
        let before = d.tree();
        let r = d
            .cmd()
            .arg("deploy")
            .arg(&a)
            .args(["--shared-dir", "public/uploads"])
            .expect(2);
        let line = r.one_line_error();
        assert!(line.contains("public") && line.contains("symlink"), "{r}");
        before.assert_same(&d.tree(), &format!("public symlink, {round}"));
    }
    victim_before.assert_same(&outside(), "the victim");
    let etc_after = std::fs::symlink_metadata("/etc").unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (
            etc_before.ino(),
            etc_before.mtime(),
            etc_before.mtime_nsec()
        ),
        (etc_after.ino(), etc_after.mtime(), etc_after.mtime_nsec()),
        "/etc changed"
    );
}

/// The shipped symlink when `shared/storage` exists: removed as a name,
/// the link takes its place, nothing behind either is touched.
#[test]
fn a_shipped_symlink_over_an_existing_shared_dir_is_discarded() {
    let d = Dir::new();
    let victim = d.outside().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "victim's\n").unwrap();
    std::fs::create_dir_all(d.path("shared/storage")).unwrap();
    std::fs::write(d.path("shared/storage/data"), "shared data\n").unwrap();
    let a = d.outside().join("a.tar");
    make_tar(
        &a,
        &[
            TarEntry::File("version", "r1\n"),
            TarEntry::Symlink("storage", victim.to_str().unwrap()),
        ],
        false,
    );
    let (victim_before, shared_before) = (Tree::of(&victim), shared_tree(&d));
    d.cmd()
        .arg("deploy")
        .arg(&a)
        .args(["--id", "r1", "--shared-dir", "storage"])
        .ok();
    assert_eq!(link(&d, "releases/r1/storage"), "../../shared/storage");
    assert_eq!(read(d.path("current/storage/data")), "shared data\n");
    victim_before.assert_same(&Tree::of(&victim), "the victim");
    shared_before.assert_same(&shared_tree(&d), "shared/");
}

/// A symlinked `shared/`, or a symlink in `shared/` on the way to a
/// shared path, is refused before anything is staged.
#[test]
fn symlinks_in_shared_on_the_way_are_refused() {
    let d = Dir::new();
    let src = laravel(&d, "src", "r1");
    d.cmd().arg("deploy").arg(&src).args(["--id", "r0"]).ok();
    let elsewhere = d.outside().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("uploads")).unwrap();
    for (plant, flags) in [
        ("shared", ["--shared-dir", "storage"]),
        ("shared/public", ["--shared-dir", "public/uploads"]),
    ] {
        std::fs::create_dir_all(d.path("shared")).unwrap();
        let _ = std::fs::remove_dir(d.path(plant));
        std::os::unix::fs::symlink(&elsewhere, d.path(plant)).unwrap();
        let before = d.tree();
        let r = d.cmd().arg("deploy").arg(&src).args(flags).expect(2);
        assert!(
            r.one_line_error()
                .contains(plant.rsplit('/').next().unwrap()),
            "{r}"
        );
        before.assert_same(&d.tree(), plant);
        std::fs::remove_file(d.path(plant)).unwrap();
    }
}

/// Unmounts on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// `shared/` on another file system (an operator's mount): the seed
/// cannot be renamed there and is copied instead, modes kept, and the
/// release holds the link only. Needs root (mount).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_seed_is_copied_when_shared_is_another_file_system() {
    common::require_root("mount");
    let d = Dir::new();
    std::fs::create_dir(d.path("shared")).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs"])
        .arg(d.path("shared"))
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _guard = Mounted(d.path("shared"));
    let src = laravel(&d, "src", "r1");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("storage/app"), PermissionsExt::from_mode(0o750)).unwrap();
    std::fs::set_permissions(src.join(".env"), PermissionsExt::from_mode(0o640)).unwrap();
    d.cmd()
        .arg("deploy")
        .arg(&src)
        .args([
            "--id",
            "r1",
            "--shared-dir",
            "storage",
            "--shared-file",
            ".env",
        ])
        .ok();
    assert_eq!(read(d.path("shared/storage/app/seed.txt")), "seed of r1\n");
    assert_eq!(read(d.path("current/.env")), "APP_NAME=r1\n");
    let mode = |p: PathBuf| p.symlink_metadata().unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(d.path("shared/storage/app")), 0o750);
    assert_eq!(mode(d.path("shared/.env")), 0o640);
    let names: Vec<_> = std::fs::read_dir(d.path("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".seed")), "{names:?}");
    assert_eq!(link(&d, "releases/r1/storage"), "../../shared/storage");
    d.cmd().args(["verify", "r1"]).ok();
}

/// A re-run of the same stage with shared paths is `unchanged` (the links
/// are part of the release, what is behind them is not), and a dry run
/// neither seeds `shared/` on a fresh root nor touches it later.
#[test]
fn restaging_and_dry_runs_leave_shared_alone() {
    let d = Dir::new();
    let src = laravel(&d, "src", "v1");
    let flags = ["--shared-dir", "storage", "--shared-file", ".env"];
    let fresh = Tree::of(&d.root());
    let r = d
        .cmd()
        .args(["--json", "stage", "--dry-run", "--id", "v1"])
        .args(flags)
        .arg(&src)
        .ok()
        .json();
    assert_eq!(r["outcome"], "would_stage", "{r}");
    fresh.assert_same(&Tree::of(&d.root()), "a dry run on a fresh root");
    assert!(!d.path("shared").exists(), "a dry run seeded shared/");

    d.cmd()
        .args(["stage", "--id", "v1"])
        .args(flags)
        .arg(&src)
        .ok();
    // The app writes into shared/ and the build changes what it ships there:
    // neither is part of the release.
    std::fs::write(d.path("shared/storage/app/upload.bin"), "data").unwrap();
    std::fs::write(src.join("storage/app/seed.txt"), "another seed\n").unwrap();
    std::fs::write(src.join(".env"), "APP_NAME=other\n").unwrap();
    let before = Tree::of(&d.root());
    for dry in [true, false] {
        let mut cmd = d.cmd();
        cmd.args(["--json", "stage", "--id", "v1"])
            .args(flags)
            .arg(&src);
        if dry {
            cmd.arg("--dry-run");
        }
        let r = cmd.ok().json();
        let said = if dry { &r["outcome"] } else { &r["unchanged"] };
        let want: serde_json::Value = if dry { "unchanged".into() } else { true.into() };
        assert_eq!(said, &want, "dry run {dry}: {r}");
        before.assert_same(&Tree::of(&d.root()), "re-staging with shared paths");
    }
    no_temp_trees(&d);
}

/// README "Shared paths": `dirs = ["storage", "bootstrap/cache"]` with an
/// `owner` and a `mode` (`nobody` here, as root over a root-owned ROOT).
fn owned_config(d: &Dir, extra: &str) {
    d.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[shared]\ndirs = [\"storage\", \"bootstrap/cache\"]\n{extra}\n"
        ),
    );
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// The seeded `storage/` tree and the `bootstrap/cache/` created empty belong to
/// `nobody` (65534) with the mode (files without execute bits unless they
/// had one), bottom to top; `shared/` itself stays root's; the release's
/// link works. A later deploy leaves what `shared/` holds alone.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn shared_owner_and_mode_are_given_to_what_is_seeded() {
    common::require_root("chown");
    let d = Dir::new();
    owned_config(&d, "owner = \"nobody\"\nmode = \"0770\"");
    let src = laravel(&d, "src", "r1");
    std::fs::write(src.join("storage/app/run.sh"), "#!/bin/sh\n").unwrap();
    let exec = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(src.join("storage/app/run.sh"), exec).unwrap();
    std::os::unix::fs::symlink("seed.txt", src.join("storage/app/alias")).unwrap();
    d.cmd_config()
        .args(["deploy", "--app", "web"])
        .arg(&src)
        .args(["--id", "r1"])
        .ok();
    for (rel, mode) in [
        ("shared/storage", 0o770),
        ("shared/storage/logs", 0o770),
        ("shared/storage/app", 0o770),
        ("shared/storage/logs/.gitignore", 0o660),
        ("shared/storage/app/seed.txt", 0o660),
        ("shared/storage/app/run.sh", 0o770),
        ("shared/bootstrap/cache", 0o770),
    ] {
        assert_eq!(owner_mode(&d.path(rel)), (65534, 65534, mode), "{rel}");
    }
    // Symlinks are left as written; shared/ itself and the directories on
    // the way stay root's.
    assert_eq!(owner_mode(&d.path("shared/storage/app/alias")).0, 0);
    assert_eq!(owner_mode(&d.path("shared/bootstrap")), (0, 0, 0o755));
    assert_eq!(owner_mode(&d.path("shared")), (0, 0, 0o755));
    assert_eq!(read(d.path("current/storage/app/seed.txt")), "seed of r1\n");
    d.cmd().args(["verify", "r1"]).ok();

    // What shared/ already holds is never touched again, whatever the
    // config now says.
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(d.path("shared/storage"), mode).unwrap();
    std::os::unix::fs::chown(d.path("shared/bootstrap/cache"), Some(1), Some(1)).unwrap();
    owned_config(&d, "owner = \"daemon\"\nmode = \"0775\"");
    let before = shared_tree(&d);
    let before_modes = (
        owner_mode(&d.path("shared/storage")),
        owner_mode(&d.path("shared/bootstrap/cache")),
    );
    d.cmd_config()
        .args(["deploy", "--app", "web"])
        .arg(laravel(&d, "src2", "r2"))
        .args(["--id", "r2"])
        .ok();
    before.assert_same(&shared_tree(&d), "shared/ after a second deploy");
    assert_eq!(
        before_modes,
        (
            owner_mode(&d.path("shared/storage")),
            owner_mode(&d.path("shared/bootstrap/cache"))
        )
    );
    assert_eq!(before_modes.0, (65534, 65534, 0o700));
    assert_eq!(before_modes.1, (1, 1, 0o770));
}

/// Below a `shared/` another user owns, root writes with that user's
/// rights and cannot give anything away: an `owner` other than that user
/// is refused (exit 1, one line naming shared/), nothing changed; the
/// owner itself is accepted.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_shared_owner_other_than_the_owner_of_shared_is_refused() {
    common::require_root("chown");
    let d = Dir::new();
    std::fs::create_dir(d.path("shared")).unwrap();
    std::os::unix::fs::chown(d.path("shared"), Some(1), Some(1)).unwrap();
    owned_config(&d, "owner = \"nobody\"\nmode = \"0770\"");
    let src = laravel(&d, "src", "r1");
    let before = Tree::of(&d.root());
    for cmd in ["stage", "deploy"] {
        let r = d
            .cmd_config()
            .args([cmd, "--app", "web"])
            .arg(&src)
            .expect(1);
        let line = r.one_line_error();
        assert!(
            line.contains("shared") && line.contains("nobody") && line.contains("chown"),
            "{r}"
        );
        before.assert_same(&Tree::of(&d.root()), cmd);
        no_temp_trees(&d);
    }
    // The owner of shared/ may be named: it is who writes there anyway.
    owned_config(&d, "owner = \"daemon\"\nmode = \"0750\"");
    d.cmd_config()
        .args(["deploy", "--app", "web"])
        .arg(&src)
        .ok();
    assert_eq!(owner_mode(&d.path("shared/storage")), (1, 1, 0o750));
    assert_eq!(
        owner_mode(&d.path("shared/storage/app/seed.txt")),
        (1, 1, 0o640)
    );
}

/// A user that does not exist or a mode that is not octal: exit 2, one
/// line naming the key, nothing changed.
#[test]
fn bad_shared_owner_or_mode_is_refused() {
    let d = Dir::new();
    let src = laravel(&d, "src", "r1");
    let before = Tree::of(&d.root());
    for (extra, key) in [
        (
            "owner = \"no-such-user-xyz\"",
            "shared.owner`: \"no-such-user-xyz\" is not a user",
        ),
        ("owner = \"\"", "shared.owner`: \"\" is not a user"),
        (
            "mode = \"0778\"",
            "shared.mode`: \"0778\" is not an octal mode",
        ),
        (
            "mode = \"770a\"",
            "shared.mode`: \"770a\" is not an octal mode",
        ),
        (
            "mode = \"17777\"",
            "shared.mode`: \"17777\" is not an octal mode",
        ),
        // An integer is not taken for octal: 770 would be 01402.
        ("mode = 770", "shared.mode"),
    ] {
        owned_config(&d, extra);
        let r = d
            .cmd_config()
            .args(["deploy", "--app", "web"])
            .arg(&src)
            .expect(2);
        assert!(r.one_line_error().contains(key), "{extra}: {r}");
        before.assert_same(&Tree::of(&d.root()), extra);
    }
}

/// The same when `shared/` is still to be made in an app root the deploy
/// user owns: it would be made with that user's rights.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_shared_owner_is_refused_in_a_deploy_owned_root() {
    common::require_root("chown");
    let d = Dir::new();
    std::os::unix::fs::chown(d.root(), Some(1), Some(1)).unwrap();
    owned_config(&d, "owner = \"nobody\"");
    let src = laravel(&d, "src", "r1");
    let before = Tree::of(&d.root());
    let r = d
        .cmd_config()
        .args(["deploy", "--app", "web"])
        .arg(&src)
        .expect(1);
    assert!(r.one_line_error().contains("uid 1"), "{r}");
    before.assert_same(&Tree::of(&d.root()), "deploy");
    assert!(!d.path("shared").exists());
}

/// A seeded file with another name (here a hard link from the release's
/// `public/`) is not given away: the app's user would then own, and write
/// to, the release's file too.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_hard_linked_seed_file_is_left_alone() {
    common::require_root("chown");
    let d = Dir::new();
    owned_config(&d, "owner = \"nobody\"\nmode = \"0770\"");
    let src = d.outside().join("r1.tar");
    make_tar(
        &src,
        &[
            TarEntry::File("version", "r1\n"),
            TarEntry::File("public/index.php", "<?php\n"),
            TarEntry::File("storage/app/seed.txt", "seed\n"),
            TarEntry::Hardlink("storage/app/index.php", "public/index.php"),
        ],
        false,
    );
    let r = d
        .cmd_config()
        .args(["deploy", "--app", "web"])
        .arg(&src)
        .args(["--id", "r1"])
        .ok();
    assert!(r.stderr.contains("other hard links"), "{r}");
    let linked = owner_mode(&d.path("shared/storage/app/index.php"));
    assert_eq!(linked.0, 0, "the hard-linked file was given away");
    assert_eq!(owner_mode(&d.path("releases/r1/public/index.php")), linked);
    assert_eq!(
        owner_mode(&d.path("shared/storage/app/seed.txt")),
        (65534, 65534, 0o660)
    );
}

/// The README's "Without root" layout with shared paths: a member cannot
/// create `shared/` (or a path root's `shared/` lacks) in root's app root.
/// Its stage is refused before anything is written, naming the missing
/// path (exit 1, not a bare EACCES halfway through); once root has made
/// them, the same stage links them.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_member_cannot_create_shared_paths_in_roots_app_root() {
    common::require_root("a member is another uid");
    common::require_tool("setpriv");
    let member = || {
        common::TestCommand::under(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
    };
    let d = Dir::new();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    for p in [d.base().to_path_buf(), d.root(), d.outside()] {
        chmod(&p, 0o755);
    }
    std::fs::create_dir(d.path("releases")).unwrap();
    chmod(&d.path("releases"), 0o1777);
    let src = laravel(&d, "src", "r1");
    chmod(&src, 0o755);
    let stage = |id: &str| {
        let mut c = member();
        c.arg("--root").arg(d.root()).arg("stage").arg(&src).args([
            "--id",
            id,
            "--shared-dir",
            "storage",
            "--shared-file",
            ".env",
        ]);
        c
    };

    // `check`, the pre-flight, sees what a member's stage would hit.
    d.config(
        "web",
        &format!(
            "root = \"{}\"\n[shared]\ndirs = [\"storage\"]\nfiles = [\".env\"]\n",
            d.root().display()
        ),
    );
    let check = |code: i32| {
        let r = d.cmd_config().args(["check", "web"]).expect(code);
        r.stdout
            .lines()
            .filter(|l| l.contains("shared/"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let lines = check(1);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("FAIL  shared/") && l.contains("make it once as root")),
        "{lines:?}"
    );

    // No shared/ at all, then shared/ without storage.
    let before = Tree::of(&d.root());
    let r = stage("r1").expect(1);
    let err = r.one_line_error();
    assert!(err.contains("shared/storage does not exist"), "{r}");
    assert!(err.contains("Without root"), "{r}");
    before.assert_same(&Tree::of(&d.root()), "a refused member's stage");

    std::fs::create_dir(d.path("shared")).unwrap();
    chmod(&d.path("shared"), 0o755);
    std::fs::write(d.path("shared/.env"), "APP_NAME=operator\n").unwrap();
    let before = Tree::of(&d.root());
    let r = stage("r1").expect(1);
    assert!(
        r.one_line_error().contains("shared/storage does not exist"),
        "{r}"
    );
    before.assert_same(&Tree::of(&d.root()), "a refused member's stage");

    // Root makes the directory for the app's user: the member's stage links.
    std::fs::create_dir(d.path("shared/storage")).unwrap();
    std::os::unix::fs::chown(d.path("shared/storage"), Some(65534), Some(65534)).unwrap();
    assert_eq!(
        check(0),
        ["ok    shared/storage: exists", "ok    shared/.env: exists"]
    );
    stage("r1").ok();
    assert_eq!(link(&d, "releases/r1/storage"), "../../shared/storage");
    assert_eq!(link(&d, "releases/r1/.env"), "../../shared/.env");
    assert_eq!(read(d.path("shared/.env")), "APP_NAME=operator\n");
    no_temp_trees(&d);
}
