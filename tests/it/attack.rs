//! The privilege boundary, attacked. releasectl runs as root over an app root
//! that an unprivileged deploy user owns; these tests are that user (uid
//! 65534, through `setpriv`) planting symlinks, FIFOs, hardlinks and hostile
//! content, and swapping what root is working on with `renameat2(...,
//! RENAME_EXCHANGE)` in a loop (tests/it/attack/racer.py) while root runs.
//!
//! They judge by the victim: a root-owned directory outside ROOT is listed
//! (types, modes, owners, mtimes, sizes, content hashes) before and after,
//! and must not change. Every releasectl call is bounded (a hang fails the
//! test), every race is bounded in iterations and time, and the attacker is
//! killed and reaped by a guard.
//!
//! This file is the harness (the scene, the attacker process, bounded calls
//! of the binary, findings); the tests are in `attack/<family>.rs`. Most
//! need root (setpriv, chown, mount) and are `#[ignore]`d: run them as root
//! with `cargo test --test it attack:: -- --include-ignored`.

mod archives;
mod bluegreen;
mod io_errors;
mod races;
mod requests;
mod shared;
mod staging_records;
mod state_files;
mod symlinks;
mod timeouts;

use crate::common;

use common::{is_root, missing, require_root, require_tool, zstd, Run, Tree, BIN};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The attacker: uid and gid `nobody`.
pub(crate) const ATTACKER: u32 = 65534;
/// tests/it/attack/racer.py, handed to python with `-c` so the attacker needs
/// no access to the checkout.
const RACER: &str = include_str!("attack/racer.py");
/// Bound on one releasectl call that should take milliseconds: a guard
/// against a hang (a FIFO opened for reading blocks forever), generous
/// because a stage's syncfs waits for whatever else the machine is writing.
pub(crate) const QUICK: Duration = Duration::from_secs(20);
/// Bound on one call under a race or over a 3 GiB file.
pub(crate) const SLOW: Duration = Duration::from_secs(30);
/// A line of the victim that must never be copied into a release.
const SECRET: &str = "ROOT-ONLY-SECRET-4f1c9a2e";

// ---------------------------------------------------------------------------
// Prerequisites

/// A python3 that uid 65534 can run (pyenv shims under /root are not).
pub(crate) fn python() -> Option<&'static Path> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        let mut candidates = vec![
            PathBuf::from("/usr/bin/python3"),
            PathBuf::from("/usr/local/bin/python3"),
        ];
        if let Ok(out) = Command::new("sh")
            .args(["-c", "command -v python3"])
            .output()
        {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !p.is_empty() {
                candidates.push(PathBuf::from(p));
            }
        }
        candidates.into_iter().find(|py| {
            as_attacker(py)
                .args(["-I", "-c", "import ctypes, json"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
    })
    .as_deref()
}

/// Root, setpriv, a python3 the attacker can run, and `tools`, or the
/// test fails naming what is missing (such tests are `#[ignore]`d).
#[track_caller]
pub(crate) fn attack_ready(tools: &[&str]) {
    require_root("root runs releasectl, uid 65534 attacks");
    for tool in ["setpriv"].iter().chain(tools) {
        require_tool(tool);
    }
    if python().is_none() {
        missing("no python3 that uid 65534 can run");
    }
}

/// Root and `tools` (tests that mount or chown but need no attacker process).
#[track_caller]
pub(crate) fn root_ready(tools: &[&str]) {
    require_root("mounts or chowns");
    for tool in tools {
        require_tool(tool);
    }
}

#[track_caller]
fn tools_ready(tools: &[&str]) {
    for tool in tools {
        require_tool(tool);
    }
}

pub(crate) fn as_attacker(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={ATTACKER}"),
        &format!("--regid={ATTACKER}"),
        "--clear-groups",
    ])
    .arg(program);
    c
}

// ---------------------------------------------------------------------------
// A scene: app root, victim, config dir, sources, the attacker's own dir

/// ```text
/// BASE/          mode 0755, root's (the attacker must traverse it)
///   root/        the app root; the attacker's after `to_attacker`
///   victim/      root's: what hostile input aims at
///   etc/         config dir
///   src/         stage sources
///   attacker/    the attacker's scratch space (uid 65534)
/// ```
pub(crate) struct Scene {
    tmp: tempfile::TempDir,
}

impl Scene {
    /// Under /tmp (a disk file system).
    pub(crate) fn new() -> Scene {
        Scene::under(Path::new("/tmp"))
    }

    /// On tmpfs: races stage thousands of files and fsync each one; on a
    /// disk that would make a round take seconds without making it more real.
    pub(crate) fn on_tmpfs() -> Scene {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            Scene::under(shm)
        } else {
            Scene::new()
        }
    }

    fn under(parent: &Path) -> Scene {
        let tmp = tempfile::Builder::new()
            .prefix("rctl-attack-")
            .tempdir_in(parent)
            .expect("tempdir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let s = Scene { tmp };
        for d in ["root", "victim", "etc", "src", "attacker"] {
            fs::create_dir(s.base().join(d)).unwrap();
        }
        if is_root() {
            chown_tree(&s.attacker_dir());
        }
        s.fill_victim(&[]);
        s
    }

    pub(crate) fn base(&self) -> &Path {
        self.tmp.path()
    }
    pub(crate) fn root(&self) -> PathBuf {
        self.base().join("root")
    }
    fn victim(&self) -> PathBuf {
        self.base().join("victim")
    }
    pub(crate) fn etc(&self) -> PathBuf {
        self.base().join("etc")
    }
    pub(crate) fn src(&self) -> PathBuf {
        self.base().join("src")
    }
    pub(crate) fn attacker_dir(&self) -> PathBuf {
        self.base().join("attacker")
    }
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// The victim: root-owned files (one of them root-only) and, for every
    /// id in `ids`, a directory that looks like a release of that name, so
    /// that anything redirected into it finds something to delete.
    fn fill_victim(&self, ids: &[&str]) {
        let v = self.victim();
        fs::write(v.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        fs::write(v.join("secret"), format!("{SECRET}\n")).unwrap();
        fs::set_permissions(v.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(v.join("target"), "a file an attacker's symlink names\n").unwrap();
        fs::write(v.join("hard"), "a file an attacker's hardlink names\n").unwrap();
        fs::create_dir_all(v.join("sub/deeper")).unwrap();
        fs::write(v.join("sub/deeper/file"), "deep\n").unwrap();
        for id in ids {
            let d = v.join(id);
            fs::create_dir_all(d.join("data")).unwrap();
            fs::write(d.join("version"), format!("victim's {id}\n")).unwrap();
            fs::write(d.join("data/blob"), format!("victim data of {id}\n")).unwrap();
        }
    }

    /// Remove whatever an attack left in the victim and fill it afresh.
    fn reset_victim(&self, ids: &[&str]) {
        fs::remove_dir_all(self.victim()).unwrap();
        fs::create_dir(self.victim()).unwrap();
        self.fill_victim(ids);
    }

    /// An empty app root again.
    pub(crate) fn reset_root(&self) {
        let _ = fs::remove_dir_all(self.root());
        fs::create_dir(self.root()).unwrap();
    }

    /// `releases/<id>` with `version` and `dirs` subdirectories of `files` files each.
    pub(crate) fn release(&self, id: &str, dirs: usize, files: usize) -> PathBuf {
        let d = self.path("releases").join(id);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("version"), format!("{id}\n")).unwrap();
        for i in 0..dirs {
            let sub = d.join(format!("d{i}"));
            fs::create_dir(&sub).unwrap();
            for j in 0..files {
                fs::write(sub.join(format!("f{j}")), format!("{id} {i} {j}\n")).unwrap();
            }
        }
        d
    }

    /// The attacker owns ROOT and everything in it.
    pub(crate) fn to_attacker(&self) {
        chown_tree(&self.root());
    }

    pub(crate) fn config(&self, app: &str, body: &str) {
        let text = body
            .replace("{root}", &self.root().display().to_string())
            .replace("{base}", &self.base().display().to_string());
        fs::write(self.etc().join(format!("{app}.toml")), text).unwrap();
    }

    /// `releasectl --root ROOT`
    pub(crate) fn rctl(&self) -> Call {
        Call::new(&[]).arg("--root").arg(self.root())
    }

    /// `releasectl --config-dir ETC`
    pub(crate) fn rctl_config(&self) -> Call {
        Call::new(&[]).arg("--config-dir").arg(self.etc())
    }

    /// Where `current` points, as the link says.
    fn current(&self) -> Option<String> {
        fs::read_link(self.path("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// Point `current` at `releases/<id>` by hand (as an interrupted run would have).
    fn set_current(&self, id: &str) {
        let tmp = self.path(".current.by-test");
        let _ = fs::remove_file(&tmp);
        symlink(format!("releases/{id}"), &tmp).unwrap();
        fs::rename(&tmp, self.path("current")).unwrap();
    }

    fn victim_listing(&self) -> Tree {
        Tree::with_metadata(&self.victim(), &[])
    }

    /// Everything outside ROOT but the attacker's own scratch space.
    fn outside_listing(&self) -> Tree {
        Tree::with_metadata(self.base(), &["root", "attacker"])
    }

    /// The history file's last line, if it is a JSON object on its own line
    /// (read from the end: the file may be 3 GiB).
    fn history_tail(&self) -> Option<Value> {
        let mut f = fs::File::open(self.path(".releasectl/history.jsonl")).ok()?;
        let len = f.metadata().ok()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
            .ok()?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf);
        let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
        serde_json::from_str(last).ok()
    }
}

pub(crate) fn chown_tree(path: &Path) {
    std::os::unix::fs::lchown(path, Some(ATTACKER), Some(ATTACKER))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

pub(crate) fn ps(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

// ---------------------------------------------------------------------------
// Listings: "the victim did not change"

/// `None` if the listing is unchanged, else the diff, cut to a readable size.
fn changed(before: &Tree, after: &Tree) -> Option<String> {
    before.diff(after).map(|d| cut(&d, 1500))
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &text[..end], text.len() - end)
}

/// Paths under `top` with a setuid or setgid bit (`find top -perm /6000`).
fn setid_files(top: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !m.file_type().is_symlink() && m.mode() & 0o6000 != 0 {
            found.push(format!("{} mode {:o}", p.display(), m.mode() & 0o7777));
        }
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found.sort();
    found
}

/// Every regular file under `top` (symlinks not followed).
fn regular_files(top: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if m.is_file() {
            found.push(p);
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Bounded calls of the real binary

/// A releasectl command line (optionally under a wrapper such as prlimit or
/// strace), run in its own process group with a deadline.
pub(crate) struct Call {
    cmd: Command,
    shown: Vec<String>,
    limit: Duration,
}

impl Call {
    pub(crate) fn new(wrapper: &[&str]) -> Call {
        Call::exe(wrapper, Path::new(BIN))
    }

    /// `exe` (a releasectl binary) under `wrapper`.
    fn exe(wrapper: &[&str], exe: &Path) -> Call {
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut shown: Vec<String> = wrapper.iter().map(|w| w.to_string()).collect();
        shown.push("releasectl".into());
        Call {
            cmd,
            shown,
            limit: QUICK,
        }
    }

    pub(crate) fn arg(mut self, a: impl AsRef<OsStr>) -> Call {
        self.shown.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Call {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub(crate) fn limit(mut self, d: Duration) -> Call {
        self.limit = d;
        self
    }

    /// Run to completion, or `Err("hung ...")` after killing it at the deadline.
    pub(crate) fn try_run(mut self) -> Result<Run, String> {
        let shown = self.shown.join(" ");
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {shown}: {e}"));
        let out = drain(child.stdout.take().unwrap());
        let err = drain(child.stderr.take().unwrap());
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() > self.limit {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let grab = |rx: mpsc::Receiver<Vec<u8>>| {
            String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default())
                .into_owned()
        };
        let (stdout, stderr) = (grab(out), grab(err));
        match status {
            Some(st) => Ok(Run {
                shown,
                code: st.code(),
                stdout,
                stderr,
            }),
            None => Err(format!(
                "hung: `{shown}` still running after {:?} (hung or far too slow), killed; \
                 stderr so far: {}",
                self.limit,
                cut(&stderr, 600)
            )),
        }
    }

    /// Run a setup step that must succeed.
    pub(crate) fn ok(self) -> Run {
        let r = self.try_run().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.code, Some(0), "setup step failed\n{r}");
        r
    }
}

fn drain(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// A run, shortened for a findings list.
pub(crate) fn brief(r: &Run) -> String {
    format!(
        "`{}` exit {:?}; stdout: {}; stderr: {}",
        r.shown,
        r.code,
        cut(r.stdout.trim_end(), 400),
        cut(r.stderr.trim_end(), 600)
    )
}

/// The single stderr line, if stderr is exactly one line.
fn one_line(r: &Run) -> Option<&str> {
    let lines: Vec<&str> = r.stderr.lines().collect();
    (lines.len() == 1).then(|| lines[0])
}

/// Raw ESC bytes or lines that journald would read as a priority prefix.
fn injected_output(text: &str) -> Option<String> {
    if text.contains('\x1b') {
        return Some("a raw ESC (0x1b) byte".into());
    }
    text.lines()
        .find(|l| l.trim_start().starts_with("<0>"))
        .map(|l| format!("a line starting with <0>: {l:?}"))
}

// ---------------------------------------------------------------------------
// Findings: every failed expectation of a test, reported together

#[derive(Default)]
pub(crate) struct Findings(Vec<String>);

impl Findings {
    pub(crate) fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    pub(crate) fn add(&mut self, what: String) {
        self.0.push(what);
    }

    pub(crate) fn done(self, test: &str) {
        if self.0.is_empty() {
            return;
        }
        // All of them in the captured output, the first dozen in the panic.
        for (i, f) in self.0.iter().enumerate() {
            eprintln!("finding {}: {f}", i + 1);
        }
        let shown: Vec<String> = self.0.iter().take(12).map(|f| format!("- {f}")).collect();
        panic!(
            "{test}: {} finding(s):\n{}{}",
            self.0.len(),
            shown.join("\n"),
            if self.0.len() > 12 { "\n- …" } else { "" }
        );
    }
}

/// Expect a refusal: exit `code` and one stderr line containing every needle.
fn expect_refusal(f: &mut Findings, r: &Result<Run, String>, code: i32, needles: &[&str]) {
    let r = match r {
        Ok(r) => r,
        Err(hung) => return f.add(hung.clone()),
    };
    if r.code != Some(code) {
        return f.add(format!("expected exit {code}: {}", brief(r)));
    }
    match one_line(r) {
        None => f.add(format!("expected one stderr line: {}", brief(r))),
        Some(line) => {
            for n in needles {
                f.check(line.contains(n), || {
                    format!("error line does not name {n:?}: {}", brief(r))
                });
            }
        }
    }
}

/// Expect exit `code` with every needle somewhere in stderr (for usage
/// errors reported by the argument parser, which adds a hint line).
fn expect_exit_naming(f: &mut Findings, r: &Result<Run, String>, code: i32, needles: &[&str]) {
    match r {
        Err(hung) => f.add(hung.clone()),
        Ok(r) if r.code != Some(code) => f.add(format!("expected exit {code}: {}", brief(r))),
        Ok(r) => {
            for n in needles {
                f.check(r.stderr.contains(n), || {
                    format!("stderr does not name {n:?}: {}", brief(r))
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The attacker process

/// The racer, as uid 65534. Dropping it kills and reaps it.
pub(crate) struct Attacker {
    child: Option<Child>,
}

impl Attacker {
    /// Start the racer with `spec` (see racer.py) and wait until its links
    /// are planted and it is racing.
    pub(crate) fn start(scene: &Scene, mut spec: Value) -> Attacker {
        let ready = scene.attacker_dir().join("ready");
        let _ = fs::remove_file(&ready);
        spec["ready"] = json!(ps(&ready));
        if spec.get("seconds").is_none() {
            spec["seconds"] = json!(10);
        }
        if spec.get("iterations").is_none() {
            spec["iterations"] = json!(2_000_000);
        }
        let child = as_attacker(python().expect("python3"))
            .args(["-I", "-c", RACER])
            .arg(spec.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the racer");
        let mut a = Attacker { child: Some(child) };
        let start = Instant::now();
        while !ready.exists() {
            let exited = a.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || start.elapsed() > Duration::from_secs(10) {
                let out = a.stop();
                panic!("the racer did not start: {out}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        a
    }

    /// SIGTERM, then its counts (`iterations`, `exchanges`, `seen`).
    pub(crate) fn stop(&mut self) -> Value {
        let Some(mut child) = self.child.take() else {
            return Value::Null;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(3) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut out = String::new();
        let mut err = String::new();
        let _ = child.stdout.take().unwrap().read_to_string(&mut out);
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        serde_json::from_str(out.trim()).unwrap_or_else(|_| json!({"error": format!("{out}{err}")}))
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Totals of the racer's counts over all rounds.
#[derive(Default, Debug)]
pub(crate) struct RaceStats {
    iterations: u64,
    pub(crate) exchanges: u64,
    seen: u64,
}

impl RaceStats {
    pub(crate) fn add(&mut self, v: &Value) {
        self.iterations += v["iterations"].as_u64().unwrap_or(0);
        self.exchanges += v["exchanges"].as_u64().unwrap_or(0);
        self.seen += v["seen"].as_u64().unwrap_or(0);
    }
}

/// Rounds of a race: at least `min`, at most `max`, and no new round once
/// `time` has passed.
struct Rounds {
    start: Instant,
    done: usize,
    min: usize,
    max: usize,
    time: Duration,
}

impl Rounds {
    fn new(min: usize, max: usize, time: Duration) -> Rounds {
        Rounds {
            start: Instant::now(),
            done: 0,
            min,
            max,
            time,
        }
    }

    fn next(&mut self) -> Option<usize> {
        if self.done >= self.max || (self.done >= self.min && self.start.elapsed() >= self.time) {
            return None;
        }
        self.done += 1;
        Some(self.done - 1)
    }
}

// ---------------------------------------------------------------------------
// Mounts (tmpfs for a full disk, read-only binds), undone by a guard

pub(crate) struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&OsStr]) -> Result<(), String> {
        let out = Command::new("mount")
            .args(args)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "mount {:?}: {}",
                args,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    pub(crate) fn tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
        let opts = format!("size={size},mode=0755");
        Mount::run(&[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            "tmpfs".as_ref(),
            at.as_os_str(),
        ])?;
        Ok(Mount(at.to_path_buf()))
    }

    fn read_only_bind(at: &Path) -> Result<Mount, String> {
        Mount::run(&["--bind".as_ref(), at.as_os_str(), at.as_os_str()])?;
        let m = Mount(at.to_path_buf());
        Mount::run(&["-o".as_ref(), "remount,ro,bind".as_ref(), at.as_os_str()])?;
        Ok(m)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}
