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

use crate::error::{usage, Error, Result};
use crate::root::{io_error, Access, Dir};
use crate::{log, release_id};
use anyhow::Context;
use rustix::fs::{FlockOperation, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
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
            _ => Error::Operational(
                anyhow::Error::from(e).context(format!("reading request file {}", path.display())),
            ),
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
    pub request: Option<String>,
    pub ino: Option<u64>,
    pub uid: Option<u32>,
    #[serde(default)]
    pub mtime_ns: Option<u64>,
    /// activated, already_active, invalid, failed, lock_busy, rolled_back,
    /// rollback_failed.
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
            request: request.and_then(|r| r.token.clone()),
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
        use crate::error::exit;
        self.exit_code = e.exit_code();
        self.outcome = match self.exit_code {
            exit::USAGE => "invalid",
            exit::LOCK_BUSY => "lock_busy",
            exit::ACTIVATION_FAILED => "rolled_back",
            exit::ROLLBACK_FAILED => "rollback_failed",
            _ => "failed",
        }
        .to_string();
        self.message = e.one_line();
        self
    }
}

/// Root's side: add `report` to `dir/APP`. A failure is logged, never
/// fatal: the activation's own outcome stands either way.
pub fn record(dir: &Path, report: Report) {
    if let Err(e) = try_record(dir, report) {
        log::warn(&format!(
            "outcome not recorded for the requester: {}",
            e.one_line()
        ));
    }
}

fn try_record(path: &Path, mut report: Report) -> Result<()> {
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
        return Err(Error::Operational(anyhow::anyhow!(
            "{} must belong to the user running releasectl and be writable by it alone (mode 0750 root:releasectl)",
            path.display()
        )));
    }
    // Two writers (the watch unit and a hand-run `activate --request`)
    // must not each drop the other's outcome.
    rustix::fs::flock(&dir, FlockOperation::LockExclusive)
        .map_err(|e| io_error(e, format!("locking {}", path.display())))?;
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
        return Err(Error::Operational(anyhow::anyhow!(
            "{} is larger than {MAX_RESULTS} bytes",
            shown.display()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Operational(anyhow::anyhow!("{} is corrupt: {e}", shown.display())))
}

/// The results directory, opened: a waiter needs it before it writes its
/// request, or it would wait for an outcome nobody records.
pub fn open_results(path: &Path) -> Result<Dir> {
    Dir::open_path(path)?.ok_or_else(|| {
        Error::Operational(anyhow::anyhow!(
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
        Error::Operational(anyhow::Error::from(e).context(format!("{what}{hint}")))
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
    // Readable like a request written with `echo > tmp && mv`.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io(e, writing()))?;
    let mut f = tmp.as_file();
    f.write_all(format!("{release}\nrequest={token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io(e, writing()))?;
    let ino = tmp
        .as_file()
        .metadata()
        .map_err(|e| io(e, writing()))?
        .ino();
    let file = tmp.persist(&path).map_err(|e| {
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
    loop {
        let in_place = std::fs::symlink_metadata(&sub.path).ok().map(|m| m.ino());
        let reports = read_reports(results, &sub.app)?;
        if let Some(r) = reports
            .iter()
            .rev()
            .find(|r| r.request.as_deref() == Some(sub.token.as_str()))
        {
            return Ok(r.clone());
        }
        let superseding = reports.iter().rev().find(|r| {
            let seen_in_place = r
                .ino
                .and_then(|ino| later.get(&ino))
                .is_some_and(|&seen| r.seq > seen);
            seen_in_place || r.mtime_ns.is_some_and(|t| t > sub.placed_ns)
        });
        if let Some(r) = superseding {
            return Err(Error::Operational(anyhow::anyhow!(
                "{}: the request for {} was replaced by a newer one before it was read, and was never acted on (the newer one, {}: {})",
                sub.app,
                sub.release,
                r.release.as_deref().unwrap_or("unreadable"),
                r.outcome
            )));
        }
        if let Some(ino) = in_place.filter(|&ino| ino != sub.ino) {
            let newest = reports.iter().map(|r| r.seq).max().unwrap_or(0);
            later.entry(ino).or_insert(newest);
        }
        if Instant::now() >= deadline {
            return Err(Error::Operational(anyhow::anyhow!(
                "{}: no outcome for the request of {} within {} s; is the watcher running? (systemctl status deploy-watch@{}.path)",
                sub.app,
                sub.release,
                timeout.as_secs(),
                sub.app
            )));
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            try_record(dir.path(), r).unwrap();
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
        let e = try_record(dir.path(), Report::new("web", None)).unwrap_err();
        assert!(
            e.one_line().contains("writable by it alone"),
            "{}",
            e.one_line()
        );
        assert!(!dir.path().join("web").exists());
    }

    #[test]
    fn failures_keep_their_exit_status() {
        let r = Report::new("web", None).failed(&Error::ActivationFailed("x".into()));
        assert_eq!((r.outcome.as_str(), r.exit_code), ("rolled_back", 11));
        let r = Report::new("web", None).failed(&usage("bad"));
        assert_eq!((r.outcome.as_str(), r.exit_code), ("invalid", 2));
    }
}
