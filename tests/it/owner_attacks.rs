//! Attacks on whose rights root acts with, and on root's lock.
//!
//! Directory handles keep root inside ROOT; these tests are about what is
//! *inside*: a tree root made, or another user's files in `shared/`,
//! exchanged by the deploy user (uid 65534, through `setpriv`) into a name
//! root is about to delete, and lock files any user could hold or split.
//! Root must do no more there than the directory's owner could (see
//! src/creds.rs), and its lock must be one no one else can open (see
//! src/lock.rs).
//!
//! They judge by the victim: the files of root's release, or of the other
//! user, are counted by their content wherever the race left them, and the
//! count must not drop. Races reuse the racer and the scene of
//! tests/it/attack.rs.

use crate::attack::{
    as_attacker, attack_ready, brief, chown_tree, ps, root_ready, Attacker, Call, Findings, Mount,
    RaceStats, Scene, ATTACKER, QUICK, SLOW,
};
use crate::common::{self, lock_path, wait_for, TestCommand};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Rounds of the seed race (a fresh app root each).
const SEED_ROUNDS: usize = 20;
/// Rounds of the stage race: two in three stage a cut archive, whose
/// failure is what makes the old code clean up a name it no longer held.
const STAGE_ROUNDS: usize = 30;
/// Rounds of each lock attack.
const LOCK_ROUNDS: usize = 5;
/// A user who is neither root nor the deploy user: the owner of uploads.
const OTHER: u32 = 65533;
/// How the files of root's own release begin (what is counted).
const ROOTS: &str = "root's release file";
/// How the other user's uploads begin.
const UPLOAD: &str = "uploaded by uid 65533";

// ---------------------------------------------------------------------------
// Helpers

fn own(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn own_tree(path: &Path, uid: u32) {
    own(path, uid);
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for e in fs::read_dir(path).unwrap() {
            own_tree(&e.unwrap().path(), uid);
        }
    }
}

/// `dir` with `dirs` subdirectories (0755) of `files` files (0644) each,
/// every file's content starting with `marker`; made by the caller's uid.
/// Returns the number of files.
fn fill(dir: &Path, marker: &str, dirs: usize, files: usize) -> usize {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for i in 0..dirs {
        let sub = dir.join(format!("d{i}"));
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        for j in 0..files {
            let f = sub.join(format!("f{j}"));
            fs::write(&f, format!("{marker} {i} {j}\n")).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    dirs * files
}

/// A release of root's in the deploy user's `releases/` (as an older
/// releasectl, or an operator's `cp -a` as root, left it).
fn roots_release(s: &Scene, id: &str) -> (PathBuf, usize) {
    let d = s.path("releases").join(id);
    let n = fill(&d, ROOTS, 4, 10);
    fs::write(d.join("version"), format!("{ROOTS} {id}\n")).unwrap();
    (d, n + 1)
}

/// Regular files below `top` whose content starts with `marker`, wherever
/// they are (symlinks not followed).
fn count_marked(top: &Path, marker: &str) -> usize {
    let Ok(entries) = fs::read_dir(top) else {
        return 0;
    };
    let mut n = 0;
    for e in entries {
        let p = e.unwrap().path();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            n += count_marked(&p, marker);
        } else if meta.is_file() && fs::read(&p).is_ok_and(|b| b.starts_with(marker.as_bytes())) {
            n += 1;
        }
    }
    n
}

/// Where the directory with inode `ino` is below `top`, if anywhere.
fn find_dir(top: &Path, ino: u64) -> Option<PathBuf> {
    for e in fs::read_dir(top).ok()? {
        let p = e.unwrap().path();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        if meta.ino() == ino {
            return Some(p);
        }
        if let Some(found) = find_dir(&p, ino) {
            return Some(found);
        }
    }
    None
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    pid
}

fn exits(codes: &mut BTreeMap<i32, usize>, r: &Result<common::Run, String>) {
    let code = r.as_ref().ok().and_then(|r| r.code).unwrap_or(-1);
    *codes.entry(code).or_default() += 1;
}

/// `cmd` run as the attacker, to completion.
fn attacker_runs(cmd: &str, args: &[&Path]) -> std::process::Output {
    as_attacker(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd} as uid {ATTACKER}: {e}"))
}

// ---------------------------------------------------------------------------
// 1. stage's temp tree, exchanged with a release of root's

/// A root-owned source of 6 x 25 files, and a plain tar of it cut in half
/// (a stage of it writes a part of the tree, then fails and removes it).
fn stage_sources(s: &Scene) -> (PathBuf, PathBuf) {
    let tree = s.src().join("tree");
    fill(&tree, "staged", 6, 25);
    fs::write(tree.join("version"), "staged\n").unwrap();
    let tar = s.src().join("cut.tar");
    let made = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(made.success(), "tar failed");
    let len = fs::metadata(&tar).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&tar)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    (tree, tar)
}

/// The single-account layout (ROOT and `releases/` the deploy user's) with
/// a release `live` of root's in it. While root stages (a directory in
/// even rounds; a cut archive, which fails, in odd ones), the deploy user
/// exchanges `live` with every `.stage-*` name it sees, so that the name
/// stage cleans up or publishes may hold root's release. Over
/// `STAGE_ROUNDS` rounds, `live` and every one of its files still exist,
/// wherever they ended up: root removed nothing its owner could not.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn stage_temp_name_exchanged_with_roots_release() {
    attack_ready(&["tar"]);
    let s = Scene::on_tmpfs();
    let (tree, cut) = stage_sources(&s);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut codes = BTreeMap::new();
    let mut damaged = 0;
    for round in 0..STAGE_ROUNDS {
        s.reset_root();
        s.release("v0", 0, 0);
        s.to_attacker();
        let (live, files) = roots_release(&s, "live");
        let ino = fs::metadata(&live).unwrap().ino();
        let rel = s.path("releases");
        let mut att = Attacker::start(
            &s,
            json!({"watch": [{"dir": ps(&rel), "prefix": ".stage-", "link": "live"}]}),
        );
        let src = if round % 3 == 0 { &tree } else { &cut };
        let r = s
            .rctl()
            .arg("stage")
            .arg(src)
            .args(["--id", &format!("s{round}")])
            .limit(SLOW)
            .try_run();
        stats.add(&att.stop());
        exits(&mut codes, &r);
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => f.check(matches!(r.code, Some(0..=2)), || {
                format!("round {round}: unexpected exit: {}", brief(r))
            }),
        }
        let left = count_marked(&rel, ROOTS);
        let dir = find_dir(&rel, ino);
        if left != files || dir.is_none() {
            damaged += 1;
            f.add(format!(
                "round {round}: root's release lost files: {left} of {files} left, \
                 its directory {dir:?}"
            ));
        }
    }
    eprintln!(
        "stage temp-name race: {STAGE_ROUNDS} rounds, root's release damaged in {damaged}; \
         exits {codes:?}; racer {stats:?}"
    );
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("stage temp name exchanged with root's release");
}

// ---------------------------------------------------------------------------
// 2. prune's leftover names, given to a release of root's

/// The deploy user renames two releases of root's to what a killed stage
/// and a killed prune leave behind (`.stage-PID-x`, `.prune-x-PID`, PID a
/// process that is gone). prune exits 0, removes the deploy user's own
/// leftover of a killed stage, and leaves root's trees whole.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn prune_leftover_names_on_roots_releases() {
    root_ready(&["setpriv", "mv"]);
    let s = Scene::new();
    for id in ["v1", "v2"] {
        s.release(id, 1, 2);
    }
    s.to_attacker();
    let (_, a) = roots_release(&s, "r-a");
    let (_, b) = roots_release(&s, "r-b");
    let dead = dead_pid();
    let rel = s.path("releases");
    let stage_name = rel.join(format!(".stage-{dead}-x"));
    let prune_name = rel.join(format!(".prune-x-{dead}"));
    // What a killed stage of the deploy user's own leaves: theirs to clean.
    let theirs = rel.join(format!(".stage-{dead}-1"));
    fill(&theirs, "their leftover", 2, 3);
    chown_tree(&theirs);
    for (from, to) in [("r-a", &stage_name), ("r-b", &prune_name)] {
        let out = attacker_runs("mv", &[&rel.join(from), to]);
        assert!(out.status.success(), "mv {from}: {out:?}");
    }
    let mut f = Findings::default();
    let r = s.rctl().args(["prune", "--keep", "5"]).try_run();
    match &r {
        Err(e) => f.add(e.clone()),
        Ok(r) => f.check(r.code == Some(0), || format!("prune: {}", brief(r))),
    }
    let left = count_marked(&rel, ROOTS);
    f.check(left == a + b, || {
        format!("prune deleted root's files: {left} of {} left", a + b)
    });
    for p in [&stage_name, &prune_name] {
        f.check(p.is_dir(), || format!("{} is gone", p.display()));
    }
    f.check(!theirs.exists(), || {
        "the deploy user's own leftover of a killed stage was not removed".into()
    });
    eprintln!(
        "prune over renamed releases of root's: {left} of {} files left",
        a + b
    );
    f.done("prune leftover names");
}

// ---------------------------------------------------------------------------
// 3. A seed's temp copy across file systems, exchanged with another user's uploads

/// A source whose `storage/` seeds `shared/storage`: small, or (`big`)
/// with a file larger than the `shared/` file system, so that the copy
/// fails and its temp name is cleaned up.
fn seed_source(s: &Scene, name: &str, big: bool) -> PathBuf {
    let app = s.src().join(name);
    fill(&app.join("storage"), "seeded", 2, 5);
    fs::write(app.join("version"), "staged\n").unwrap();
    if big {
        fs::write(app.join("storage/big"), vec![b'x'; 3 << 20]).unwrap();
    }
    app
}

/// ROOT the deploy user's, `shared/` their own 2 MiB tmpfs, and in it
/// `uploads`, a tree of uid 65533's. Returns the mount and the number of
/// uploaded files.
fn seed_scene(s: &Scene) -> Result<(Mount, usize), String> {
    s.reset_root();
    s.release("v0", 0, 0);
    let shared = s.path("shared");
    fs::create_dir(&shared).unwrap();
    s.to_attacker();
    let mount = Mount::tmpfs(&shared, "2m")?;
    own(&shared, ATTACKER);
    let uploads = shared.join("uploads");
    let n = fill(&uploads, UPLOAD, 3, 8);
    own_tree(&uploads, OTHER);
    Ok((mount, n))
}

/// The baseline: the deploy user cannot delete uid 65533's uploads in
/// their `shared/` (`rm -rf` fails). Then, while root stages releases
/// that seed `shared/storage` across the file system boundary (a copy in
/// `shared/.seed-PID-storage`, which fails for lack of space in even
/// rounds), the deploy user exchanges `shared/uploads` with every
/// `.seed-*` name. Over `SEED_ROUNDS` rounds, every uploaded file still
/// exists: root deleted no more than the deploy user could.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn seed_temp_name_exchanged_with_another_users_uploads() {
    attack_ready(&["mount", "umount", "rm"]);
    let s = Scene::on_tmpfs();
    let small = seed_source(&s, "small", false);
    let big = seed_source(&s, "big", true);
    let shared = s.path("shared");
    let mut f = Findings::default();

    let (mount, files) = match seed_scene(&s) {
        Ok(m) => m,
        Err(e) => common::missing(&format!("cannot mount a tmpfs: {e}")),
    };
    let out = attacker_runs("rm", &[Path::new("-rf"), &shared.join("uploads")]);
    let left = count_marked(&shared, UPLOAD);
    f.check(!out.status.success() && left == files, || {
        format!("baseline: the deploy user's rm -rf left {left} of {files} uploads: {out:?}")
    });
    drop(mount);

    let mut stats = RaceStats::default();
    let mut codes = BTreeMap::new();
    let mut damaged = 0;
    for round in 0..SEED_ROUNDS {
        let (mount, files) = seed_scene(&s).expect("mounting shared/");
        let mut att = Attacker::start(
            &s,
            json!({"watch": [{"dir": ps(&shared), "prefix": ".seed-", "link": "uploads"}]}),
        );
        let src = if round % 2 == 0 { &big } else { &small };
        let r = s
            .rctl()
            .arg("stage")
            .arg(src)
            .args(["--id", &format!("s{round}"), "--shared-dir", "storage"])
            .limit(SLOW)
            .try_run();
        stats.add(&att.stop());
        exits(&mut codes, &r);
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => f.check(matches!(r.code, Some(0..=2)), || {
                format!("round {round}: unexpected exit: {}", brief(r))
            }),
        }
        let left = count_marked(&shared, UPLOAD);
        if left != files {
            damaged += 1;
            f.add(format!(
                "round {round}: uid {OTHER}'s uploads lost files: {left} of {files} left"
            ));
        }
        drop(mount);
    }
    eprintln!(
        "seed temp-name race: {SEED_ROUNDS} rounds, uploads damaged in {damaged}; \
         exits {codes:?}; racer {stats:?}"
    );
    f.check(codes.get(&0).is_some_and(|n| *n > 0), || {
        format!("no round seeded shared/storage ({codes:?})")
    });
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("seed temp name exchanged with another user's uploads");
}

// ---------------------------------------------------------------------------
// 4. Locks no one else can hold

/// As uid 65534: open every file and directory below the paths given that
/// it can (read-only, no symlink followed, never blocking), `flock` each
/// (exclusive, else shared), report `{"held", "denied"}` in the file named
/// first, and hold them until SIGTERM (at most 120 s).
const LOCKER: &str = r#"
import fcntl, json, os, signal, stat, sys, time
out, tops = sys.argv[1], sys.argv[2:]
held, denied, fds = [], [], []
def visit(p):
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:
        denied.append(p)
        return
    fds.append(fd)
    for op in (fcntl.LOCK_EX, fcntl.LOCK_SH):
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            held.append(p)
            break
        except OSError:
            pass
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        try:
            names = os.listdir(fd)
        except OSError:
            return
        for n in sorted(names):
            visit(os.path.join(p, n))
for t in tops:
    visit(t)
with open(out + ".tmp", "w") as f:
    json.dump({"held": held, "denied": denied}, f)
os.rename(out + ".tmp", out)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
end = time.monotonic() + 120
while time.monotonic() < end:
    time.sleep(0.05)
"#;

/// The locker, holding its locks; dropping it kills and reaps it.
struct Locker(Child);

impl Locker {
    fn start(s: &Scene, tops: &[PathBuf]) -> (Locker, Value) {
        let report = s.attacker_dir().join("locker.json");
        let _ = fs::remove_file(&report);
        let child = as_attacker(crate::attack::python().expect("python3"))
            .args(["-I", "-c", LOCKER])
            .arg(&report)
            .args(tops)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the locker");
        let locker = Locker(child);
        assert!(
            wait_for(&report, Duration::from_secs(10)),
            "the locker never reported"
        );
        let v = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
        (locker, v)
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `status --json` of ROOT, run by root or (`other`) by uid 65534: the
/// lock holder it reports.
fn status_holder(s: &Scene, other: bool) -> Result<Value, String> {
    let wrapper: &[&str] = if other {
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        &[]
    };
    let r = Call::new(wrapper)
        .arg("--root")
        .arg(s.root())
        .args(["--json", "status"])
        .try_run()?;
    if r.code != Some(0) {
        return Err(format!("status: {}", brief(&r)));
    }
    Ok(r.json()["lock_holder"].clone())
}

/// Root's layout (ROOT and its releases root's). Each round uid 65534
/// opens and flocks every file and directory under `ROOT/.releasectl` and
/// `/run/releasectl` it can, and holds them while root activates two
/// releases, rolls back, marks one bad and prunes (`--lock-timeout 2`):
/// all exit 0, and `status --json` (root's and uid 65534's) shows no
/// holder. The lock files in /run/releasectl/locks are root's, 0600, in a
/// directory of root's with mode 0700.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn locks_no_one_else_can_hold() {
    attack_ready(&[]);
    let s = Scene::new();
    s.release("v1", 1, 2);
    s.rctl().args(["activate", "v1"]).ok();
    let tops = [s.path(".releasectl"), PathBuf::from("/run/releasectl")];
    let mut f = Findings::default();
    let mut held = 0;
    for round in 0..LOCK_ROUNDS {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        s.release(&a, 1, 2);
        s.release(&b, 1, 2);
        let (locker, report) = Locker::start(&s, &tops);
        held += report["held"].as_array().map_or(0, Vec::len);
        let t = ["--lock-timeout", "2"];
        let steps: [Vec<&str>; 5] = [
            vec!["activate", &a],
            vec!["activate", &b],
            vec!["rollback"],
            vec!["mark-bad", &b, "--reason", "attack test"],
            vec!["prune", "--keep", "2"],
        ];
        for step in steps {
            let r = s.rctl().args(&step).args(t).limit(QUICK).try_run();
            match &r {
                Err(e) => f.add(format!("round {round}: {e}")),
                Ok(r) => f.check(r.code == Some(0), || {
                    format!("round {round}, locks held by uid 65534: {}", brief(r))
                }),
            }
        }
        for other in [false, true] {
            match status_holder(&s, other) {
                Err(e) => f.add(format!("round {round}: {e}")),
                Ok(h) => f.check(h.is_null(), || {
                    format!("round {round}: status (other: {other}) shows holder {h}")
                }),
            }
        }
        if round == 0 {
            eprintln!("locker, round 0: {report}");
        }
        drop(locker);
    }
    f.check(held > 0, || "the locker held no file at all".into());

    let locks = Path::new("/run/releasectl/locks");
    match fs::symlink_metadata(locks) {
        Err(e) => f.add(format!("{}: {e}", locks.display())),
        Ok(m) => f.check(
            m.is_dir() && m.uid() == 0 && m.mode() & 0o777 == 0o700,
            || {
                format!(
                    "{} is uid {}, mode {:o}",
                    locks.display(),
                    m.uid(),
                    m.mode()
                )
            },
        ),
    }
    let mine = lock_path(&s.root());
    f.check(mine.is_file(), || {
        format!("no lock file {}", mine.display())
    });
    for e in fs::read_dir(locks).into_iter().flatten() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        f.check(
            m.is_file() && m.uid() == 0 && m.mode() & 0o777 == 0o600,
            || format!("{} is uid {}, mode {:o}", p.display(), m.uid(), m.mode()),
        );
    }
    eprintln!("locks no one else can hold: {LOCK_ROUNDS} rounds, {held} files held by uid 65534");
    f.done("locks no one else can hold");
}

// ---------------------------------------------------------------------------
// 5. and 6. Root holding its lock through a slow hook

/// An app `web` whose pre_activate hook, the first time it runs after
/// MARKS/holding is removed, creates it and waits (up to 30 s) for
/// MARKS/go; every other run passes straight through. Returns MARKS.
fn holding_app(s: &Scene) -> PathBuf {
    let marks = s.base().join("marks");
    fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    s.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[hooks]\npre_activate = [[\"/bin/sh\", \"-c\", '\
             [ -e {m}/holding ] && exit 0; touch {m}/holding; i=0; \
             while [ ! -e {m}/go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done']]\n"
        ),
    );
    marks
}

/// Root activates `web:ID` in the background and holds the lock in its
/// hook until MARKS/go appears.
fn hold_lock(s: &Scene, marks: &Path, id: &str) -> Child {
    let _ = fs::remove_file(marks.join("go"));
    let _ = fs::remove_file(marks.join("holding"));
    let child = TestCommand::new()
        .arg("--config-dir")
        .arg(s.etc())
        .args(["activate", &format!("web:{id}")])
        .spawn();
    assert!(
        wait_for(&marks.join("holding"), Duration::from_secs(30)),
        "the holder never reached its hook"
    );
    child
}

/// Let the holder finish; its exit code.
fn release_lock(marks: &Path, child: Child) -> Option<i32> {
    fs::write(marks.join("go"), "").unwrap();
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(start.elapsed() < SLOW, "the holder took too long");
    if !out.status.success() {
        eprintln!("holder: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.code()
}

/// The single-account layout (ROOT the deploy user's). While root's
/// activation holds the lock, the deploy user renames `.releasectl` away:
/// a second root `activate` and a root `prune --keep 0`, both with
/// `--lock-timeout 0`, exit 10, and prune deletes nothing. The holder
/// itself still ends with exit 0. `LOCK_ROUNDS` rounds.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn renaming_the_state_dir_does_not_split_roots_lock() {
    root_ready(&["setpriv", "mv"]);
    let mut f = Findings::default();
    for round in 0..LOCK_ROUNDS {
        let s = Scene::on_tmpfs();
        for id in ["v1", "v2", "v3", "v4"] {
            s.release(id, 1, 3);
        }
        let marks = holding_app(&s);
        s.to_attacker();
        fs::write(marks.join("go"), "").unwrap();
        s.rctl_config().args(["activate", "web:v1"]).ok();
        s.to_attacker();

        let holder = hold_lock(&s, &marks, "v2");
        let away = s.path(".releasectl-away");
        let moved = attacker_runs("mv", &[&s.path(".releasectl"), &away]);
        assert!(moved.status.success(), "mv .releasectl: {moved:?}");
        let files = count_marked(&s.path("releases"), "");
        let names = fs::read_dir(s.path("releases")).unwrap().count();

        for args in [
            &["activate", "web:v3", "--lock-timeout", "0"][..],
            &["prune", "web", "--keep", "0", "--lock-timeout", "0"],
        ] {
            let r = s.rctl_config().args(args).limit(QUICK).try_run();
            match &r {
                Err(e) => f.add(format!("round {round}: {e}")),
                Ok(r) => f.check(r.code == Some(10), || {
                    format!(
                        "round {round}, .releasectl renamed under the holder: {}",
                        brief(r)
                    )
                }),
            }
        }
        let left = count_marked(&s.path("releases"), "");
        let now = fs::read_dir(s.path("releases")).unwrap().count();
        f.check(left == files && now == names, || {
            format!("round {round}: releases changed: {now} names (was {names}), {left} files of {files}")
        });
        let code = release_lock(&marks, holder);
        f.check(code == Some(0), || {
            format!("round {round}: the holder's activation exited {code:?}")
        });
    }
    f.done("renaming .releasectl under root's lock");
}

/// `/run/releasectl/holders/DEV-INO.json`: who holds root's lock on `root`.
fn holder_file(root: &Path) -> PathBuf {
    let m = fs::metadata(root).unwrap();
    PathBuf::from(format!(
        "/run/releasectl/holders/{}-{}.json",
        m.dev(),
        m.ino()
    ))
}

/// Root's layout. While root's activation of v2 holds the lock, `status
/// --json` run by uid 65534 (who can open no lock file of root's) names
/// the holder's pid and release, as published in a file of root's in
/// /run/releasectl/holders that no one else may write; once the
/// activation ends, status shows no holder and the file is gone.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn status_names_roots_holder_for_others() {
    root_ready(&["setpriv"]);
    let s = Scene::new();
    s.release("v1", 1, 2);
    s.release("v2", 1, 2);
    let marks = holding_app(&s);
    fs::write(marks.join("go"), "").unwrap();
    s.rctl_config().args(["activate", "web:v1"]).ok();
    let mut f = Findings::default();

    let holder = hold_lock(&s, &marks, "v2");
    let pid = holder.id();
    match status_holder(&s, true) {
        Err(e) => f.add(e),
        Ok(h) => f.check(h["pid"] == pid && h["release"] == "v2", || {
            format!("status as uid 65534 while pid {pid} activates v2: holder {h}")
        }),
    }
    let published = holder_file(&s.root());
    match fs::symlink_metadata(&published) {
        Err(e) => f.add(format!("{}: {e}", published.display())),
        Ok(m) => {
            f.check(m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0, || {
                format!(
                    "{} is uid {}, mode {:o}",
                    published.display(),
                    m.uid(),
                    m.mode()
                )
            });
            let text = fs::read_to_string(&published).unwrap_or_default();
            let named: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            f.check(named["pid"] == pid, || {
                format!("{} names {text:?}, not pid {pid}", published.display())
            });
        }
    }
    let code = release_lock(&marks, holder);
    f.check(code == Some(0), || {
        format!("the activation exited {code:?}")
    });
    match status_holder(&s, true) {
        Err(e) => f.add(e),
        Ok(h) => f.check(h.is_null(), || {
            format!("status as uid 65534 after the activation: holder {h}")
        }),
    }
    f.check(!published.exists(), || {
        format!("{} is left after the activation", published.display())
    });
    f.done("status names root's holder for others");
}
