//! A tiny harness for the integration tests: every test gets a fresh temp
//! directory, runs the real `releasectl` binary in it, and compares full
//! listings of the tree to prove that a refused command changed nothing.
//!
//! Layout of a test directory:
//! ```text
//! TMP/
//!   root/      the app root (--root, or `root =` in the config)
//!   etc/       the config dir (--config-dir), empty until a test writes a config
//!   outside/   a place outside the root that hostile input aims at
//! ```

pub mod readme;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_releasectl");

/// A fresh temp directory holding an app root, a config dir and an outside place.
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir::with(tempfile::tempdir().expect("tempdir"))
    }

    /// On tmpfs when there is one: the race test swaps thousands of times,
    /// and fsync on a disk would make it slow without making it more real
    /// (rename(2) is the same call on every filesystem).
    pub fn on_tmpfs() -> Dir {
        let shm = Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("releasectl-test")
                .tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        Dir::with(tmp.expect("tempdir"))
    }

    fn with(tmp: tempfile::TempDir) -> Dir {
        for d in ["root", "etc", "outside"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        Dir { tmp }
    }

    /// The whole temp directory (what tree listings cover).
    pub fn base(&self) -> &Path {
        self.tmp.path()
    }

    pub fn root(&self) -> PathBuf {
        self.base().join("root")
    }

    pub fn etc(&self) -> PathBuf {
        self.base().join("etc")
    }

    pub fn outside(&self) -> PathBuf {
        self.base().join("outside")
    }

    /// A path below the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Create `releases/<id>` holding `version` (content "<id>\n").
    pub fn release(&self, id: &str) -> &Dir {
        let dir = self.path("releases").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("version"), format!("{id}\n")).unwrap();
        self
    }

    pub fn releases(&self, ids: &[&str]) -> &Dir {
        for id in ids {
            self.release(id);
        }
        self
    }

    /// Write a file below the temp base (parents created).
    pub fn write(&self, rel_to_base: &str, content: &str) -> PathBuf {
        let p = self.base().join(rel_to_base);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Write `etc/<app>.toml`; `{root}` and `{base}` in `body` are replaced.
    pub fn config(&self, app: &str, body: &str) -> PathBuf {
        let text = body
            .replace("{root}", &self.root().display().to_string())
            .replace("{base}", &self.base().display().to_string());
        self.write(&format!("etc/{app}.toml"), &text)
    }

    /// `releasectl --root ROOT ...`
    pub fn cmd(&self) -> TestCommand {
        let mut c = TestCommand::new();
        c.arg("--root").arg(self.root());
        c
    }

    /// `releasectl --config-dir ETC ...`
    pub fn cmd_config(&self) -> TestCommand {
        let mut c = TestCommand::new();
        c.arg("--config-dir").arg(self.etc());
        c
    }

    /// The release `current` points at, from the link itself.
    pub fn current(&self) -> Option<String> {
        let target = std::fs::read_link(self.path("current")).ok()?;
        let s = target.to_str().expect("utf-8 link").to_string();
        Some(
            s.strip_prefix("releases/")
                .unwrap_or_else(|| panic!("current -> {s} is not relative to releases/"))
                .to_string(),
        )
    }

    /// What a reader of `current/version` sees right now.
    pub fn current_version(&self) -> String {
        std::fs::read_to_string(self.path("current/version"))
            .unwrap_or_else(|e| panic!("reading current/version: {e}"))
            .trim_end()
            .to_string()
    }

    /// `current` resolves to a complete release: the link names a release
    /// whose `version` file says that same id.
    pub fn assert_current_complete(&self) -> String {
        let id = self.current().expect("current exists");
        assert_eq!(self.current_version(), id, "current/version disagrees");
        id
    }

    /// History lines, parsed.
    pub fn history(&self) -> Vec<serde_json::Value> {
        match std::fs::read_to_string(self.path(".releasectl/history.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("history line is JSON"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn pending(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.path(".releasectl/pending.json")).ok()?;
        Some(serde_json::from_str(&text).expect("pending.json is JSON"))
    }

    /// Names in `releases/`, sorted, without `.staged` (the staging
    /// records, see `order_is_staging_time_whatever_the_app_writes`).
    pub fn release_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".staged")
            .collect();
        v.sort();
        v
    }

    /// Listing of the whole temp directory.
    pub fn tree(&self) -> Tree {
        Tree::of(self.base())
    }
}

/// A full listing of a tree: for each path its type, symlink target, size
/// and content. Used to prove "nothing changed" (mtimes are left out on
/// purpose: reading a directory does not change anything we care about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, String>);

impl Tree {
    pub fn of(top: &Path) -> Tree {
        let mut map = BTreeMap::new();
        walk(top, top, &mut map);
        Tree(map)
    }

    /// The listing without one path (e.g. the lock file, whose content names
    /// the last holder and so changes whenever the lock is taken).
    pub fn without(mut self, rel: &str) -> Tree {
        self.0.remove(rel);
        self
    }

    /// The stricter listing the attack tests judge a victim by: also each
    /// path's mode, owner and mtime (and those of `top` itself, as `.`),
    /// content by hash; the top-level names in `skip` left out. It never
    /// panics on what vanishes or cannot be read while it lists (an
    /// attacker may be changing the tree): such a path reads `vanished`.
    pub fn with_metadata(top: &Path, skip: &[&str]) -> Tree {
        let mut map = BTreeMap::new();
        map.insert(".".to_string(), describe_with_metadata(top));
        walk_with_metadata(top, top, skip, &mut map);
        Tree(map)
    }

    /// `None` if `self == after`, else a readable diff.
    pub fn diff(&self, after: &Tree) -> Option<String> {
        if self == after {
            return None;
        }
        let mut diff = String::new();
        for (k, v) in &self.0 {
            match after.0.get(k) {
                None => writeln!(diff, "- {k}: {v}").unwrap(),
                Some(w) if w != v => writeln!(diff, "~ {k}: {v}  =>  {w}").unwrap(),
                _ => {}
            }
        }
        for (k, v) in &after.0 {
            if !self.0.contains_key(k) {
                writeln!(diff, "+ {k}: {v}").unwrap();
            }
        }
        Some(diff)
    }

    /// Panic with a readable diff unless `self == after`.
    pub fn assert_same(&self, after: &Tree, what: &str) {
        if let Some(diff) = self.diff(after) {
            panic!("{what}: the tree changed:\n{diff}");
        }
    }
}

fn walk_with_metadata(top: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let rel = p.strip_prefix(top).unwrap().to_string_lossy().into_owned();
        if dir == top && skip.contains(&rel.as_str()) {
            continue;
        }
        out.insert(rel, describe_with_metadata(&p));
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            walk_with_metadata(top, &p, skip, out);
        }
    }
}

/// Type, mode, owner, mtime, size and content hash (symlinks by target,
/// never followed).
fn describe_with_metadata(p: &Path) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return "vanished".into();
    };
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        match std::fs::read_link(p) {
            Ok(target) => format!("symlink -> {}", target.display()),
            Err(_) => return "vanished".into(),
        }
    } else if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_file() {
        let hash = std::fs::read(p).map(|b| fnv(&b)).unwrap_or(0);
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

/// FNV-1a: a content fingerprint for listings, not a security hash.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn walk(top: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(top).unwrap().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let ft = meta.file_type();
        let desc = if ft.is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_dir() {
            walk(top, &p, out);
            "dir".to_string()
        } else if ft.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            format!(
                "file {} bytes: {}",
                meta.len(),
                String::from_utf8_lossy(&bytes).escape_debug()
            )
        } else {
            "special".to_string()
        };
        out.insert(rel, desc);
    }
}

/// A command line for the real binary.
pub struct TestCommand {
    cmd: Command,
    shown: Vec<String>,
}

impl TestCommand {
    pub fn new() -> TestCommand {
        let mut cmd = Command::new(BIN);
        // Keep test output independent of the caller's environment.
        cmd.env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        TestCommand {
            cmd,
            shown: vec!["releasectl".into()],
        }
    }

    /// The binary run by another program: `prefix... releasectl` (e.g.
    /// `prlimit --as=N`, `/usr/bin/time`, `setpriv ...`).
    pub fn under(prefix: &[&str]) -> TestCommand {
        let mut cmd = Command::new(prefix[0]);
        cmd.args(&prefix[1..])
            .arg(BIN)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        let mut shown: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        shown.push("releasectl".into());
        TestCommand { cmd, shown }
    }

    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut TestCommand {
        self.shown.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Feed the file at `path` on stdin (instead of /dev/null).
    pub fn stdin_file(&mut self, path: &Path) -> &mut TestCommand {
        let f =
            std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        self.shown.push(format!("< {}", path.display()));
        self.cmd.stdin(f);
        self
    }

    pub fn shown(&self) -> String {
        self.shown.join(" ")
    }

    pub fn run(&mut self) -> Run {
        let out = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.shown()));
        Run {
            shown: self.shown(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Run and require exit status `code`.
    pub fn expect(&mut self, code: i32) -> Run {
        let r = self.run();
        assert_eq!(r.code, Some(code), "unexpected exit status\n{r}");
        r
    }

    pub fn ok(&mut self) -> Run {
        self.expect(0)
    }

    /// Start in the background (stdout and stderr piped).
    pub fn spawn(&mut self) -> Child {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.shown()))
    }
}

/// The result of one run.
pub struct Run {
    pub shown: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The whole `--json` document, checked to be the envelope every run
    /// prints: schema, command, `ok` and `exit_code` agreeing with the exit
    /// status, an `error` exactly when it failed.
    pub fn envelope(&self) -> serde_json::Value {
        let doc: serde_json::Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{self}"));
        assert_eq!(doc["schema"], "releasectl.v1", "{self}");
        assert!(
            doc["command"].is_string() || doc["command"].is_null(),
            "{self}"
        );
        assert_eq!(doc["exit_code"], self.code.unwrap_or(-1), "{self}");
        assert_eq!(doc["ok"], self.code == Some(0), "{self}");
        assert_eq!(doc["error"].is_object(), self.code != Some(0), "{self}");
        doc
    }

    /// The command's report in the `--json` envelope (`null` if it made none).
    pub fn json(&self) -> serde_json::Value {
        self.envelope()["result"].clone()
    }

    /// The error line: stderr must be exactly one line.
    pub fn one_line_error(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected a one-line error\n{self}");
        lines[0]
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit: {:?}\n--- stdout\n{}--- stderr\n{}",
            self.shown, self.code, self.stdout, self.stderr
        )
    }
}

/// The one rule for a missing prerequisite: the test fails, naming it. No
/// test skips itself (a skipped test would show as passed): the tests that
/// need root or a container are `#[ignore = "why"]`, listed as ignored by a
/// plain `cargo test` and run with `--include-ignored`, which is then a
/// promise that the prerequisites are there.
#[track_caller]
pub fn missing(why: &str) -> ! {
    panic!("missing prerequisite: {why} (.ci/run installs what the tests need)")
}

/// Whether `tool` is on PATH (see [`require_tool`] for a tool a test needs).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A tool the test needs: present, or the test fails naming it.
#[track_caller]
pub fn require_tool(tool: &str) {
    if !have(tool) {
        missing(&format!("{tool} not found"));
    }
}

/// Root, or the test fails saying what needs it (such tests are
/// `#[ignore]`d: see [`missing`]).
#[track_caller]
pub fn require_root(what: &str) {
    if !is_root() {
        missing(&format!("needs root: {what}"));
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The lock file that root's runs take for the app root `root`: root's
/// own, keyed by ROOT's device and inode (see src/lock.rs); an
/// unprivileged run takes `ROOT/.releasectl/lock`.
pub fn lock_path(root: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        return root.join(".releasectl/lock");
    }
    let st = std::fs::metadata(root).unwrap();
    PathBuf::from(format!(
        "/run/releasectl/locks/{}-{}.lock",
        st.dev(),
        st.ino()
    ))
}

/// One entry of a crafted tar archive.
pub enum TarEntry<'a> {
    File(&'a str, &'a str),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// Write a tar archive with python3's tarfile, which (unlike GNU tar) writes
/// names exactly as given: `../x`, `/abs`, entries below a symlink entry.
/// `gz` selects gzip compression.
pub fn make_tar(path: &Path, entries: &[TarEntry], gz: bool) {
    let spec: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| match e {
            TarEntry::File(n, c) => serde_json::json!({"name": n, "type": "file", "data": c}),
            TarEntry::Dir(n) => serde_json::json!({"name": n, "type": "dir"}),
            TarEntry::Symlink(n, t) => serde_json::json!({"name": n, "type": "sym", "data": t}),
            TarEntry::Hardlink(n, t) => serde_json::json!({"name": n, "type": "link", "data": t}),
        })
        .collect();
    make_tar_from(
        path,
        serde_json::Value::Array(spec),
        &TarOptions {
            gzip: gz,
            ..TarOptions::default()
        },
    );
}

/// How [`make_tar_from`] writes, besides the entries.
#[derive(Debug, Default, Clone, Copy)]
pub struct TarOptions<'a> {
    /// `"mid"` ends the archive inside the last entry's data, `"boundary"`
    /// right after it (no end-of-archive blocks).
    pub cut: Option<&'a str>,
    /// gzip the archive.
    pub gzip: bool,
    /// Keep only the first half of the (compressed) bytes.
    pub cut_stream: bool,
}

/// Write a crafted tar archive, entries exactly as given:
/// `{"name", "type": file|dir|sym|link|chr|fifo, "mode", "uid", "gid",
/// "data"}` (`data`: a file's content, a link's target). Entries with a
/// `uid` get the user name `root` (uid 0) or `evil`. What [`make_tar`]
/// writes, and what it cannot: device nodes, FIFOs, setid modes, foreign
/// owners, truncated archives.
pub fn make_tar_from(path: &Path, entries: serde_json::Value, opts: &TarOptions) {
    let script = r#"
import gzip, io, json, sys, tarfile
out, spec = sys.argv[1], json.loads(sys.argv[2])
types = {"dir": tarfile.DIRTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
         "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE}
modes = {"file": 0o644, "dir": 0o755, "sym": 0o777, "link": 0o777}
buf = io.BytesIO()
ends = []
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    for e in spec["entries"]:
        ti = tarfile.TarInfo(e["name"])
        ti.mtime = 1700000000
        kind = e["type"]
        ti.mode = e.get("mode", modes.get(kind, 0o644))
        if "uid" in e:
            ti.uid, ti.gid = e["uid"], e.get("gid", 0)
            ti.uname = ti.gname = "evil" if ti.uid else "root"
        if kind == "file":
            data = e.get("data", "").encode()
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        else:
            ti.type = types[kind]
            if kind == "chr":
                ti.devmajor, ti.devminor = 1, 3
            if kind in ("sym", "link"):
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
    let spec = serde_json::json!({
        "entries": entries,
        "cut": opts.cut,
        "gzip": opts.gzip,
        "cut_stream": opts.cut_stream,
    });
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

/// `zstd` the file at `tar` into `out`.
pub fn zstd(tar: &Path, out: &Path) {
    let status = Command::new("zstd")
        .args(["-q", "-f", "-o"])
        .arg(out)
        .arg(tar)
        .status()
        .expect("running zstd");
    assert!(status.success(), "zstd failed");
}

/// An OsString with raw bytes (for non-UTF-8 arguments).
pub fn os_bytes(b: &[u8]) -> OsString {
    OsStr::from_bytes(b).to_os_string()
}

/// Send `sig` to a child process by its pid.
pub fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("kill");
}

/// Wait (bounded) until `path` exists; false if it never appeared.
pub fn wait_for(path: &Path, max: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < max {
        if path.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    path.exists()
}
