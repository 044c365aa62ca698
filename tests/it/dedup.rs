//! Dedup of unchanged files on real file systems: XFS with reflink and
//! ext4 in loop-mounted images (root, mkfs.xfs, mkfs.ext4), tmpfs for what
//! needs no image. A new release differing in 1 % of its files shares the
//! rest (block counts, FIEMAP's `shared` flag, inode numbers); a write into
//! a clone leaves the old release as it was; prune of one release never
//! damages another; and the deploy user, racing root, cannot get a file of
//! its own or one outside ROOT linked or cloned into a release.

use crate::common::{self, have, missing, require_root, require_tool, Dir, TestCommand};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILES: usize = 200;
const SIZE: usize = 64 * 1024;

/// A file system image mounted on a loop device, unmounted on drop.
struct LoopFs {
    _tmp: tempfile::TempDir,
    mnt: PathBuf,
}

impl LoopFs {
    /// `kind` is "xfs" (with reflink) or "ext4".
    #[track_caller]
    fn new(kind: &str) -> LoopFs {
        let mkfs = format!("mkfs.{kind}");
        require_root(&format!("mounts a loop-mounted {kind} image"));
        if !have(&mkfs) {
            missing(&format!(
                "{mkfs} not found (apt-get install xfsprogs e2fsprogs)"
            ));
        }
        let tmp = tempfile::Builder::new()
            .prefix("rctl-dedup-")
            .tempdir_in("/tmp")
            .unwrap();
        let img = tmp.path().join("img");
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&img).unwrap().set_len(512 << 20).unwrap();
        let mut mk = Command::new(&mkfs);
        match kind {
            "xfs" => mk.args(["-q", "-m", "reflink=1"]),
            _ => mk.args(["-q", "-F"]),
        };
        run(mk.arg(&img));
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        if !mounted.status.success() {
            missing(&format!(
                "cannot loop-mount a {kind} image: {}",
                String::from_utf8_lossy(&mounted.stderr).trim()
            ));
        }
        LoopFs { _tmp: tmp, mnt }
    }

    /// Bytes in use on the file system.
    fn used(&self) -> u64 {
        sync(&self.mnt);
        let st = rustix::fs::statvfs(&self.mnt).unwrap();
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

fn sync(path: &Path) {
    run(Command::new("sync").arg("-f").arg(path));
}

/// `releasectl --root ROOT`
fn rctl(root: &Path) -> TestCommand {
    let mut c = TestCommand::new();
    c.arg("--root").arg(root);
    c
}

/// A source of [`FILES`] files of [`SIZE`] random bytes in 4 directories,
/// plus an empty file and a symlink.
fn make_source(src: &Path) {
    let mut seed = 0x9e3779b97f4a7c15u64;
    for i in 0..FILES {
        let dir = src.join(format!("d{}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..SIZE)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        fs::write(dir.join(format!("f{i}")), data).unwrap();
    }
    fs::write(src.join("empty"), "").unwrap();
    std::os::unix::fs::symlink("d0/f0", src.join("link")).unwrap();
}

/// Change 1 % of the files: same size, one byte differs (the case a size
/// or mtime guess would get wrong), one grown, and one changed mode.
fn change_one_percent(src: &Path) -> Vec<&'static str> {
    let flip = |rel: &str, at: usize| {
        let p = src.join(rel);
        let mut data = fs::read(&p).unwrap();
        data[at] ^= 0xff;
        fs::write(&p, data).unwrap();
    };
    flip("d0/f0", SIZE - 1);
    flip("d1/f1", 0);
    let mut grown = fs::read(src.join("d2/f2")).unwrap();
    grown.extend_from_slice(b"more");
    fs::write(src.join("d2/f2"), grown).unwrap();
    fs::set_permissions(src.join("d3/f3"), fs::Permissions::from_mode(0o755)).unwrap();
    vec!["d0/f0", "d1/f1", "d2/f2", "d3/f3"]
}

/// The release's staging record header.
fn header(root: &Path, id: &str) -> serde_json::Value {
    let text = fs::read_to_string(root.join("releases/.staged").join(id)).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

fn verify(root: &Path, id: &str, code: i32) {
    rctl(root).args(["verify", id]).expect(code);
}

/// FIEMAP's flags for the file's extents, as `filefrag -v` prints them.
fn extent_flags(path: &Path) -> String {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stage(root: &Path, src: &Path, id: &str, extra: &[&str]) {
    rctl(root)
        .arg("stage")
        .arg(src)
        .args(["--id", id])
        .args(extra)
        .ok();
}

fn activate(root: &Path, id: &str) {
    rctl(root)
        .args(["activate", id, "--no-reload", "--no-health"])
        .ok();
}

#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn xfs_reflink_shares_unchanged_files_and_a_write_copies() {
    let fs_ = LoopFs::new("xfs");
    common::require_tool("filefrag");
    let (root, src) = (fs_.mnt.join("app"), fs_.mnt.join("src"));
    fs::create_dir(&root).unwrap();
    make_source(&src);
    stage(&root, &src, "v1", &[]);
    activate(&root, "v1");
    let changed = change_one_percent(&src);
    let before = fs_.used();
    stage(&root, &src, "v2", &[]);
    let grew = fs_.used() - before;
    let total = (FILES * SIZE) as u64;

    // 196 files cloned, the 4 changed ones (content, size or mode) not... the
    // mode change alone does not stop a clone: the clone is a new inode.
    let d = &header(&root, "v2")["dedup"];
    assert_eq!(d["mode"], "reflink", "{d}");
    assert_eq!(d["from"], "v1", "{d}");
    assert_eq!(d["files"], (FILES - 3) as u64, "{d}");
    assert_eq!(d["total_files"], (FILES + 1) as u64, "{d}");
    // New blocks: the changed files and metadata, at most 5 % of the release.
    assert!(
        grew <= total / 20,
        "staging v2 used {grew} new bytes of a {total}-byte release"
    );
    let (old, new) = (root.join("releases/v1"), root.join("releases/v2"));
    let flags = extent_flags(&new.join("d1/f5"));
    assert!(flags.contains("shared"), "not a shared extent:\n{flags}");
    let flags = extent_flags(&new.join("d1/f1"));
    assert!(!flags.contains("shared"), "a changed file shares:\n{flags}");
    for rel in &changed {
        assert_eq!(
            fs::read(new.join(rel)).unwrap(),
            fs::read(src.join(rel)).unwrap()
        );
    }
    assert_eq!(
        fs::metadata(new.join("d3/f3")).unwrap().mode() & 0o777,
        0o755
    );
    assert_ne!(
        fs::metadata(new.join("d1/f5")).unwrap().ino(),
        fs::metadata(old.join("d1/f5")).unwrap().ino()
    );
    verify(&root, "v1", 0);
    verify(&root, "v2", 0);
    let list = rctl(&root).args(["--json", "list"]).ok().json();
    let v2 = list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "v2")
        .unwrap()
        .clone();
    assert_eq!(v2["dedup"], *d, "{list}");
    let text = rctl(&root).arg("list").ok().stdout;
    assert!(
        text.contains(&format!("shared: {} of {} files", FILES - 3, FILES + 1)),
        "{text}"
    );
    activate(&root, "v2");
    let status = rctl(&root).args(["--json", "status"]).ok().json();
    assert_eq!(status["dedup"]["from"], "v1", "{status}");
    activate(&root, "v1");

    // A write into a clone of v2 gives it its own blocks: v1 is unchanged.
    let old_bytes = fs::read(old.join("d1/f5")).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(new.join("d1/f5"))
            .unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.write_all(b"written in place").unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(fs::read(old.join("d1/f5")).unwrap(), old_bytes);
    verify(&root, "v1", 0);
    verify(&root, "v2", 14);

    // From an archive too; then prune v1 (shared with v2, which v3 shares):
    // the others stay whole.
    let tar = fs_.mnt.join("src.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    activate(&root, "v2");
    stage(&root, &tar, "v3", &[]);
    assert_eq!(header(&root, "v3")["dedup"]["files"], FILES as u64 - 1);
    activate(&root, "v3");
    rctl(&root).args(["prune", "--keep", "1"]).ok();
    assert!(!old.exists(), "v1 was not pruned");
    verify(&root, "v3", 0);
    verify(&root, "v2", 14); // as before the prune: the one write
    let shared_with_v2 = fs::read(new.join("d1/f9")).unwrap();
    assert_eq!(shared_with_v2, fs::read(src.join("d1/f9")).unwrap());
}

#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn ext4_auto_copies_and_hardlink_links_equal_modes_only() {
    let fs_ = LoopFs::new("ext4");
    let (root, src) = (fs_.mnt.join("app"), fs_.mnt.join("src"));
    fs::create_dir(&root).unwrap();
    make_source(&src);
    stage(&root, &src, "v1", &[]);
    activate(&root, "v1");
    let changed = change_one_percent(&src);
    let total = (FILES * SIZE) as u64;

    // auto on ext4: no FICLONE, so a plain copy and no dedup record.
    let before = fs_.used();
    stage(&root, &src, "v2", &[]);
    assert!(
        fs_.used() - before >= total,
        "auto copied less than the release"
    );
    assert!(header(&root, "v2").get("dedup").is_none());
    let ino = |id: &str, rel: &str| {
        let m = fs::metadata(root.join("releases").join(id).join(rel)).unwrap();
        (m.ino(), m.nlink())
    };
    assert_ne!(ino("v1", "d1/f5").0, ino("v2", "d1/f5").0);

    // hardlink: the same inodes, except where content or mode differ.
    let before = fs_.used();
    stage(&root, &src, "v3", &["--dedup", "hardlink"]);
    assert!(fs_.used() - before <= total / 20);
    let d = &header(&root, "v3")["dedup"];
    assert_eq!(d["mode"], "hardlink", "{d}");
    assert_eq!(d["files"], (FILES - changed.len()) as u64, "{d}");
    assert_eq!(ino("v1", "d1/f5"), ino("v3", "d1/f5"));
    assert_eq!(ino("v3", "d1/f5").1, 2);
    for rel in &changed {
        assert_ne!(ino("v1", rel).0, ino("v3", rel).0, "{rel} was linked");
    }
    verify(&root, "v1", 0);
    verify(&root, "v3", 0);

    // Prune v1: v3 keeps its files (one link fewer), and verifies.
    activate(&root, "v3");
    activate(&root, "v2");
    activate(&root, "v3");
    rctl(&root).args(["prune", "--keep", "1"]).ok();
    assert!(!root.join("releases/v1").exists());
    verify(&root, "v3", 0);
    assert_eq!(ino("v3", "d1/f5").1, 1);

    // The caveat the man page states: a hard-linked file written in place
    // changes every release that links it.
    stage(&root, &src, "v4", &["--dedup", "hardlink"]);
    fs::write(root.join("releases/v4/d1/f5"), "in place").unwrap();
    verify(&root, "v3", 14);
}

/// `reflink` where the file system cannot clone (tmpfs) is refused with
/// nothing left; a bad mode in the config or on the command line is exit 2.
#[test]
fn reflink_without_support_and_bad_modes_are_refused() {
    let d = Dir::on_tmpfs();
    let src = d.base().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), "a\n").unwrap();
    d.cmd().arg("stage").arg(&src).args(["--id", "v1"]).ok();
    d.config("web", "root = \"{root}\"\n[stage]\ndedup = \"maybe\"\n");
    let tree = d.tree();
    let r = d
        .cmd()
        .arg("stage")
        .arg(&src)
        .args(["--id", "v2", "--dedup", "reflink"])
        .expect(2);
    assert!(r.one_line_error().contains("cannot clone files"), "{r}");
    tree.assert_same(&d.tree(), "a refused reflink stage");
    d.cmd()
        .arg("stage")
        .arg(&src)
        .args(["--dedup", "sometimes"])
        .expect(2);
    d.config("web", "root = \"{root}\"\n[stage]\ndedup = \"maybe\"\n");
    let r = d
        .cmd_config()
        .args(["stage", "--app", "web"])
        .arg(&src)
        .expect(2);
    assert!(r.one_line_error().contains("dedup"), "{r}");
    tree.assert_same(&d.tree(), "a bad dedup mode");
}

/// A file of the old release that is not the staging user's (the deploy
/// user's own copy, with the very same bytes) is never linked: the deploy
/// user could then write into the new release.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn files_others_own_or_may_write_are_copied() {
    require_root("chowns an old release to another user");
    let d = Dir::on_tmpfs();
    let root = d.root();
    let src = d.base().join("src");
    make_source(&src);
    stage(&root, &src, "v1", &[]);
    activate(&root, "v1");
    let old = root.join("releases/v1");
    std::os::unix::fs::chown(old.join("d1/f5"), Some(65534), Some(65534)).unwrap();
    fs::set_permissions(old.join("d1/f9"), fs::Permissions::from_mode(0o666)).unwrap();
    stage(&root, &src, "v2", &["--dedup", "hardlink"]);
    let ino = |id: &str, rel: &str| {
        fs::metadata(root.join("releases").join(id).join(rel))
            .unwrap()
            .ino()
    };
    assert_ne!(ino("v1", "d1/f5"), ino("v2", "d1/f5"));
    assert_ne!(ino("v1", "d1/f9"), ino("v2", "d1/f9"));
    assert_eq!(ino("v1", "d2/f6"), ino("v2", "d2/f6"));
    assert_eq!(header(&root, "v2")["dedup"]["files"], FILES as u64 - 2);
}

/// The deploy user owns the old release's directories and, while root
/// stages with dedup, keeps exchanging an old file with a symlink to a
/// root-owned file outside ROOT that has the very same bytes, and an old
/// directory with a symlink to a directory outside ROOT. Nothing outside
/// ROOT is linked, cloned, read into the release or changed; the new
/// release holds exactly the source.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn old_release_raced_to_files_outside_root() {
    let python = "/usr/bin/python3";
    require_root("root stages, uid 65534 races");
    require_tool("setpriv");
    if !Path::new(python).exists() {
        missing(&format!("{python} not found"));
    }
    // XFS: reflink and hard link both possible, the victim on the same
    // file system (a hard link to it could be made).
    let fs_ = LoopFs::new("xfs");
    fs::set_permissions(fs_._tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (root, src, victim) = (
        fs_.mnt.join("app"),
        fs_.mnt.join("src"),
        fs_.mnt.join("victim"),
    );
    make_source(&src);
    fs::create_dir(&victim).unwrap();
    fs::create_dir(&root).unwrap();
    // Root's files with the bytes of d0/f4 and of d0/ itself.
    fs::write(victim.join("same"), fs::read(src.join("d0/f4")).unwrap()).unwrap();
    fs::create_dir(victim.join("d0")).unwrap();
    for e in fs::read_dir(src.join("d0")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), victim.join("d0").join(e.file_name())).unwrap();
    }
    let listing = || {
        let mut out = Vec::new();
        for e in walk(&victim) {
            let m = fs::symlink_metadata(&e).unwrap();
            out.push((
                e.clone(),
                m.ino(),
                m.nlink(),
                m.mode(),
                m.mtime(),
                fs::read(&e).ok(),
            ));
        }
        out
    };
    let before = listing();
    let mut rounds = 0;
    let start = Instant::now();
    while rounds < 6 || (start.elapsed() < Duration::from_secs(4) && rounds < 20) {
        let _ = fs::remove_dir_all(&root);
        fs::create_dir(&root).unwrap();
        stage(&root, &src, "v1", &[]);
        activate(&root, "v1");
        // The deploy user owns ROOT and the release's directories (its
        // files stay root's, as staged).
        for e in std::iter::once(root.clone()).chain(walk(&root)) {
            if fs::symlink_metadata(&e).unwrap().is_dir() {
                std::os::unix::fs::lchown(&e, Some(65534), Some(65534)).unwrap();
            }
        }
        let old = root.join("releases/v1");
        std::os::unix::fs::symlink(victim.join("same"), old.join("d0/evil")).unwrap();
        std::os::unix::fs::symlink(victim.join("d0"), old.join("evil")).unwrap();
        let racer = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                python,
                "-c",
            ])
            .arg(RACER)
            .arg(old.join("d0/f4"))
            .arg(old.join("d0/evil"))
            .arg(old.join("d0"))
            .arg(old.join("evil"))
            .spawn()
            .unwrap();
        let mode = if rounds % 2 == 0 {
            "hardlink"
        } else {
            "reflink"
        };
        let r = rctl(&root)
            .arg("stage")
            .arg(&src)
            .args(["--id", "v2", "--dedup", mode])
            .run();
        let pid = rustix::process::Pid::from_raw(racer.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let raced = { racer }.wait().unwrap();
        // Killed, not exited: it ran (as the deploy user) until stopped.
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&raced),
            Some(9),
            "the racer did not run: {raced:?}"
        );
        assert!(matches!(r.code, Some(0..=2)), "{r}");
        if r.code == Some(0) {
            let new = root.join("releases/v2");
            for e in walk(&src) {
                let rel = e.strip_prefix(&src).unwrap();
                let m = fs::symlink_metadata(new.join(rel)).unwrap();
                if m.is_file() {
                    assert_eq!(fs::read(new.join(rel)).unwrap(), fs::read(&e).unwrap());
                    // Written with the rights of releases/'s owner (src/creds.rs).
                    assert_eq!(m.uid(), 65534, "{} is not the owner's", rel.display());
                }
            }
            verify(&root, "v2", 0);
        }
        assert_eq!(listing(), before, "round {rounds}: outside ROOT changed");
        rounds += 1;
    }
}

/// Exchanges argv[1] with argv[2] and argv[3] with argv[4], as fast as it can.
const RACER: &str = r#"
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b, c, d = (p.encode() for p in sys.argv[1:5])
while True:
    libc.renameat2(-100, a, -100, b, 2)
    libc.renameat2(-100, c, -100, d, 2)
"#;

fn walk(top: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}
