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
//! Most tests need root (setpriv, chown, mount); without it they say why and
//! return, except under `CI=true`, where a missing prerequisite fails them.

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

    fn victim_listing(&self) -> Listing {
        Listing::of(&self.victim(), &[])
    }

    /// Everything outside ROOT but the attacker's own scratch space.
    fn outside_listing(&self) -> Listing {
        Listing::of(self.base(), &["root", "attacker"])
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

/// Per path: type, mode, owner, mtime, size and content hash (symlinks by
/// target, never followed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listing(BTreeMap<String, String>);

impl Listing {
    fn of(top: &Path, skip: &[&str]) -> Listing {
        let mut map = BTreeMap::new();
        map.insert(".".to_string(), describe(top));
        list_into(top, top, skip, &mut map);
        Listing(map)
    }

    /// `None` if equal, else a readable diff.
    fn diff(&self, after: &Listing) -> Option<String> {
        if self == after {
            return None;
        }
        let mut out = String::new();
        for (k, v) in &self.0 {
            match after.0.get(k) {
                None => out += &format!("  - {k}: {v}\n"),
                Some(w) if w != v => out += &format!("  ~ {k}: {v}  =>  {w}\n"),
                _ => {}
            }
        }
        for (k, v) in &after.0 {
            if !self.0.contains_key(k) {
                out += &format!("  + {k}: {v}\n");
            }
        }
        Some(cut(&out, 1500))
    }
}

fn list_into(top: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let rel = p.strip_prefix(top).unwrap().to_string_lossy().into_owned();
        if dir == top && skip.contains(&rel.as_str()) {
            continue;
        }
        out.insert(rel, describe(&p));
        if fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            list_into(top, &p, skip, out);
        }
    }
}

fn describe(p: &Path) -> String {
    let Ok(m) = fs::symlink_metadata(p) else {
        return "vanished".into();
    };
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_symlink() {
        format!("symlink -> {}", fs::read_link(p).unwrap().display())
    } else if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_file() {
        let hash = fs::read(p).map(|b| fnv(&b)).unwrap_or(0);
        format!("file {} bytes fnv {hash:016x}", m.len())
    } else if ft.is_fifo() {
        "fifo".into()
    } else if ft.is_char_device() {
        format!("char device {:x}", m.rdev())
    } else if ft.is_block_device() {
        format!("block device {:x}", m.rdev())
    } else {
        "socket".into()
    };
    format!(
        "{kind} mode {:04o} owner {}:{} mtime {}.{:09}",
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        m.mtime(),
        m.mtime_nsec()
    )
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
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

// ---------------------------------------------------------------------------
// Archives

/// Write a tar archive with python's tarfile, entries exactly as given:
/// `{"name", "type": file|dir|chr|fifo|sym, "mode", "uid", "gid", "data"}`.
/// `cut`: "mid" ends the archive inside the last entry's data, "boundary"
/// right after it (no end-of-archive blocks). `gzip`: compress; `cut_stream`:
/// keep only the first half of the (compressed) bytes.
fn write_tar(path: &Path, entries: Value, cut: Option<&str>, gzip: bool, cut_stream: bool) {
    let script = r#"
import gzip, io, json, sys, tarfile
out, spec = sys.argv[1], json.loads(sys.argv[2])
buf = io.BytesIO()
ends = []
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    for e in spec["entries"]:
        ti = tarfile.TarInfo(e["name"])
        ti.mtime = 1700000000
        ti.mode = e.get("mode", 0o644)
        ti.uid = ti.gid = 0
        ti.uid, ti.gid = e.get("uid", 0), e.get("gid", 0)
        ti.uname = ti.gname = "evil" if ti.uid else "root"
        kind = e["type"]
        if kind == "file":
            data = e.get("data", "").encode()
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        else:
            ti.type = {"dir": tarfile.DIRTYPE, "chr": tarfile.CHRTYPE,
                       "fifo": tarfile.FIFOTYPE, "sym": tarfile.SYMTYPE}[kind]
            if kind == "chr":
                ti.devmajor, ti.devminor = 1, 3
            if kind == "sym":
                ti.linkname = e["data"]
            t.addfile(ti)
        ends.append(t.offset)
data = buf.getvalue()
if spec.get("cut") == "boundary":
    data = data[:ends[-1]]
elif spec.get("cut") == "mid":
    data = data[:ends[-1] - 1024]
if spec.get("gzip"):
    data = gzip.compress(data)
if spec.get("cut_stream"):
    data = data[:len(data) // 2]
open(out, "wb").write(data)
"#;
    let spec = json!({"entries": entries, "cut": cut, "gzip": gzip, "cut_stream": cut_stream});
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(spec.to_string())
        .status()
        .expect("running python3");
    assert!(
        status.success(),
        "python3 could not write {}",
        path.display()
    );
}

// ===========================================================================
// 1. A symlinked releases/

/// `releases` is the attacker's symlink to a root-owned directory of
/// release-like trees: prune, list and status refuse it (exit 2, one line
/// naming `releases`), list nothing from it, and delete nothing in it.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn releases_symlink_is_refused() {
    attack_ready(&[]);
    let s = Scene::new();
    let ids = ["vica", "vicb", "vicc"];
    s.fill_victim(&ids);
    symlink(s.victim(), s.path("releases")).unwrap();
    s.to_attacker();
    let mut f = Findings::default();
    // list and status first: prune (today) deletes what they would show.
    for args in [&["list"][..], &["status"], &["prune", "--keep", "0"]] {
        let before = s.victim_listing();
        let r = s.rctl().args(args).try_run();
        expect_refusal(&mut f, &r, 2, &["releases"]);
        if let (Ok(r), false) = (&r, args[0] == "prune") {
            for id in ids {
                f.check(!r.stdout.contains(id), || {
                    format!("listed the victim's {id}: {}", brief(r))
                });
            }
        }
        if let Some(d) = before.diff(&s.victim_listing()) {
            f.add(format!("{args:?} changed the victim:\n{d}"));
        }
    }
    f.done("releases -> VICTIM");
}

// 2. Symlinks among the releases

/// Symlinks inside releases/ (to the victim, to a victim dir with a valid
/// release id, and under the temp names of dead stage/prune runs) are never
/// followed nor counted: prune removes exactly the real old releases, list
/// and status count only real ones, and the victim is untouched.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn symlinked_entries_in_releases_are_not_followed() {
    attack_ready(&[]);
    let s = Scene::new();
    s.fill_victim(&["old", "s1"]);
    for (i, id) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
        let d = s.release(id, 1, 1);
        let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i as u64);
        fs::File::open(&d).unwrap().set_modified(t).unwrap();
    }
    s.set_current("r4");
    let rel = s.path("releases");
    symlink(s.victim(), rel.join("old")).unwrap();
    symlink(s.victim().join("s1"), rel.join("s1")).unwrap();
    // pid 999999999 is above any pid_max: a dead run's leftovers.
    symlink(s.victim(), rel.join(".stage-999999999-1")).unwrap();
    symlink(s.victim().join("s1"), rel.join(".prune-s1-999999999")).unwrap();
    s.to_attacker();
    let before = s.victim_listing();
    let mut f = Findings::default();

    let list = s.rctl().args(["--json", "list"]).try_run();
    match &list {
        Ok(r) if r.code == Some(0) => {
            let ids: BTreeSet<String> = serde_json::from_str::<Value>(&r.stdout)
                .ok()
                .and_then(|v| v["result"]["releases"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_string))
                .collect();
            let want: BTreeSet<String> = ["r1", "r2", "r3", "r4"].map(String::from).into();
            f.check(ids == want, || format!("list shows {ids:?}: {}", brief(r)));
        }
        Ok(r) => f.add(format!("list failed: {}", brief(r))),
        Err(e) => f.add(e.clone()),
    }
    let status = s.rctl().args(["--json", "status"]).try_run();
    match &status {
        Ok(r) if r.code == Some(0) => {
            let n = serde_json::from_str::<Value>(&r.stdout)
                .ok()
                .map(|v| v["result"]["releases"].clone());
            f.check(n == Some(json!(4)), || {
                format!("status counts {n:?} releases, not 4: {}", brief(r))
            });
        }
        Ok(r) => f.add(format!("status failed: {}", brief(r))),
        Err(e) => f.add(e.clone()),
    }
    let prune = s.rctl().args(["--json", "prune", "--keep", "1"]).try_run();
    match &prune {
        Ok(r) if r.code == Some(0) => {
            let v: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
            let names = |k: &str| -> Vec<String> {
                v["result"]["plan"][k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            };
            let mut removed = names("remove");
            removed.sort();
            f.check(removed == ["r1", "r2", "r3"], || {
                format!("prune removed {removed:?}, not r1 r2 r3: {}", brief(r))
            });
            let all = [names("keep"), names("protected")].concat();
            f.check(all == ["r4"], || {
                format!("prune kept {all:?}, not just r4: {}", brief(r))
            });
        }
        Ok(r) => f.add(format!("prune failed: {}", brief(r))),
        Err(e) => f.add(e.clone()),
    }
    for id in ["r1", "r2", "r3"] {
        f.check(!rel.join(id).exists(), || format!("{id} was not pruned"));
    }
    f.check(rel.join("r4/version").exists(), || "r4 is gone".into());
    for link in ["old", "s1"] {
        let still = fs::symlink_metadata(rel.join(link)).map(|m| m.file_type().is_symlink());
        f.check(still.unwrap_or(false), || {
            format!("releases/{link} (a symlink, not a release) was removed or replaced")
        });
    }
    if let Some(d) = before.diff(&s.victim_listing()) {
        f.add(format!("the victim changed:\n{d}"));
    }
    f.done("symlinks among the releases");
}

// 3. prune, raced

/// While root prunes twelve releases of many subdirectories, the attacker
/// flips `releases` itself with a symlink to the victim (even rounds), or
/// swaps the `.prune-*` tree being deleted, and directories inside it, with
/// symlinks to the victim (odd rounds). The victim, which holds trees of the
/// same names, keeps every file in every round; prune never hangs.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn prune_raced_by_exchanges() {
    attack_ready(&[]);
    let ids: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
    let idrefs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let inner: Vec<String> = (0..6).map(|i| format!("d{i}")).collect();
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut rounds = Rounds::new(4, 16, Duration::from_secs(4));
    let mut damaged = 0;
    while let Some(round) = rounds.next() {
        let s = Scene::on_tmpfs();
        s.fill_victim(&idrefs);
        for id in &ids {
            let d = s.release(id, inner.len(), 4);
            symlink(s.victim(), d.join("zz")).unwrap();
        }
        s.to_attacker();
        let before = s.victim_listing();
        let (root, rel) = (s.root(), s.path("releases"));
        let spec = if round % 2 == 0 {
            json!({"links": [[ps(&root.join(".evil")), ps(&s.victim())]],
                   "pairs": [[ps(&rel), ps(&root.join(".evil"))]]})
        } else {
            json!({"links": [[ps(&rel.join(".evil")), ps(&s.victim())]],
                   "watch": [{"dir": ps(&rel), "prefix": ".prune-", "link": ".evil"}],
                   "inner": [{"dir": ps(&rel), "prefix": ".prune-", "names": inner, "link": "zz"}]})
        };
        let mut att = Attacker::start(&s, spec);
        let r = s
            .rctl()
            .args(["prune", "--keep", "2"])
            .limit(SLOW)
            .try_run();
        stats.add(&att.stop());
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => f.check(matches!(r.code, Some(0..=2)), || {
                format!("round {round}: unexpected exit: {}", brief(r))
            }),
        }
        if let Some(d) = before.diff(&s.victim_listing()) {
            damaged += 1;
            f.add(format!("round {round}: the victim changed:\n{d}"));
        }
    }
    eprintln!(
        "prune race: {} rounds, victim damaged in {damaged}; racer {stats:?}",
        rounds.done
    );
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("prune raced");
}

// 4. stage, raced

#[derive(Clone, Copy, Debug)]
enum SourceKind {
    Dir,
    Tar,
    TarGz,
    TarZst,
}

/// A root-owned source tree of `dirs` x `files` files under src/, and the
/// archive of the kind asked for, made with the tar and zstd CLIs.
fn source_of(s: &Scene, kind: SourceKind, dirs: usize, files: usize) -> PathBuf {
    let tree = s.src().join("tree");
    if !tree.exists() {
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("version"), "staged\n").unwrap();
        for i in 0..dirs {
            let d = tree.join(format!("d{i}"));
            fs::create_dir(&d).unwrap();
            for j in 0..files {
                fs::write(d.join(format!("f{j}")), format!("{i} {j}\n")).unwrap();
            }
        }
    }
    let tar = |name: &str, flags: &str| {
        let out = s.src().join(name);
        let st = Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg(flags)
            .arg(&out)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar failed");
        out
    };
    match kind {
        SourceKind::Dir => tree,
        SourceKind::Tar => tar("app.tar", "-cf"),
        SourceKind::TarGz => tar("app.tar.gz", "-czf"),
        SourceKind::TarZst => {
            let t = tar("plain.tar", "-cf");
            let out = s.src().join("app.tar.zst");
            zstd(&t, &out);
            out
        }
    }
}

/// While root stages a directory or a .tar/.tar.gz/.tar.zst of 150 files,
/// the attacker exchanges the `.stage-*` temp tree with a symlink to the
/// victim whenever one appears, and in odd rounds also flips `releases`
/// itself with such a symlink. Every round: the victim and everything else
/// outside ROOT are unchanged, and stage exits 0, 1 or 2 (never hangs).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn stage_raced_by_exchanges() {
    attack_ready(&["tar", "zstd"]);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut total = 0;
    for kind in [
        SourceKind::Dir,
        SourceKind::Tar,
        SourceKind::TarGz,
        SourceKind::TarZst,
    ] {
        let s = Scene::on_tmpfs();
        let src = source_of(&s, kind, 6, 25);
        let mut rounds = Rounds::new(3, 10, Duration::from_millis(1200));
        while let Some(round) = rounds.next() {
            total += 1;
            s.reset_root();
            s.release("v0", 0, 0);
            s.to_attacker();
            // Directories named like the source's: a write redirected into
            // the victim lands (think /etc and a source holding cron.d/).
            s.reset_victim(&["d0", "d1", "d2", "d3", "d4", "d5"]);
            let before = s.outside_listing();
            let (root, rel) = (s.root(), s.path("releases"));
            let mut spec = json!({
                "links": [[ps(&rel.join(".evil")), ps(&s.victim())],
                          [ps(&root.join(".evil")), ps(&s.victim())]],
                "watch": [{"dir": ps(&rel), "prefix": ".stage-", "link": ".evil"}],
            });
            if round % 2 == 1 {
                spec["pairs"] = json!([[ps(&rel), ps(&root.join(".evil"))]]);
            }
            let mut att = Attacker::start(&s, spec);
            let r = s
                .rctl()
                .arg("stage")
                .arg(&src)
                .args(["--id", &format!("s{round}")])
                .limit(SLOW)
                .try_run();
            stats.add(&att.stop());
            match &r {
                Err(e) => f.add(format!("{kind:?} round {round}: {e}")),
                Ok(r) => f.check(matches!(r.code, Some(0..=2)), || {
                    format!("{kind:?} round {round}: unexpected exit: {}", brief(r))
                }),
            }
            if let Some(d) = before.diff(&s.outside_listing()) {
                let written = s.victim_listing().0.len();
                f.add(format!(
                    "{kind:?} round {round}: outside ROOT changed (victim now {written} entries):\n{d}"
                ));
            }
        }
    }
    eprintln!("stage race: {total} rounds; racer {stats:?}");
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("stage raced");
}

// 5. The source tree, raced

/// The source directory belongs to the attacker, who keeps exchanging a
/// few of its files with symlinks to a root-only file, and its subdirectory
/// `sub` with a symlink to a root-only directory holding files of the same
/// names, while root stages it. No staged file ever holds the secret
/// (symlinks may be staged as symlinks, never as copies of their targets).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn stage_source_raced_to_root_only_files() {
    attack_ready(&[]);
    const FILES: usize = 4;
    const INNER: usize = 200;
    let s = Scene::on_tmpfs();
    let secret_file = s.base().join("secret");
    let secret_dir = s.base().join("secretdir");
    fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    fs::set_permissions(&secret_file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(&secret_dir).unwrap();
    for i in 0..INNER {
        let p = secret_dir.join(format!("k{i:03}"));
        fs::write(&p, format!("{SECRET}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    fs::set_permissions(&secret_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let tree = s.src().join("tree");
    let ad = s.attacker_dir();
    let mut links: Vec<[String; 2]> = (0..FILES)
        .map(|i| [ps(&ad.join(format!("e{i}"))), ps(&secret_file)])
        .collect();
    links.push([ps(&ad.join("edir")), ps(&secret_dir)]);
    let mut pairs: Vec<[String; 2]> = (0..FILES)
        .map(|i| {
            [
                ps(&tree.join(format!("f{i}"))),
                ps(&ad.join(format!("e{i}"))),
            ]
        })
        .collect();
    pairs.push([ps(&tree.join("sub")), ps(&ad.join("edir"))]);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut leaky_rounds = 0;
    let mut rounds = Rounds::new(4, 24, Duration::from_secs(3));
    s.release("v0", 0, 0);
    s.to_attacker();
    while let Some(round) = rounds.next() {
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir_all(tree.join("sub")).unwrap();
        for i in 0..INNER {
            fs::write(tree.join(format!("sub/k{i:03}")), "public\n").unwrap();
        }
        for i in 0..FILES {
            fs::write(tree.join(format!("f{i}")), format!("public {i}\n")).unwrap();
        }
        chown_tree(&tree);
        let before = Listing::of(s.base(), &["root", "attacker", "src"]);
        let mut att = Attacker::start(&s, json!({"links": links, "pairs": pairs}));
        let r = s
            .rctl()
            .arg("stage")
            .arg(&tree)
            .args(["--id", &format!("t{round}")])
            .limit(SLOW)
            .try_run();
        stats.add(&att.stop());
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => f.check(matches!(r.code, Some(0..=2)), || {
                format!("round {round}: unexpected exit: {}", brief(r))
            }),
        }
        let leaked: Vec<PathBuf> = regular_files(&s.path("releases"))
            .into_iter()
            .filter(|p| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).contains(SECRET))
            .collect();
        if !leaked.is_empty() {
            leaky_rounds += 1;
            f.add(format!(
                "round {round}: {} staged files hold the secret, e.g. {}",
                leaked.len(),
                leaked[0].display()
            ));
        }
        if let Some(d) = before.diff(&Listing::of(s.base(), &["root", "attacker", "src"])) {
            f.add(format!("round {round}: outside ROOT changed:\n{d}"));
        }
        // Each round judges only its own release.
        let _ = fs::remove_dir_all(s.path(&format!("releases/t{round}")));
    }
    eprintln!(
        "source race: {} rounds, {leaky_rounds} with copies of the secret; racer {stats:?}",
        rounds.done
    );
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("stage source raced");
}

// 6. Hook working directory, raced

/// Hooks and the health command run as root in the release directory.
/// While root activates v2, the attacker exchanges `releases/v2` with a
/// directory of its own and with a symlink to the victim: in even rounds
/// over and over, in odd rounds once, right after the pre_activate hook has
/// left its marker in v2 (so the health check and post_activate run after
/// the swap). Each command records `stat -c %i .` and `pwd -P` and touches a
/// marker in its cwd: that is only ever one of the two real directories
/// under releases/, never the victim, and the victim is unchanged.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn hook_cwd_raced() {
    attack_ready(&[]);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut rounds = Rounds::new(6, 30, Duration::from_secs(3));
    let (mut codes, mut escapes, mut fired, mut hook_runs) = (BTreeMap::new(), 0, 0, 0);
    while let Some(round) = rounds.next() {
        let s = Scene::on_tmpfs();
        let rel = s.path("releases");
        s.release("v1", 0, 0);
        let v2 = s.release("v2", 0, 0);
        let alt = rel.join(".alt");
        fs::create_dir(&alt).unwrap();
        fs::write(alt.join("version"), "v2\n").unwrap();
        let legit: BTreeSet<u64> = [&v2, &alt]
            .iter()
            .map(|d| fs::metadata(d).unwrap().ino())
            .collect();
        let log = s.base().join("cwdlog");
        let record = format!(
            r#"["/bin/sh", "-c", "echo \"$(stat -c %i .) $(pwd -P)\" >> {}; touch hook-was-here"]"#,
            log.display()
        );
        s.config(
            "web",
            &format!(
                "root = \"{{root}}\"\n[health]\ncommand = {record}\nretries = 1\ntimeout = 20\n\
                 [hooks]\npre_activate = [{record}]\npost_activate = [{record}]\n"
            ),
        );
        s.rctl_config().args(["activate", "web:v1"]).ok();
        s.to_attacker();
        let _ = fs::remove_file(&log);
        let rel_real = rel.canonicalize().unwrap();
        let victim_real = s.victim().canonicalize().unwrap();
        let before = s.victim_listing();
        let (v2p, evil) = (ps(&rel.join("v2")), ps(&rel.join(".evil")));
        let mut spec = json!({"links": [[evil, ps(&s.victim())]]});
        if round % 2 == 0 {
            spec["pairs"] = json!([[v2p, ps(&alt)], [v2p, evil]]);
        } else {
            spec["trigger"] =
                json!({"path": ps(&v2.join("hook-was-here")), "pairs": [[v2p, evil]]});
        }
        let mut att = Attacker::start(&s, spec);
        let r = s
            .rctl_config()
            .args(["activate", "web:v2", "--force"])
            .limit(SLOW)
            .try_run();
        let st = att.stop();
        if round % 2 == 1 && st["seen"].as_u64().unwrap_or(0) > 0 {
            fired += 1;
        }
        stats.add(&st);
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => {
                *codes.entry(r.code).or_insert(0) += 1;
                f.check(matches!(r.code, Some(0 | 1 | 2 | 11)), || {
                    format!("round {round}: unexpected exit: {}", brief(r))
                });
            }
        }
        if let Some(d) = before.diff(&s.victim_listing()) {
            escapes += 1;
            f.add(format!("round {round}: the victim changed:\n{d}"));
        }
        for line in fs::read_to_string(&log).unwrap_or_default().lines() {
            hook_runs += 1;
            let (ino, path) = line.split_once(' ').unwrap_or(("", line));
            let path = Path::new(path);
            let ino: u64 = ino.parse().unwrap_or(0);
            if path.starts_with(&victim_real)
                || !path.starts_with(&rel_real)
                || !legit.contains(&ino)
            {
                escapes += 1;
                f.add(format!(
                    "round {round}: a hook ran in {} (inode {ino}), not in a checked release directory",
                    path.display()
                ));
            }
        }
    }
    eprintln!(
        "hook cwd race: {} rounds, exits {codes:?}, {hook_runs} hook runs, {fired} targeted \
         swaps, {escapes} escapes; racer {stats:?}",
        rounds.done
    );
    // Not vacuous: the targeted swap happened with hooks still to run.
    f.check(fired > 0, || {
        format!("the targeted swap never fired (no pre_activate ran in v2): {stats:?}")
    });
    f.done("hook cwd raced");
}

// 7. Planted state files

#[derive(Clone, Copy, Debug)]
enum Plant {
    Fifo,
    /// A symlink to an existing victim file.
    Symlink,
    /// A symlink to a victim path that does not exist yet.
    DanglingSymlink,
    /// A hardlink to a root-owned victim file (as with protected_hardlinks=0).
    Hardlink,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Must refuse: exit 1, one line naming the file, `current` unchanged.
    Refuse,
    /// Read-only use: exit 0, or a refusal as above.
    ZeroOrRefuse,
}

/// A command line and what it must do.
type Case<'a> = (&'a [&'a str], Expect);

/// v1, v2, v3 with v1 then v2 activated (history of two, current v2), then
/// handed to the attacker, who replaces `.releasectl/<file>` with `plant`.
fn planted(file: &str, plant: Plant) -> Scene {
    let s = Scene::on_tmpfs();
    for id in ["v1", "v2", "v3"] {
        s.release(id, 0, 0);
    }
    s.rctl().args(["activate", "v1"]).ok();
    s.rctl().args(["activate", "v2"]).ok();
    s.to_attacker();
    let at = s.path(".releasectl").join(file);
    let _ = fs::remove_file(&at);
    match plant {
        Plant::Fifo => {
            let st = Command::new("mkfifo").arg(&at).status().unwrap();
            assert!(st.success());
        }
        Plant::Symlink => symlink(s.victim().join("target"), &at).unwrap(),
        Plant::DanglingSymlink => symlink(s.victim().join("created-by-root"), &at).unwrap(),
        Plant::Hardlink => fs::hard_link(s.victim().join("hard"), &at).unwrap(),
    }
    if !matches!(plant, Plant::Hardlink) {
        std::os::unix::fs::lchown(&at, Some(ATTACKER), Some(ATTACKER)).unwrap();
    }
    s
}

/// FIFOs, symlinks (to a victim file, or to a victim path that does not
/// exist) and hardlinks (to a root-owned victim file) planted as `lock`,
/// `history.jsonl`, `pending.json` and `pending.json.tmp`. No command hangs
/// or changes the victim; commands that write the file refuse it (exit 1,
/// one line naming it, `current` unchanged); read-only ones exit 0 or refuse
/// the same way. A planted `pending.json.tmp` may instead be replaced.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn planted_state_files() {
    attack_ready(&["mkfifo"]);
    use Expect::*;
    let matrix: [(&str, &[Case]); 4] = [
        (
            "lock",
            &[
                (&["activate", "v3"], Refuse),
                (&["rollback"], Refuse),
                (&["recover"], Refuse),
                (&["status"], ZeroOrRefuse),
            ],
        ),
        (
            "history.jsonl",
            &[
                (&["activate", "v3"], Refuse),
                (&["rollback"], Refuse),
                (&["status"], ZeroOrRefuse),
                (&["list"], ZeroOrRefuse),
                (&["history"], ZeroOrRefuse),
            ],
        ),
        (
            "pending.json",
            &[
                (&["activate", "v3"], Refuse),
                (&["rollback"], Refuse),
                (&["recover"], Refuse),
                (&["status"], ZeroOrRefuse),
                (&["list"], ZeroOrRefuse),
            ],
        ),
        (
            "pending.json.tmp",
            &[
                (&["activate", "v3"], ZeroOrRefuse),
                (&["rollback"], ZeroOrRefuse),
            ],
        ),
    ];
    let mut f = Findings::default();
    for (file, commands) in matrix {
        for plant in [
            Plant::Fifo,
            Plant::Symlink,
            Plant::DanglingSymlink,
            Plant::Hardlink,
        ] {
            for (args, expect) in commands {
                let s = planted(file, plant);
                let before = s.outside_listing();
                let current = s.current();
                let what = format!("{file} as {plant:?}, {}", args.join(" "));
                let r = s.rctl().args(*args).limit(Duration::from_secs(3)).try_run();
                match &r {
                    Err(e) => f.add(format!("{what}: {e}")),
                    Ok(run) => {
                        let refused = run.code == Some(1);
                        if *expect == Refuse || run.code != Some(0) {
                            let mut sub = Findings::default();
                            expect_refusal(&mut sub, &r, 1, &[file]);
                            for x in sub.0 {
                                f.add(format!("{what}: {x}"));
                            }
                        }
                        if refused || *expect == Refuse {
                            f.check(s.current() == current, || {
                                format!(
                                    "{what}: current moved to {:?}: {}",
                                    s.current(),
                                    brief(run)
                                )
                            });
                        }
                    }
                }
                if let Some(d) = before.diff(&s.outside_listing()) {
                    f.add(format!("{what}: outside ROOT changed:\n{d}"));
                }
            }
        }
    }
    f.done("planted state files");
}

// 8. Crafted pending.json and history.jsonl

/// A crafted `pending.json` (a `from` climbing out of releases/, ids with a
/// newline + `<0>` journal priority or an ESC sequence): `recover` and
/// `activate` exit 1 with one line naming pending.json, leave `current`
/// where it was, and print no raw ESC and no line starting with `<0>`.
/// A crafted `started` may be accepted, but never echoed raw either.
#[test]
fn crafted_pending_json() {
    let cases = [
        (
            json!({"from": "../../../../tmp/x", "to": "v2", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "v1", "to": "v2\n<0>evil", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "v1\n<0>evil", "to": "v2", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "v1", "to": "\u{1b}[2Jv2", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "\u{1b}]0;owned\u{7}v1", "to": "v2", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "v1", "to": "v2", "pid": 1, "started": "x\n<0>evil\u{1b}[2J"}),
            false,
        ),
    ];
    let mut f = Findings::default();
    for (pending, must_refuse) in cases {
        for args in [&["recover"][..], &["activate", "v1"]] {
            let s = Scene::new();
            s.release("v1", 0, 0);
            s.release("v2", 0, 0);
            s.rctl().args(["activate", "v1"]).ok();
            s.rctl().args(["activate", "v2"]).ok();
            if is_root() {
                s.to_attacker();
            }
            fs::write(s.path(".releasectl/pending.json"), pending.to_string()).unwrap();
            let what = format!("pending {pending}, {}", args.join(" "));
            let r = s.rctl().args(args).try_run();
            let cur = s.current();
            f.check(
                cur.as_deref().is_some_and(|c| {
                    c.strip_prefix("releases/")
                        .is_some_and(|id| !id.contains('/') && !id.contains(".."))
                }),
                || format!("{what}: current -> {cur:?}, outside releases/"),
            );
            if let Ok(run) = &r {
                for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                    if let Some(bad) = injected_output(text) {
                        f.add(format!("{what}: {name} holds {bad}"));
                    }
                }
            }
            if must_refuse {
                let mut sub = Findings::default();
                expect_refusal(&mut sub, &r, 1, &["pending.json"]);
                for x in sub.0 {
                    f.add(format!("{what}: {x}"));
                }
                f.check(cur.as_deref() == Some("releases/v2"), || {
                    format!("{what}: current moved from releases/v2 to {cur:?}")
                });
            } else if let Err(e) = &r {
                f.add(format!("{what}: {e}"));
            }
        }
    }
    f.done("crafted pending.json");
}

/// History lines with control characters in `reason`, `to` and `from` (an
/// ESC sequence, a newline followed by `<0>`): `status` and `history` still
/// work, and their text output holds no raw ESC byte and no line starting
/// with `<0>`.
#[test]
fn crafted_history_lines() {
    let s = Scene::new();
    s.release("v1", 0, 0);
    s.release("v2", 0, 0);
    s.rctl().args(["activate", "v1"]).ok();
    s.rctl().args(["activate", "v2"]).ok();
    if is_root() {
        s.to_attacker();
    }
    let lines = [
        json!({"time": "2026-01-01T00:00:00Z", "event": "activated", "from": "v1", "to": "v2",
               "reason": "\u{1b}[2J\n<0>evil reason", "pid": 1}),
        json!({"time": "2026-01-01T00:00:01Z", "event": "rolled_back", "from": "v2\n<0>x",
               "to": "v1\u{1b}[2J", "reason": "ok", "pid": 1}),
        json!({"time": "2026-01-01T00:00:02Z\n<0>t", "event": "activated", "from": "v1",
               "to": "v2", "reason": "\u{1b}]0;title\u{7}\n<0>evil last", "pid": 1}),
    ];
    let mut h = fs::OpenOptions::new()
        .append(true)
        .open(s.path(".releasectl/history.jsonl"))
        .unwrap();
    for l in &lines {
        writeln!(h, "{l}").unwrap();
    }
    drop(h);
    let mut f = Findings::default();
    for args in [&["status"][..], &["history"], &["list"]] {
        match s.rctl().args(args).try_run() {
            Err(e) => f.add(e),
            Ok(r) => {
                f.check(r.code == Some(0), || {
                    format!("{args:?} failed: {}", brief(&r))
                });
                for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
                    if let Some(bad) = injected_output(text) {
                        f.add(format!("{args:?}: {name} holds {bad}: {}", brief(&r)));
                    }
                }
            }
        }
    }
    f.done("crafted history lines");
}

// 9. Damaged history, bounded memory

/// history.jsonl with a non-UTF-8 line, a 1 MiB line of garbage and a 3 GiB
/// sparse tail (no newline), and an interrupted activation in pending.json.
/// Under `prlimit --as=512MiB` (reading the file into memory would fail):
/// status, list and prune --dry-run work, recover restores and records it,
/// rollback and the activation of a new release work and are recorded.
#[test]
fn damaged_history_bounded_memory() {
    tools_ready(&["prlimit"]);
    // tmpfs reads holes without filling the page cache (ext4 takes seconds).
    let s = Scene::on_tmpfs();
    for id in ["v1", "v2", "v3", "v4"] {
        s.release(id, 0, 0);
    }
    s.rctl().args(["activate", "v1"]).ok();
    s.rctl().args(["activate", "v2"]).ok();
    let hist = s.path(".releasectl/history.jsonl");
    let mut h = fs::OpenOptions::new().append(true).open(&hist).unwrap();
    h.write_all(b"{\"time\": \"\xff\xfe not UTF-8\"}\n")
        .unwrap();
    h.write_all(&vec![b'x'; 1 << 20]).unwrap();
    h.write_all(b"\n").unwrap();
    drop(h);
    let f3 = fs::OpenOptions::new().write(true).open(&hist).unwrap();
    f3.set_len(3 << 30).unwrap();
    drop(f3);
    // Interrupted v2 -> v3 after its swap.
    s.set_current("v3");
    fs::write(
        s.path(".releasectl/pending.json"),
        json!({"from": "v2", "to": "v3", "pid": 999999999u32, "started": "2026-01-01T00:00:00Z",
               "history_offset": 0})
        .to_string(),
    )
    .unwrap();
    if is_root() {
        s.to_attacker();
    }
    let limited = |args: &[&str]| {
        Call::new(&["prlimit", "--as=536870912", "--"])
            .arg("--root")
            .arg(s.root())
            .args(args)
            .limit(SLOW)
            .try_run()
    };
    let mut f = Findings::default();
    let ok = |f: &mut Findings, args: &[&str]| -> bool {
        match limited(args) {
            Err(e) => {
                f.add(e);
                false
            }
            Ok(r) if r.code == Some(0) => true,
            Ok(r) => {
                f.add(format!("expected exit 0: {}", brief(&r)));
                false
            }
        }
    };
    // The interrupted activation: status reports it (exit 13), within the
    // same memory bound.
    match limited(&["status"]) {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(13), || {
            format!("expected exit 13 (interrupted): {}", brief(&r))
        }),
    }
    ok(&mut f, &["list"]);
    ok(&mut f, &["prune", "--dry-run"]);
    if ok(&mut f, &["recover"]) {
        f.check(s.current().as_deref() == Some("releases/v2"), || {
            format!("recover left current -> {:?}", s.current())
        });
        f.check(!s.path(".releasectl/pending.json").exists(), || {
            "recover left pending.json".into()
        });
        let last = s.history_tail();
        f.check(
            last.as_ref().is_some_and(|l| l["event"] == "recovered"),
            || format!("the recovery is not the history's last readable line: {last:?}"),
        );
    }
    if ok(&mut f, &["rollback"]) {
        f.check(s.current().as_deref() == Some("releases/v1"), || {
            format!("rollback left current -> {:?}", s.current())
        });
    }
    if ok(&mut f, &["activate", "v4"]) {
        f.check(s.current().as_deref() == Some("releases/v4"), || {
            format!("activate left current -> {:?}", s.current())
        });
        let last = s.history_tail();
        f.check(
            last.as_ref()
                .is_some_and(|l| l["event"] == "activated" && l["to"] == "v4"),
            || format!("the activation of v4 is not the history's last readable line: {last:?}"),
        );
    }
    ok(&mut f, &["status"]);
    f.done("damaged history");
}

// 10. setuid and setgid bits, foreign owners

/// A 4755 and a 2755 file and a 2755 directory, in a directory source owned
/// by the attacker and in .tar/.tar.gz/.tar.zst archives whose entries
/// belong to uid/gid 12345: after staging nothing under ROOT has a setuid or
/// setgid bit, and nothing belongs to 12345 (root or ROOT's owner only).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn setid_bits_and_owners_are_not_staged() {
    root_ready(&["zstd", "python3"]);
    let s = Scene::new();
    s.release("v0", 0, 0);
    s.to_attacker();
    // The directory source: the attacker's, bits set after the chown
    // (a chown clears them).
    let tree = s.src().join("tree");
    fs::create_dir_all(tree.join("sgdir")).unwrap();
    fs::write(tree.join("su"), "#!/bin/sh\nid\n").unwrap();
    fs::write(tree.join("sg"), "#!/bin/sh\nid\n").unwrap();
    fs::write(tree.join("sgdir/f"), "in a setgid dir\n").unwrap();
    chown_tree(&tree);
    for (p, mode) in [("su", 0o4755), ("sg", 0o2755), ("sgdir", 0o2755)] {
        fs::set_permissions(tree.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    let entries = json!([
        {"name": "sgdir", "type": "dir", "mode": 0o2755, "uid": 12345, "gid": 12345},
        {"name": "sgdir/f", "type": "file", "mode": 0o644, "uid": 12345, "gid": 12345, "data": "f\n"},
        {"name": "su", "type": "file", "mode": 0o4755, "uid": 12345, "gid": 12345, "data": "#!/bin/sh\n"},
        {"name": "sg", "type": "file", "mode": 0o2755, "uid": 12345, "gid": 12345, "data": "#!/bin/sh\n"},
        {"name": "both", "type": "file", "mode": 0o6755, "uid": 0, "gid": 0, "data": "#!/bin/sh\n"},
    ]);
    let tar = s.src().join("app.tar");
    write_tar(&tar, entries.clone(), None, false, false);
    let tgz = s.src().join("app.tar.gz");
    write_tar(&tgz, entries, None, true, false);
    let tzst = s.src().join("app.tar.zst");
    zstd(&tar, &tzst);
    let mut f = Findings::default();
    for (i, src) in [tree, tar, tgz, tzst].iter().enumerate() {
        let id = format!("x{i}");
        match s.rctl().arg("stage").arg(src).args(["--id", &id]).try_run() {
            Err(e) => f.add(e),
            Ok(r) => {
                f.check(
                    r.code == Some(0) || (r.code == Some(2) && one_line(&r).is_some()),
                    || format!("neither staged nor refused in one line: {}", brief(&r)),
                );
                let rel = s.path("releases").join(&id);
                for found in setid_files(&rel) {
                    f.add(format!(
                        "{}: staged with a setuid/setgid bit: {found}",
                        src.display()
                    ));
                }
                let mut stack = vec![rel];
                while let Some(p) = stack.pop() {
                    let Ok(m) = fs::symlink_metadata(&p) else {
                        continue;
                    };
                    if m.uid() == 12345 || m.gid() == 12345 || ![0, ATTACKER].contains(&m.uid()) {
                        f.add(format!(
                            "{}: {} belongs to {}:{}",
                            src.display(),
                            p.display(),
                            m.uid(),
                            m.gid()
                        ));
                    }
                    if m.is_dir() {
                        stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                    }
                }
            }
        }
    }
    for found in setid_files(&s.root()) {
        f.add(format!("find ROOT -perm /6000: {found}"));
    }
    f.done("setuid/setgid staging");
}

// 11. Archives that must be refused

/// Archives with a character device, a FIFO, no entries at all, cut inside
/// an entry, and cut exactly at an entry boundary (no end-of-archive
/// blocks), as .tar and (the truncated ones) .tar.gz and .tar.zst, also with
/// the compressed stream itself cut: exit 2, one stderr line, and the tree
/// (releases/ included: no .stage-* leftovers) exactly as before.
#[test]
fn bad_archives_are_refused_whole() {
    tools_ready(&["python3", "zstd"]);
    let s = Scene::new();
    s.release("v1", 0, 0);
    if is_root() {
        s.to_attacker();
    }
    let ok = json!({"name": "ok.txt", "type": "file", "data": "fine\n"});
    let big = json!({"name": "big.bin", "type": "file", "data": "z".repeat(4000)});
    let src = s.src();
    let mut cases: Vec<PathBuf> = Vec::new();
    let mut add = |name: &str, entries: Value, cut: Option<&str>, gz: bool, cut_stream: bool| {
        let p = src.join(name);
        write_tar(&p, entries, cut, gz, cut_stream);
        cases.push(p);
    };
    add(
        "chr.tar",
        json!([ok, {"name": "null2", "type": "chr", "mode": 0o666}]),
        None,
        false,
        false,
    );
    add(
        "fifo.tar",
        json!([ok, {"name": "pipe", "type": "fifo", "mode": 0o644}]),
        None,
        false,
        false,
    );
    add("empty.tar", json!([]), None, false, false);
    add("cut-mid.tar", json!([ok, big]), Some("mid"), false, false);
    add(
        "cut-boundary.tar",
        json!([ok, big]),
        Some("boundary"),
        false,
        false,
    );
    add("cut-mid.tar.gz", json!([ok, big]), Some("mid"), true, false);
    add(
        "cut-boundary.tar.gz",
        json!([ok, big]),
        Some("boundary"),
        true,
        false,
    );
    add("cut-stream.tar.gz", json!([ok, big]), None, true, true);
    add("empty.tar.gz", json!([]), None, true, false);
    add(
        "chr.tar.gz",
        json!([ok, {"name": "null2", "type": "chr"}]),
        None,
        true,
        false,
    );
    for (from, to, cut_half) in [
        ("cut-mid.tar", "cut-mid.tar.zst", false),
        ("cut-boundary.tar", "cut-boundary.tar.zst", false),
        ("chr.tar", "cut-stream.tar.zst", true),
    ] {
        let out = src.join(to);
        zstd(&src.join(from), &out);
        if cut_half {
            let len = fs::metadata(&out).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&out)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
        cases.push(out);
    }
    let mut f = Findings::default();
    for archive in &cases {
        let before = Tree::of(&s.root());
        let r = s
            .rctl()
            .arg("stage")
            .arg(archive)
            .args(["--id", "bad"])
            .try_run();
        let mut sub = Findings::default();
        expect_refusal(&mut sub, &r, 2, &[]);
        for x in sub.0 {
            f.add(format!("{}: {x}", archive.display()));
        }
        let after = Tree::of(&s.root());
        if before != after {
            let extra: Vec<&String> = after
                .0
                .keys()
                .filter(|k| !before.0.contains_key(*k))
                .collect();
            f.add(format!(
                "{}: the tree changed; new: {extra:?}",
                archive.display()
            ));
            let _ = fs::remove_dir_all(s.path("releases/bad"));
        }
    }
    f.done("bad archives");
}

// 12. Timeouts too large to add to a clock

/// `[health] timeout`, `[services] timeout` and `--lock-timeout` of
/// u64::MAX or i64::MAX seconds: refused at load with exit 2, stderr naming
/// the key or flag, nothing created (no .releasectl).
#[test]
fn huge_timeouts_are_refused_at_load() {
    let s = Scene::new();
    s.release("v1", 0, 0);
    s.release("v2", 0, 0);
    let mut f = Findings::default();
    for n in ["18446744073709551615", "9223372036854775807"] {
        for (key, body) in [
            (
                "health.timeout",
                format!("[health]\ncommand = [\"/bin/true\"]\ntimeout = {n}\n"),
            ),
            (
                "services.timeout",
                format!("[services]\nunits = [\"nothing-{n}.service\"]\ntimeout = {n}\n"),
            ),
        ] {
            s.config("web", &format!("root = \"{{root}}\"\n{body}"));
            let before = Tree::of(s.base());
            let r = s.rctl_config().args(["activate", "web:v2"]).try_run();
            let mut sub = Findings::default();
            expect_exit_naming(&mut sub, &r, 2, &[key]);
            for x in sub.0 {
                f.add(format!("{key} = {n}: {x}"));
            }
            if before != Tree::of(s.base()) {
                f.add(format!("{key} = {n}: the tree changed"));
            }
        }
        fs::remove_file(s.etc().join("web.toml")).unwrap();
        let before = Tree::of(s.base());
        let r = s
            .rctl()
            .args(["activate", "v2", "--lock-timeout", n])
            .try_run();
        let mut sub = Findings::default();
        expect_exit_naming(&mut sub, &r, 2, &["lock-timeout"]);
        for x in sub.0 {
            f.add(format!("--lock-timeout {n}: {x}"));
        }
        if before != Tree::of(s.base()) {
            f.add(format!(
                "--lock-timeout {n}: the tree changed (.releasectl exists: {})",
                s.path(".releasectl").exists()
            ));
        }
    }
    f.done("huge timeouts");
}

// 13. A full disk

/// ROOT is a 1 MiB tmpfs filled to the last page: activate exits 1 before
/// the swap and changes nothing (`current` still v1, no pending.json, no
/// leftovers), and stage exits 1 too (a full disk is not bad input).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn disk_full_changes_nothing() {
    root_ready(&["mount", "umount"]);
    let s = Scene::new();
    let _mount = match Mount::tmpfs(&s.root(), "1m") {
        Ok(m) => m,
        Err(e) => missing(&format!("cannot mount a tmpfs: {e}")),
    };
    s.release("v1", 0, 0);
    s.release("v2", 0, 0);
    s.rctl().args(["activate", "v1"]).ok();
    fs::create_dir_all(s.src().join("tree")).unwrap();
    fs::write(s.src().join("tree/version"), "new\n").unwrap();
    let mut filler = fs::File::create(s.path("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while filler.write_all(&chunk).is_ok() {}
    while filler.write_all(&[0]).is_ok() {}
    drop(filler);
    let before = Tree::of(&s.root())
        .without(".releasectl/lock")
        .without("filler");
    let mut f = Findings::default();
    let exit = |f: &mut Findings, r: Result<Run, String>, code: i32| match r {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(code), || {
            format!("expected exit {code}: {}", brief(&r))
        }),
    };
    exit(&mut f, s.rctl().args(["activate", "v2"]).try_run(), 1);
    f.check(s.current().as_deref() == Some("releases/v1"), || {
        format!("current -> {:?} after a failed activation", s.current())
    });
    let after = Tree::of(&s.root())
        .without(".releasectl/lock")
        .without("filler");
    if before != after {
        let diff: Vec<&String> = after
            .0
            .iter()
            .filter(|(k, v)| before.0.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(before.0.keys().filter(|k| !after.0.contains_key(*k)))
            .collect();
        f.add(format!("activate on a full disk changed {diff:?}"));
    }
    let r = s
        .rctl()
        .arg("stage")
        .arg(s.src().join("tree"))
        .args(["--id", "v3"])
        .try_run();
    exit(&mut f, r, 1);
    let names: Vec<String> = fs::read_dir(s.path("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    f.check(names.len() == 2, || {
        format!("stage on a full disk left {names:?}")
    });
    f.done("disk full");
}

/// activate v1 -> v2 with one failure injected by strace (ENOSPC or EIO on
/// the Nth write, fsync, fdatasync, ftruncate, symlinkat or renameat), for N = 1, 2, ... until the run no longer reaches the Nth
/// call. After each run: exit 0 means v2 is current and committed (history's
/// last event `activated`, no pending.json); exit 1 or 4 means v1 is
/// current; `current` always resolves to a complete release.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn injected_io_failures_keep_the_invariant() {
    root_ready(&["strace"]);
    let s = Scene::on_tmpfs();
    s.release("v1", 0, 0);
    s.release("v2", 0, 0);
    s.rctl().args(["activate", "v1"]).ok();
    let trace = s.base().join("trace");
    let mut f = Findings::default();
    let mut runs = 0;
    for (call, err) in [
        ("write", "ENOSPC"),
        ("fsync", "ENOSPC"),
        ("fsync", "EIO"),
        ("fdatasync", "EIO"),
        ("ftruncate", "ENOSPC"),
        ("symlinkat", "ENOSPC"),
        ("renameat", "ENOSPC"),
        ("renameat2", "ENOSPC"),
    ] {
        for n in 1..=40 {
            let inject = format!("inject={call}:error={err}:when={n}");
            let tr = ps(&trace);
            let r = Call::new(&[
                "strace",
                "-f",
                "-o",
                &tr,
                "-e",
                &format!("trace={call}"),
                "-e",
                &inject,
            ])
            .arg("--root")
            .arg(s.root())
            .args(["activate", "v2"])
            .limit(SLOW)
            .try_run();
            runs += 1;
            let hit = fs::read_to_string(&trace)
                .unwrap_or_default()
                .contains("INJECTED");
            let what = format!("{call} #{n} fails with {err}");
            let cur = s.current();
            let complete = cur
                .as_deref()
                .and_then(|c| c.strip_prefix("releases/"))
                .is_some_and(|id| {
                    fs::read_to_string(s.path(&format!("releases/{id}/version")))
                        .is_ok_and(|v| v.trim_end() == id)
                });
            f.check(complete, || {
                format!("{what}: current -> {cur:?} is not a complete release")
            });
            let pending = s.path(".releasectl/pending.json").exists();
            match &r {
                Err(e) => f.add(format!("{what}: {e}")),
                Ok(run) => match run.code {
                    Some(0) => {
                        let last = s.history_tail();
                        f.check(cur.as_deref() == Some("releases/v2"), || {
                            format!("{what}: exit 0 but current -> {cur:?}")
                        });
                        f.check(!pending, || {
                            format!("{what}: exit 0 with pending.json left")
                        });
                        f.check(
                            last.as_ref()
                                .is_some_and(|l| l["event"] == "activated" && l["to"] == "v2"),
                            || format!("{what}: exit 0 but history's last entry is {last:?}"),
                        );
                    }
                    Some(1) | Some(11) => f.check(cur.as_deref() == Some("releases/v1"), || {
                        format!(
                            "{what}: exit {:?} but current -> {cur:?}: {}",
                            run.code,
                            brief(run)
                        )
                    }),
                    _ => f.add(format!("{what}: unexpected exit: {}", brief(run))),
                },
            }
            // Back to v1 with nothing pending, without injection.
            if let Err(e) = s.rctl().args(["activate", "v1"]).try_run().and_then(|r| {
                if r.code == Some(0) {
                    Ok(())
                } else {
                    Err(brief(&r))
                }
            }) {
                f.add(format!("{what}: resetting to v1 failed: {e}"));
                s.rctl().arg("recover").try_run().ok();
                s.rctl().args(["activate", "v1"]).try_run().ok();
            }
            if !hit {
                break;
            }
        }
    }
    eprintln!("fault injection: {runs} runs");
    f.check(runs > 20, || {
        format!("only {runs} injected runs: strace injection did not work")
    });
    f.done("injected I/O failures");
}

// 14. Read-only and permission errors

/// ROOT on a read-only bind mount: activate, rollback, prune and stage fail
/// with exit 1 (an operational error, not bad input), one line, `current`
/// unchanged. The same commands run by a user who may not write ROOT: exit 1;
/// so do reading a request file and writing a request it may not.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn read_only_and_permission_errors_exit_1() {
    attack_ready(&["mount", "umount"]);
    let s = Scene::new();
    for id in ["v1", "v2", "v3"] {
        s.release(id, 0, 0);
    }
    s.rctl().args(["activate", "v1"]).ok();
    s.rctl().args(["activate", "v2"]).ok();
    fs::create_dir_all(s.src().join("tree")).unwrap();
    fs::write(s.src().join("tree/version"), "new\n").unwrap();
    let commands: [Vec<String>; 4] = [
        vec!["activate".into(), "v3".into()],
        vec!["rollback".into()],
        vec!["prune".into(), "--keep".into(), "0".into()],
        vec![
            "stage".into(),
            ps(&s.src().join("tree")),
            "--id".into(),
            "v4".into(),
        ],
    ];
    let mut f = Findings::default();
    {
        let _ro = match Mount::read_only_bind(&s.root()) {
            Ok(m) => m,
            Err(e) => missing(&format!("cannot make a read-only bind mount: {e}")),
        };
        for args in &commands {
            let r = s.rctl().args(args).try_run();
            let mut sub = Findings::default();
            expect_refusal(&mut sub, &r, 1, &[]);
            for x in sub.0 {
                f.add(format!("read-only ROOT, {}: {x}", args.join(" ")));
            }
            f.check(s.current().as_deref() == Some("releases/v2"), || {
                format!(
                    "read-only ROOT, {}: current -> {:?}",
                    args.join(" "),
                    s.current()
                )
            });
        }
    }
    // The unprivileged user against root's ROOT (a copy of the binary, so
    // the checkout need not be reachable by uid 65534).
    let bin = s.base().join("releasectl");
    fs::copy(BIN, &bin).unwrap();
    let uid = format!("--reuid={ATTACKER}");
    let gid = format!("--regid={ATTACKER}");
    for args in &commands {
        let r = Call::exe(&["setpriv", &uid, &gid, "--clear-groups"], &bin)
            .arg("--root")
            .arg(s.root())
            .args(args)
            .try_run();
        let mut sub = Findings::default();
        expect_refusal(&mut sub, &r, 1, &[]);
        for x in sub.0 {
            f.add(format!("unprivileged, {}: {x}", args.join(" ")));
        }
    }
    // The request path: a request file this user may not read, and a
    // requests directory it may not write. The machine's problem, not bad
    // input: exit 1, naming the path.
    s.config("web", "root = \"{root}\"\n");
    let requests = s.base().join("requests");
    fs::create_dir(&requests).unwrap();
    fs::write(requests.join("web"), "v3\n").unwrap();
    fs::set_permissions(requests.join("web"), fs::Permissions::from_mode(0o600)).unwrap();
    let web = ps(&requests.join("web"));
    for (args, needle) in [
        (vec!["activate", "--request", "web"], web.as_str()),
        (vec!["request", "web:v3"], &*ps(&requests)),
    ] {
        let r = Call::exe(&["setpriv", &uid, &gid, "--clear-groups"], &bin)
            .arg("--config-dir")
            .arg(s.etc())
            .args(&args)
            .arg("--requests-dir")
            .arg(&requests)
            .try_run();
        let mut sub = Findings::default();
        expect_refusal(&mut sub, &r, 1, &[needle, "Permission denied"]);
        for x in sub.0 {
            f.add(format!("unprivileged, {}: {x}", args.join(" ")));
        }
    }
    f.check(s.current().as_deref() == Some("releases/v2"), || {
        format!("current -> {:?}", s.current())
    });
    f.done("read-only and permission errors");
}

// 15. Staging records (releases/.staged)

/// The deploy user owns `releases/`, so root's staging records live where
/// the attacker can plant things: `.staged` as a symlink to the victim, a
/// record that is a hard link to a victim file, one that is a FIFO. Root's
/// `stage` still stages (the record is only a date) and writes nothing
/// through any of them; `list` neither follows nor opens them (a FIFO would
/// hang an open); `prune` removes names, never what they point at.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn planted_staging_records() {
    root_ready(&[]);
    let s = Scene::new();
    s.release("v0", 0, 0);
    fs::write(s.src().join("index.html"), "hi\n").unwrap();
    s.to_attacker();
    let mut f = Findings::default();

    // .staged -> VICTIM
    symlink(s.victim(), s.path("releases/.staged")).unwrap();
    let before = s.victim_listing();
    for args in [
        &["stage", &ps(&s.src()), "--id", "r1"][..],
        &["list"],
        &["prune", "--keep", "0"],
    ] {
        match s.rctl().args(args).try_run() {
            Err(e) => f.add(e),
            Ok(r) => f.check(r.code == Some(0), || {
                format!("{args:?} with .staged -> victim: {}", brief(&r))
            }),
        }
    }
    if let Some(d) = before.diff(&s.victim_listing()) {
        f.add(format!(".staged -> victim changed the victim:\n{d}"));
    }

    // A real .staged holding a hard link to a victim file and a FIFO.
    fs::remove_file(s.path("releases/.staged")).unwrap();
    fs::create_dir(s.path("releases/.staged")).unwrap();
    chown_tree(&s.path("releases/.staged"));
    fs::hard_link(s.victim().join("hard"), s.path("releases/.staged/r2")).unwrap();
    s.release("r3", 0, 0);
    // The deploy user's, like everything in their releases/: root prunes
    // with their rights, and a tree of root's there would stay.
    chown_tree(&s.path("releases/r3"));
    let fifo = s.path("releases/.staged/r3");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let hard = fs::read(s.victim().join("hard")).unwrap();
    let before = s.victim_listing();
    match s
        .rctl()
        .args(["stage", &ps(&s.src()), "--id", "r2"])
        .try_run()
    {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(0), || {
            format!("stage over a hard-linked record: {}", brief(&r))
        }),
    }
    match s.rctl().args(["--json", "list"]).try_run() {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(0) && r.stdout.contains("\"r3\""), || {
            format!("list with a FIFO record: {}", brief(&r))
        }),
    }
    match s.rctl().args(["prune", "--keep", "0"]).try_run() {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(0), || {
            format!("prune with planted records: {}", brief(&r))
        }),
    }
    f.check(fs::read(s.victim().join("hard")).unwrap() == hard, || {
        "the hard-linked victim file was written".into()
    });
    if let Some(d) = before.diff(&s.victim_listing()) {
        f.add(format!("planted records changed the victim:\n{d}"));
    }
    f.check(!fifo.exists(), || {
        "prune left the record of a pruned release".into()
    });
    f.done("planted staging records");
}

// 16. The request path: what members of group releasectl may plant

/// The requests directory as deploy-watch@ sees it: group-writable by the
/// attacker's group (as /var/lib/releasectl/requests is by `releasectl`),
/// and the results directory root's alone, readable by that group.
fn request_dirs(s: &Scene) -> (PathBuf, PathBuf) {
    let (requests, results) = (s.base().join("requests"), s.base().join("results"));
    for (dir, mode) in [(&requests, 0o2775), (&results, 0o750)] {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(0), Some(ATTACKER)).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    (requests, results)
}

/// `activate --request web` as the watch unit runs it.
fn watch(s: &Scene, requests: &Path, results: &Path) -> Result<Run, String> {
    s.rctl_config()
        .args(["activate", "--request", "web", "--requests-dir"])
        .arg(requests)
        .arg("--results-dir")
        .arg(results)
        .try_run()
}

/// What a member plants as the request file: a symlink to a file only root
/// may read, a dangling one, a FIFO, a hard link to root's file, a
/// directory, a sparse 3 GiB file. Root refuses each as bad input (exit 2,
/// one line naming the request file) without following, blocking or
/// reading it, leaves `current` and the victim alone, and records an
/// `invalid` outcome the member can read, which holds nothing of the victim.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn planted_request_files() {
    attack_ready(&["mkfifo"]);
    let s = Scene::new();
    for id in ["v1", "v2"] {
        s.release(id, 0, 0);
    }
    s.config("web", "root = \"{root}\"\n");
    s.rctl_config().args(["activate", "web:v1"]).ok();
    let mut f = Findings::default();
    for plant in ["symlink", "dangling", "fifo", "hardlink", "dir", "huge"] {
        let (requests, results) = request_dirs(&s);
        let at = requests.join("web");
        match plant {
            "symlink" => symlink(s.victim().join("secret"), &at).unwrap(),
            "dangling" => symlink(s.victim().join("created-by-root"), &at).unwrap(),
            "fifo" => {
                let made = as_attacker("mkfifo").arg(&at).status().unwrap();
                assert!(made.success());
            }
            // protected_hardlinks keeps the attacker from making it; as if
            // it were off (or the file were the attacker's to read).
            "hardlink" => fs::hard_link(s.victim().join("hard"), &at).unwrap(),
            "dir" => fs::create_dir(&at).unwrap(),
            _ => {
                let file = fs::File::create(&at).unwrap();
                file.set_len(3 << 30).unwrap();
            }
        }
        if plant != "hardlink" {
            let _ = std::os::unix::fs::lchown(&at, Some(ATTACKER), Some(ATTACKER));
        }
        let before = s.victim_listing();
        let r = watch(&s, &requests, &results);
        expect_refusal(&mut f, &r, 2, &["request file"]);
        f.check(s.current().as_deref() == Some("releases/v1"), || {
            format!("{plant}: current -> {:?}", s.current())
        });
        if let Some(d) = before.diff(&s.victim_listing()) {
            f.add(format!("{plant}: the victim changed:\n{d}"));
        }
        let recorded = fs::read_to_string(results.join("web")).unwrap_or_default();
        f.check(recorded.contains("\"outcome\": \"invalid\""), || {
            format!("{plant}: no invalid outcome recorded: {recorded:?}")
        });
        f.check(!recorded.contains(SECRET), || {
            format!("{plant}: the secret reached the outcomes")
        });
        if let Ok(run) = &r {
            f.check(!run.stderr.contains(SECRET), || {
                format!("{plant}: the secret reached stderr")
            });
        }
    }
    f.done("planted request files");
}

/// A results directory that is not root's alone (a careless `chmod g+w`,
/// or one handed to the attacker), with symlinks to victim files planted
/// under the outcome's name and under root's temp name, or itself a
/// symlink into the victim: root writes nothing through any of them. The
/// activation itself still happens (the outcome is a courtesy), with a
/// warning that it was not recorded.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn results_dir_others_may_write_is_not_written() {
    attack_ready(&[]);
    let s = Scene::new();
    for id in ["v1", "v2", "v3", "v4"] {
        s.release(id, 0, 0);
    }
    s.config("web", "root = \"{root}\"\n");
    s.rctl_config().args(["activate", "web:v1"]).ok();
    let mut f = Findings::default();
    for (n, case) in ["group-writable", "attacker's", "symlink"]
        .iter()
        .enumerate()
    {
        let (requests, results) = request_dirs(&s);
        match *case {
            "group-writable" => {
                fs::set_permissions(&results, fs::Permissions::from_mode(0o2775)).unwrap()
            }
            "attacker's" => chown_tree(&results),
            _ => {
                fs::remove_dir(&results).unwrap();
                symlink(s.victim(), &results).unwrap();
            }
        }
        if *case != "symlink" {
            symlink(s.victim().join("target"), results.join("web")).unwrap();
            symlink(s.victim().join("passwd"), results.join(".web.tmp")).unwrap();
            for name in ["web", ".web.tmp"] {
                std::os::unix::fs::lchown(results.join(name), Some(ATTACKER), Some(ATTACKER))
                    .unwrap();
            }
        }
        let id = format!("v{}", n + 2);
        fs::write(requests.join("web"), format!("{id}\n")).unwrap();
        let before = s.victim_listing();
        let r = watch(&s, &requests, &results);
        match &r {
            Err(hung) => f.add(format!("{case}: {hung}")),
            Ok(run) => {
                f.check(run.code == Some(0), || format!("{case}: {}", brief(run)));
                f.check(run.stderr.contains("outcome not recorded"), || {
                    format!("{case}: no warning: {}", brief(run))
                });
            }
        }
        f.check(s.current() == Some(format!("releases/{id}")), || {
            format!("{case}: current -> {:?}", s.current())
        });
        if let Some(d) = before.diff(&s.victim_listing()) {
            f.add(format!("{case}: the victim changed:\n{d}"));
        }
        if *case == "symlink" {
            fs::remove_file(&results).unwrap();
        }
    }
    f.done("results dir others may write");
}

// 17. Shared paths: shared/ is the deploy user's

/// A Laravel-like source in the scene's `src/app`.
fn shared_source(s: &Scene) -> PathBuf {
    let app = s.src().join("app");
    for d in ["storage/logs", "public", "log", "cache"] {
        fs::create_dir_all(app.join(d)).unwrap();
    }
    fs::write(app.join("version"), "staged\n").unwrap();
    fs::write(app.join(".env"), "APP_KEY=release\n").unwrap();
    fs::write(app.join("storage/logs/app.log"), "release log\n").unwrap();
    fs::write(app.join("log/x"), "x\n").unwrap();
    fs::write(app.join("public/index.php"), "<?php\n").unwrap();
    app
}

/// The attacker fills `shared/` before root deploys: `.env` a hard link to
/// a root-owned victim file (as with fs.protected_hardlinks=0), `storage`
/// a FIFO, `log` and `cache` symlinks to victim directories, and (second
/// part) `public` a symlink to the victim when the shared path is
/// `public/uploads`. Root only links to what exists (never opening,
/// writing or deleting through it, never blocking on the FIFO) and refuses
/// the symlink on the way (exit 2); nothing outside ROOT changes.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn planted_shared_entries() {
    root_ready(&["mkfifo"]);
    let s = Scene::new();
    s.release("v0", 0, 0);
    let src = shared_source(&s);
    let shared = s.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::hard_link(s.victim().join("hard"), shared.join(".env")).unwrap();
    let made = Command::new("mkfifo")
        .arg(shared.join("storage"))
        .status()
        .unwrap();
    assert!(made.success());
    symlink(s.victim(), shared.join("log")).unwrap();
    symlink(s.victim().join("sub"), shared.join("cache")).unwrap();
    s.to_attacker();
    let hard = fs::read(s.victim().join("hard")).unwrap();
    let before = s.outside_listing();
    let mut f = Findings::default();

    let r = s
        .rctl()
        .args(["deploy", &ps(&src), "--id", "r1", "--shared-file", ".env"])
        .args([
            "--shared-dir",
            "storage",
            "--shared-dir",
            "log",
            "--shared-dir",
            "cache",
        ])
        .try_run();
    match &r {
        Err(e) => f.add(e.clone()),
        Ok(r) => f.check(r.code == Some(0), || {
            format!("deploy over planted shared/: {}", brief(r))
        }),
    }
    for (name, target) in [
        (".env", "../../shared/.env"),
        ("storage", "../../shared/storage"),
        ("log", "../../shared/log"),
        ("cache", "../../shared/cache"),
    ] {
        let got = fs::read_link(s.path("releases/r1").join(name)).ok();
        f.check(got.as_deref() == Some(Path::new(target)), || {
            format!("releases/r1/{name} is {got:?}, not the link {target}")
        });
    }
    f.check(fs::read(s.victim().join("hard")).unwrap() == hard, || {
        "the hard-linked victim file was written".into()
    });
    // `verify` reads the release, never what its links point at.
    if let Ok(r) = s.rctl().args(["verify", "r1"]).try_run() {
        f.check(r.code == Some(0), || format!("verify: {}", brief(&r)));
    }

    // public -> VICTIM with shared path public/uploads.
    symlink(s.victim(), shared.join("public")).unwrap();
    chown_tree(&shared);
    let r = s
        .rctl()
        .args(["deploy", &ps(&src), "--shared-dir", "public/uploads"])
        .try_run();
    expect_refusal(&mut f, &r, 2, &["public", "symlink"]);
    if let Some(d) = before.diff(&s.outside_listing()) {
        f.add(format!("planted shared/ changed things outside ROOT:\n{d}"));
    }
    f.done("planted shared entries");
}

/// While root stages with shared paths to seed (`storage`, `.env`,
/// `public/uploads`), the attacker exchanges `shared` itself or
/// `shared/public` with a symlink to the victim (which holds directories
/// of the same names) in a loop, or, every third round, only watches for
/// a `.seed-*` name in `shared/` to swap, so that seeding goes through.
/// Every round: exit 0, 1 or 2 (never a hang), nothing outside ROOT
/// changed, and some rounds seed. (`stage_raced_by_exchanges` races the
/// temp tree itself.)
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn shared_seeding_raced_by_exchanges() {
    attack_ready(&[]);
    let s = Scene::on_tmpfs();
    let src = shared_source(&s);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut codes = BTreeMap::<i32, usize>::new();
    let mut rounds = Rounds::new(6, 16, Duration::from_millis(2500));
    while let Some(round) = rounds.next() {
        s.reset_root();
        s.release("v0", 0, 0);
        fs::create_dir_all(s.path("shared/public")).unwrap();
        s.to_attacker();
        s.reset_victim(&["storage", "public", "uploads"]);
        fs::create_dir_all(s.victim().join("public/uploads")).unwrap();
        let before = s.outside_listing();
        let (root, rel, shared) = (s.root(), s.path("releases"), s.path("shared"));
        let pairs = match round % 3 {
            0 => json!([[ps(&shared), ps(&root.join(".evil"))]]),
            1 => json!([[ps(&shared.join("public")), ps(&shared.join(".evil"))]]),
            // Only the watches: the seeding itself goes through.
            _ => json!([]),
        };
        let spec = json!({
            "links": [[ps(&root.join(".evil")), ps(&s.victim())],
                      [ps(&shared.join(".evil")), ps(&s.victim())],
                      [ps(&rel.join(".evil")), ps(&s.victim())]],
            "pairs": pairs,
            "watch": [{"dir": ps(&shared), "prefix": ".seed-", "link": ".evil"}],
        });
        let mut att = Attacker::start(&s, spec);
        let r = s
            .rctl()
            .args(["deploy", &ps(&src), "--id", &format!("s{round}")])
            .args(["--shared-dir", "storage", "--shared-dir", "public/uploads"])
            .args(["--shared-file", ".env"])
            .limit(SLOW)
            .try_run();
        stats.add(&att.stop());
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => {
                *codes.entry(r.code.unwrap_or(-1)).or_default() += 1;
                f.check(matches!(r.code, Some(0..=2)), || {
                    format!("round {round}: unexpected exit: {}", brief(r))
                })
            }
        }
        if let Some(d) = before.diff(&s.outside_listing()) {
            f.add(format!("round {round}: outside ROOT changed:\n{d}"));
        }
    }
    eprintln!("shared race: exits {codes:?}; racer {stats:?}");
    f.check(codes.get(&0).is_some_and(|n| *n > 0), || {
        format!("no round seeded shared/ ({codes:?})")
    });
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("shared seeding raced");
}
