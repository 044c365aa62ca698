//! Activation requests from deployers without root.
//!
//! A member of group `releasectl` puts a release id into `REQUESTS/APP`
//! (`releasectl request`, or any temp file + rename); `deploy-watch@APP.path`
//! notices and runs `releasectl activate --request APP` as root. The journal
//! is closed to the requester, so root also writes each request's outcome,
//! exit status included, to `RESULTS/APP`: a directory that only root may
//! write and group `releasectl` may read (`results` beside the requests
//! directory). `request --wait` finds its own outcome there.
//!
//! Nothing of root's goes into the requests directory: every member may
//! rename, replace or plant anything there. Root only reads from it, one
//! file opened without following symlinks and judged by what was opened.
//!
//! The request file: line 1 the release id; optionally line 2
//! `request=TOKEN`, a random token by which the requester recognises its
//! outcome. A request replaced before the watcher read it never runs; its
//! waiter learns that when an outcome appears for a file that replaced its
//! own (see [`wait`]).
//!
//! Outcomes are bound to their requester: `request` creates its file 0600
//! before the token is written, so no other member can read the token (root
//! still does); root records, with the outcome, the SHA-256 of the token,
//! never the token itself (results are readable by every member, and a
//! token seen there could be replayed under a request still pending), the
//! owner of the file it read (from the handle it read) and the release
//! named in it. `--wait` accepts an outcome only if all three match its
//! own request.

use crate::error::{usage, Error, Result};
use crate::fs::dir::{io_error, Access, Dir};
use crate::host::cancel::Cancel;
use crate::{log, release_id};
use anyhow::Context;
use rustix::fs::{FlockOperation, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const DEFAULT_REQUESTS_DIR: &str = "/var/lib/releasectl/requests";
/// Largest request file read (ours are under 100 bytes).
const MAX_REQUEST: u64 = 4096;
/// Outcomes kept per app: enough for every waiter of a burst of requests to
/// find its own before it is pushed out.
const KEEP: usize = 32;
/// Largest outcome file read back.
const MAX_RESULTS: u64 = 1 << 20;
/// How often a waiter looks at the outcomes.
const POLL: Duration = Duration::from_millis(100);

/// A request as root read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub release: String,
    pub token: Option<String>,
    /// The file read, to tell requests apart that name the same release.
    pub ino: u64,
    /// Who wrote it (the file's owner).
    pub uid: u32,
    /// When it was written (its mtime, in ns since the epoch).
    pub mtime_ns: u64,
}

/// Where outcomes go: the given directory, else `results` beside the
/// requests directory (`/var/lib/releasectl/results`).
pub fn results_dir(requests: &Path, given: Option<&Path>) -> PathBuf {
    match given {
        Some(dir) => dir.to_path_buf(),
        None => requests
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .join("results"),
    }
}

/// The app named by a watch unit's `%i`: systemd's `\xNN` escapes are
/// accepted as deploy@ does (watchers are meant to be enabled with the plain
/// name, though).
pub fn app_name(raw: &str) -> Result<String> {
    let unescaped = release_id::systemd_unescape(raw.as_bytes())?;
    let app = String::from_utf8(unescaped).map_err(|_| usage("app name: not valid UTF-8"))?;
    release_id::validate_app(&app)?;
    Ok(app)
}

/// Read `dir/APP`. Bad content, a symlink, a FIFO or a hard link is bad
/// input (exit 2); a file we may not read is the machine's (exit 1).
pub fn read(dir: &Path, app: &str) -> Result<Request> {
    let path = dir.join(app);
    let bad =
        |why: &dyn std::fmt::Display| usage(format!("request file {}: {why}", path.display()));
    // The writers are unprivileged and we run as root: open without
    // following a symlink (and without blocking on a fifo), then judge the
    // file we actually opened, so a swap after the check cannot make us
    // read, and log, a file they may not read themselves.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(&path)
        .map_err(|e| match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::LOOP) => bad(&"is a symlink"),
            Some(Errno::NOENT) | Some(Errno::NXIO) => bad(&e),
            _ => Error::op_ctx(e, format_args!("reading request file {}", path.display())),
        })?;
    let meta = file.metadata().map_err(|e| bad(&e))?;
    if !meta.is_file() || meta.len() > MAX_REQUEST || meta.nlink() != 1 {
        return Err(bad(
            &"must be a regular file of at most 4096 bytes with one link",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_REQUEST + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(&e))?;
    let (release, token) = parse(&bytes).map_err(|e| bad(&e))?;
    Ok(Request {
        release,
        token,
        ino: meta.ino(),
        uid: meta.uid(),
        mtime_ns: mtime_ns(&meta),
    })
}

/// The release id, and the token if there is one.
fn parse(bytes: &[u8]) -> std::result::Result<(String, Option<String>), String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text
        .trim_end_matches(['\n', '\r'])
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    let id = lines.next().unwrap_or_default();
    release_id::validate(id).map_err(|e| e.to_string())?;
    let token = match lines.next() {
        None => None,
        Some(line) => {
            let token = line
                .strip_prefix("request=")
                .filter(|t| valid_token(t))
                .ok_or("line 2 must be request=TOKEN (1-64 of [A-Za-z0-9_-])")?;
            Some(token.to_string())
        }
    };
    if lines.next().is_some() {
        return Err("more than two lines".into());
    }
    Ok((id.to_string(), token))
}

fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    (meta.mtime().max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec().max(0) as u64)
}

/// What the outcome records of a token: its SHA-256, in hex.
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn valid_token(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One request's outcome, as root records it and `request --wait` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Order of recording, per app.
    #[serde(default)]
    pub seq: u64,
    pub time: String,
    pub app: String,
    pub release: Option<String>,
    /// SHA-256 (hex) of the request's token: enough to recognise it, and
    /// useless to anyone who would submit another request under it.
    #[serde(default)]
    pub request_sha256: Option<String>,
    pub ino: Option<u64>,
    /// Owner of the request file read (fstat of the opened file).
    pub uid: Option<u32>,
    #[serde(default)]
    pub mtime_ns: Option<u64>,
    /// activated, already_active, invalid, failed, lock_busy, aborted,
    /// rolled_back, rollback_failed.
    pub outcome: String,
    pub exit_code: i32,
    pub message: String,
    pub previous: Option<String>,
}

impl Report {
    /// An outcome still to be filled in, for `request` (if it was read).
    pub fn new(app: &str, request: Option<&Request>) -> Report {
        Report {
            seq: 0,
            time: crate::clock::now_rfc3339(),
            app: app.to_string(),
            release: request.map(|r| r.release.clone()),
            request_sha256: request.and_then(|r| r.token.as_deref().map(token_digest)),
            ino: request.map(|r| r.ino),
            uid: request.map(|r| r.uid),
            mtime_ns: request.map(|r| r.mtime_ns),
            outcome: String::new(),
            exit_code: 0,
            message: String::new(),
            previous: None,
        }
    }

    pub fn succeeded(mut self, outcome: &str, previous: Option<String>, message: String) -> Report {
        self.outcome = outcome.to_string();
        self.previous = previous;
        self.message = message;
        self
    }

    pub fn failed(mut self, e: &Error) -> Report {
        use crate::error::{Kind, Undone};
        self.exit_code = e.exit_code();
        // The requester's names for the kinds (`request_outcome` in the
        // schema): 11 is a rollback to the release that was live; a kind
        // with no name of its own there (13, 14, 1) is "failed".
        self.outcome = match e.kind() {
            Kind::Usage => "invalid",
            Kind::LockBusy => "lock_busy",
            // Stopped before anything changed (a pre_activate hook, or a
            // signal while waiting for the lock): nothing was rolled back.
            Kind::ActivationFailed => match e.undone() {
                Some(Undone::NothingChanged) => "aborted",
                // The release was live already (forced): it still is.
                Some(Undone::StillLive) => "failed",
                _ => "rolled_back",
            },
            Kind::RollbackFailed => "rollback_failed",
            Kind::Operational | Kind::NeedsRecovery | Kind::VerifyFailed => "failed",
        }
        .to_string();
        self.message = e.one_line();
        self
    }
}

/// Where root keeps the lock that serialises writers of the results: a
/// directory only root may write, so nobody else can open the lock and
/// make root wait on it (a member may open, and flock, anything in the
/// results directory, which the group reads).
pub const RUN_DIR: &str = "/run/releasectl";
const RESULTS_LOCK: &str = "results.lock";
/// Bound on the wait for another writer of the results: each holds the
/// lock for one small read-modify-write, so this is only ever reached if
/// something is badly wrong; the outcome is then not recorded.
const RESULTS_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Root's side: add `report` to `dir/APP`. A failure is logged, never
/// fatal: the activation's own outcome stands either way. A signal during
/// the wait for the lock ends the wait (the caller checks `cancel`).
pub fn record(dir: &Path, report: Report, cancel: &Cancel) {
    if let Err(e) = try_record(dir, Path::new(RUN_DIR), report, cancel) {
        log::warn(&format!(
            "outcome not recorded for the requester: {}",
            e.one_line()
        ));
    }
}

fn try_record(path: &Path, run_dir: &Path, mut report: Report, cancel: &Cancel) -> Result<()> {
    let Some(dir) = Dir::open_path(path)? else {
        // No results directory (tmpfiles makes it): `request --wait`
        // refuses to wait without one, so nobody is waiting.
        log::debug(&format!(
            "{} does not exist; outcome not recorded",
            path.display()
        ));
        return Ok(());
    };
    // Only we may write here, or a writer could plant what we read back or
    // race our temp file; group `releasectl` only reads.
    let st = dir.stat_self()?;
    if st.st_uid != rustix::process::geteuid().as_raw() || st.st_mode & 0o022 != 0 {
        return Err(Error::operational(format_args!(
            "{} must belong to the user running releasectl and be writable by it alone (mode 0750 root:releasectl)",
            path.display()
        )));
    }
    // Two writers (the watch unit and a hand-run `activate --request`)
    // must not each drop the other's outcome.
    let _lock = lock_results(run_dir, cancel)?;
    let app = report.app.clone();
    let mut reports = match read_reports(&dir, &app) {
        Ok(r) => r,
        Err(e) => {
            log::warn(&format!("{}; starting it afresh", e.one_line()));
            Vec::new()
        }
    };
    report.seq = reports.iter().map(|r| r.seq).max().unwrap_or(0) + 1;
    reports.push(report);
    let drop = reports.len().saturating_sub(KEEP);
    reports.drain(..drop);
    let body = serde_json::to_vec_pretty(&reports).expect("reports serialize");
    // Temp file + rename: a waiter never reads a half-written file.
    let tmp = format!(".{app}.tmp");
    let mut f = dir.open_file(&tmp, Access::CreateNew)?.expect("created");
    let written = f
        .write_all(&body)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", dir.shown(&tmp).display()));
    if let Err(e) = written {
        let _ = dir.unlink(&tmp);
        return Err(e.into());
    }
    dir.rename(&tmp, &app)?;
    dir.sync()
}

/// Take root's lock on the results: `RUN_DIR/results.lock`, waiting at
/// most [`RESULTS_LOCK_WAIT`] and no longer than until a signal.
fn lock_results(run_dir: &Path, cancel: &Cancel) -> Result<std::fs::File> {
    let file = open_results_lock(run_dir)?;
    let shown = run_dir.join(RESULTS_LOCK);
    let deadline = Instant::now() + RESULTS_LOCK_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => {}
            Err(e) => return Err(io_error(e, format!("locking {}", shown.display()))),
        }
        if let Err(why) = cancel.check() {
            return Err(Error::operational(format_args!(
                "{why} while waiting for {}",
                shown.display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::LockBusy {
                lock: shown,
                holder: None,
                waited: RESULTS_LOCK_WAIT,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `RUN_DIR/results.lock`, created 0600 if missing, in `RUN_DIR`, created
/// 0755 if missing. Only root records outcomes: anyone else gets an error
/// here (the results directory is root's too, so there is nothing a
/// non-root caller could record). The directory must be root's and
/// writable by root alone, the lock a regular root-owned file only root
/// may open; no symlink is followed (the last component of `RUN_DIR`
/// included).
fn open_results_lock(run_dir: &Path) -> Result<std::fs::File> {
    use rustix::fs::{self as rfs, Mode};
    let shown = run_dir.join(RESULTS_LOCK);
    if !rustix::process::geteuid().is_root() {
        return Err(Error::operational(format_args!(
            "recording outcomes takes root's lock {}; run `activate --request` as root",
            shown.display()
        )));
    }
    let refuse = |what: &Path, why: &str| {
        Error::operational(format_args!("{} {why}; refusing to use it", what.display()))
    };
    let (Some(parent), Some(name)) = (run_dir.parent(), run_dir.file_name()) else {
        return Err(refuse(run_dir, "is not a directory below another"));
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let parent_fd = rfs::open(parent, dir_flags, Mode::empty())
        .map_err(|e| io_error(e, format!("opening {}", parent.display())))?;
    match rfs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_error(e, format!("creating {}", run_dir.display()))),
    }
    let dir = match rfs::openat(
        &parent_fd,
        name,
        dir_flags | OFlags::NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
            return Err(refuse(run_dir, "is not a directory (symlinks are refused)"))
        }
        Err(e) => return Err(io_error(e, format!("opening {}", run_dir.display()))),
    };
    let st = rfs::fstat(&dir).map_err(|e| io_error(e, format!("stat {}", run_dir.display())))?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(refuse(
            run_dir,
            "must be a directory owned by root that only root may write (0755 root:root)",
        ));
    }
    let flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rfs::openat(&dir, RESULTS_LOCK, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => fd,
        Err(Errno::LOOP) | Err(Errno::NXIO) => {
            return Err(refuse(
                &shown,
                "is not a regular file (symlinks are refused)",
            ))
        }
        Err(e) => return Err(io_error(e, format!("opening {}", shown.display()))),
    };
    let st = rfs::fstat(&fd).map_err(|e| io_error(e, format!("stat {}", shown.display())))?;
    let regular = rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile;
    if !regular || st.st_nlink != 1 || st.st_uid != 0 || st.st_mode & 0o077 != 0 {
        return Err(refuse(
            &shown,
            "must be a regular file with one link, owned by root, mode 0600",
        ));
    }
    Ok(std::fs::File::from(fd))
}

/// The outcomes recorded for `app`, oldest first.
fn read_reports(dir: &Dir, app: &str) -> Result<Vec<Report>> {
    let Some(f) = dir.open_file(app, Access::Read)? else {
        return Ok(Vec::new());
    };
    let shown = dir.shown(app);
    let mut bytes = Vec::new();
    f.take(MAX_RESULTS + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", shown.display()))?;
    if bytes.len() as u64 > MAX_RESULTS {
        return Err(Error::operational(format_args!(
            "{} is larger than {MAX_RESULTS} bytes",
            shown.display()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::operational(format_args!("{} is corrupt: {e}", shown.display())))
}

/// The results directory, opened: a waiter needs it before it writes its
/// request, or it would wait for an outcome nobody records.
pub fn open_results(path: &Path) -> Result<Dir> {
    Dir::open_path(path)?.ok_or_else(|| {
        Error::operational(format_args!(
            "{} does not exist, so no outcome would be recorded (systemd-tmpfiles --create releasectl.conf makes it)",
            path.display()
        ))
    })
}

/// A request written by [`submit`].
pub struct Submitted {
    pub app: String,
    pub release: String,
    pub token: String,
    pub path: PathBuf,
    ino: u64,
    /// Our file's owner, as root will see it.
    uid: u32,
    /// The requests directory's mtime right after our rename: a request
    /// file written later than this was put in place after ours.
    placed_ns: u64,
    /// Kept open while waiting: its inode number cannot be reused by
    /// another request meanwhile.
    _file: std::fs::File,
}

/// The requester's side: write `requests/APP` atomically (a new temp file
/// with a random name in the same directory, fsync, rename, fsync of the
/// directory), so the watcher never reads half a request.
pub fn submit(requests: &Path, app: &str, release: &str) -> Result<Submitted> {
    let io = |e: std::io::Error, what: String| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (members of group releasectl may write requests)"
        } else {
            ""
        };
        Error::op_ctx(e, format_args!("{what}{hint}"))
    };
    let token = new_token().map_err(|e| io(e, "reading /dev/urandom".into()))?;
    let path = requests.join(app);
    let creating = || format!("creating a request file in {}", requests.display());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{app}."))
        .suffix(".tmp")
        .tempfile_in(requests)
        .map_err(|e| io(e, creating()))?;
    let shown = tmp.path().to_path_buf();
    let writing = || format!("writing {}", shown.display());
    // The token is a secret: tempfile creates the file new (O_EXCL) with
    // mode 0600, and it stays so before and after the token is in it, so
    // no other member ever reads it (root does: CAP_DAC_OVERRIDE). Checked,
    // not assumed, since the whole binding rests on it.
    let meta = tmp.as_file().metadata().map_err(|e| io(e, writing()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::operational(format_args!(
            "{} was created readable by others (mode {:o}); not writing a token into it",
            shown.display(),
            meta.permissions().mode() & 0o7777
        )));
    }
    let mut f = tmp.as_file();
    f.write_all(format!("{release}\nrequest={token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io(e, writing()))?;
    let (ino, uid) = (meta.ino(), meta.uid());
    // Kept while waiting is a read-only handle on the same inode (reopened
    // through our own fd: the temp name is the group's to rename). The
    // write handle is closed before the rename: the path unit watches
    // PathChanged=, which a close after writing fires, and a write handle
    // closed at exit would start the watcher a second time for one request.
    let file = std::fs::File::open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(tmp.as_file())
    ))
    .map_err(|e| io(e, writing()))?;
    tmp.into_temp_path().persist(&path).map_err(|e| {
        io(
            e.error,
            format!("renaming the request to {}", path.display()),
        )
    })?;
    let dir = std::fs::File::open(requests)
        .and_then(|d| d.sync_all().map(|()| d))
        .map_err(|e| io(e, format!("fsync {}", requests.display())))?;
    let placed_ns = dir
        .metadata()
        .map_err(|e| io(e, format!("stat {}", requests.display())))?;
    Ok(Submitted {
        app: app.to_string(),
        release: release.to_string(),
        token,
        path,
        ino,
        uid,
        placed_ns: mtime_ns(&placed_ns),
        _file: file,
    })
}

fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Wait for the outcome of `sub`, polling `results`.
///
/// Superseded: the watcher reads the request file again after each
/// activation and records outcomes in the order it read the files. So once
/// an outcome is recorded, without ours before it, for a file that was
/// read after ours was in place, ours was replaced unread and never will be
/// read. Such a file is one written after ours was renamed in (its mtime,
/// on the same kernel clock as the directory's), or one we saw in place of
/// ours (by inode) before its outcome was recorded.
pub fn wait(sub: &Submitted, results: &Dir, timeout: Duration) -> Result<Report> {
    let deadline = Instant::now() + timeout;
    // Inodes seen in place of ours → the newest seq recorded when first seen.
    let mut later: HashMap<u64, u64> = HashMap::new();
    let digest = token_digest(&sub.token);
    // An outcome with our token's digest that is not ours in uid or
    // release: someone submitted under our token. Never reported as ours.
    let mut impostor: Option<String> = None;
    loop {
        let in_place = std::fs::symlink_metadata(&sub.path).ok().map(|m| m.ino());
        let reports = read_reports(results, &sub.app)?;
        let mut with_token = reports
            .iter()
            .filter(|r| r.request_sha256.as_deref() == Some(digest.as_str()));
        if let Some(r) = with_token.clone().find(|r| is_ours(sub, r)) {
            return Ok(r.clone());
        }
        if let Some(r) = with_token.next() {
            impostor.get_or_insert_with(|| {
                format!(
                    "; ignored an outcome under this request's token for {} requested by uid {}",
                    r.release.as_deref().unwrap_or("an unreadable request"),
                    r.uid.map_or("unknown".into(), |u| u.to_string())
                )
            });
        }
        let superseding = reports.iter().rev().find(|r| {
            let seen_in_place = r
                .ino
                .and_then(|ino| later.get(&ino))
                .is_some_and(|&seen| r.seq > seen);
            seen_in_place || r.mtime_ns.is_some_and(|t| t > sub.placed_ns)
        });
        if let Some(r) = superseding {
            return Err(Error::operational(format_args!(
                "{}: the request for {} was replaced by a newer one before it was read, and was never acted on (the newer one, {}: {}){}",
                sub.app,
                sub.release,
                r.release.as_deref().unwrap_or("unreadable"),
                r.outcome,
                impostor.as_deref().unwrap_or("")
            )));
        }
        if let Some(ino) = in_place.filter(|&ino| ino != sub.ino) {
            let newest = reports.iter().map(|r| r.seq).max().unwrap_or(0);
            later.entry(ino).or_insert(newest);
        }
        if Instant::now() >= deadline {
            return Err(Error::operational(format_args!(
                "{}: no outcome for the request of {} within {} s; is the watcher running? (systemctl status deploy-watch@{}.path){}",
                sub.app,
                sub.release,
                timeout.as_secs(),
                sub.app,
                impostor.as_deref().unwrap_or("")
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// An outcome is ours when root read our file: our token (checked by the
/// caller), our uid as the file's owner, our release in it.
fn is_ours(sub: &Submitted, r: &Report) -> bool {
    r.uid == Some(sub.uid) && r.release.as_deref() == Some(sub.release.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory of the test's own beside `dir` (not /run/releasectl,
    /// which other tests may be using).
    fn run_dir(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().with_extension("run")
    }

    #[test]
    fn request_files_hold_an_id_and_maybe_a_token() {
        let ok = |s: &str| parse(s.as_bytes()).unwrap();
        assert_eq!(ok("v2"), ("v2".into(), None));
        assert_eq!(ok("v2\r\n"), ("v2".into(), None));
        assert_eq!(
            ok("v2\nrequest=ab-9_Z\n"),
            ("v2".into(), Some("ab-9_Z".into()))
        );
        for bad in [
            "",
            "\n",
            "../v2",
            "v2\nv1\n",
            "v2\nrequest=\n",
            "v2\nrequest=a b\n",
            "v2\nrequest=a\nx\n",
            "web:v2",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(!valid_token(&"a".repeat(65)));
    }

    #[test]
    fn results_go_beside_the_requests() {
        let r = results_dir(Path::new("/var/lib/releasectl/requests/"), None);
        assert_eq!(r, Path::new("/var/lib/releasectl/results"));
        let given = results_dir(Path::new("/x/requests"), Some(Path::new("/y")));
        assert_eq!(given, Path::new("/y"));
    }

    #[test]
    fn outcomes_are_kept_in_order_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..(KEEP + 3) {
            let mut r = Report::new("web", None).succeeded("activated", None, format!("n{n}"));
            r.release = Some(format!("v{n}"));
            try_record(dir.path(), &run_dir(&dir), r, &Cancel::never()).unwrap();
        }
        let reports = read_reports(&open_results(dir.path()).unwrap(), "web").unwrap();
        assert_eq!(reports.len(), KEEP);
        assert_eq!(reports.last().unwrap().seq, (KEEP + 3) as u64);
        assert_eq!(reports.last().unwrap().message, format!("n{}", KEEP + 2));
        assert!(reports.windows(2).all(|w| w[0].seq < w[1].seq));
        // No temp file is left.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["web"]);
    }

    #[test]
    fn a_results_dir_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        let run = run_dir(&dir);
        let e =
            try_record(dir.path(), &run, Report::new("web", None), &Cancel::never()).unwrap_err();
        assert!(
            e.one_line().contains("writable by it alone"),
            "{}",
            e.one_line()
        );
        assert!(!dir.path().join("web").exists());
    }

    #[test]
    fn failures_keep_their_exit_status() {
        use crate::error::Undone;
        for (undone, outcome) in [
            (Undone::NothingChanged, "aborted"),
            (Undone::RolledBack, "rolled_back"),
            (
                Undone::RolledBackUnrecorded("disk full".into()),
                "rolled_back",
            ),
            (Undone::StillLive, "failed"),
        ] {
            let r = Report::new("web", None).failed(&Error::ActivationFailed {
                switch: None,
                reason: "x".into(),
                undone,
            });
            assert_eq!((r.outcome.as_str(), r.exit_code), (outcome, 11));
        }
        let r = Report::new("web", None).failed(&usage("bad"));
        assert_eq!((r.outcome.as_str(), r.exit_code), ("invalid", 2));
    }

    #[test]
    fn results_never_hold_the_token() {
        let req = Request {
            release: "v2".into(),
            token: Some("s3cret".into()),
            ino: 1,
            uid: 1000,
            mtime_ns: 0,
        };
        let r = Report::new("web", Some(&req));
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(r.request_sha256, Some(token_digest("s3cret")));
        assert_eq!(r.uid, Some(1000));
        assert_eq!(token_digest("s3cret").len(), 64);
    }

    #[test]
    fn the_results_lock_is_roots_alone() {
        if !rustix::process::geteuid().is_root() {
            // Only root records; non-root callers are refused (see below).
            let dir = tempfile::tempdir().unwrap();
            let e = open_results_lock(&dir.path().join("run")).unwrap_err();
            assert!(e.one_line().contains("root"), "{}", e.one_line());
            return;
        }
        let base = tempfile::tempdir().unwrap();
        // Missing: created 0755, the lock 0600.
        let run = base.path().join("run");
        open_results_lock(&run).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&run), 0o755 & !current_umask());
        assert_eq!(mode(&run.join(RESULTS_LOCK)), 0o600);
        // A directory others may write, one owned by someone else, a
        // symlink to a good directory, a symlinked lock: refused.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = open_results_lock(&run).unwrap_err();
        assert!(
            e.one_line().contains("only root may write"),
            "{}",
            e.one_line()
        );
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&run, Some(65534), None).unwrap();
        assert!(open_results_lock(&run).is_err());
        std::os::unix::fs::chown(&run, Some(0), None).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&run, &link).unwrap();
        let e = open_results_lock(&link).unwrap_err();
        assert!(
            e.one_line().contains("symlinks are refused"),
            "{}",
            e.one_line()
        );
        std::fs::remove_file(run.join(RESULTS_LOCK)).unwrap();
        std::os::unix::fs::symlink(base.path().join("elsewhere"), run.join(RESULTS_LOCK)).unwrap();
        let e = open_results_lock(&run).unwrap_err();
        assert!(
            e.one_line().contains("symlinks are refused"),
            "{}",
            e.one_line()
        );
        assert!(!base.path().join("elsewhere").exists());
    }

    fn current_umask() -> u32 {
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        rustix::process::umask(old);
        old.bits()
    }

    #[test]
    fn a_signal_ends_the_wait_for_the_results_lock() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let run = base.path().join("run");
        let held = open_results_lock(&run).unwrap();
        rustix::fs::flock(&held, FlockOperation::LockExclusive).unwrap();
        let cancel = Cancel::never();
        cancel.trigger();
        let started = Instant::now();
        let e = lock_results(&run, &cancel).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(e.one_line().contains("SIGTERM"), "{}", e.one_line());
    }
}
