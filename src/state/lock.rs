//! The per-app activation lock.
//!
//! flock(2) belongs to the open file description, so the kernel drops it when
//! the holder dies, however it dies: there are no stale locks and no PID files
//! to second-guess. The file's content only names the holder for humans.
//!
//! A lock is only worth as much as who can open its file: any user who can
//! open it can `flock` it and stop every activation. So root's lock lives
//! where only root can open it, `/run/releasectl/locks/DEV-INO.lock` (0600
//! in a 0700 directory), keyed by ROOT's device and inode: renaming
//! `.releasectl/` cannot split it, and no other user can hold it. When ROOT
//! belongs to another user (the single-account layout), root also takes
//! that user's own lock, `.releasectl/lock` (0600, theirs), so root's runs
//! and the user's own runs (a `prune` from their crontab) still exclude
//! each other; only that user (and root) can open it. An unprivileged run
//! takes just `.releasectl/lock`. Every wait is bounded and ends on
//! SIGINT/SIGTERM (see [`crate::host::cancel`]). A lock taken for what may be a
//! read-only decision ([`acquire_quiet`]) writes its holder into
//! `.releasectl/lock` only when it is announced, so a run that changes
//! nothing leaves ROOT untouched.
//!
//! Who holds root's lock is published for everyone else in
//! `/run/releasectl/holders/DEV-INO.json` (root's, 0644): it is only read,
//! never locked, and a holder whose process is gone is ignored.

use crate::error::{Error, Result};
use crate::fs::creds;
use crate::fs::dir::{Access, Dir};
use crate::fs::root::RootDir;
use crate::host::cancel::Cancel;
use anyhow::Context;
use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const LOCK_FILE: &str = "lock";

/// Who holds the lock, as written into the lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub release: String,
    pub since: String,
}

impl Holder {
    /// This process, taking the lock for `what` (a release id, or
    /// "(prune)", "(recover)").
    pub fn me(what: impl Into<String>) -> Holder {
        Holder {
            pid: std::process::id(),
            release: what.into(),
            since: crate::clock::now_rfc3339(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} activating {} since {}",
            self.pid, self.release, self.since
        )
    }
}

/// A held lock; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct Lock {
    _files: Vec<File>,
    /// The lock files under ROOT not yet told who holds them, and the line
    /// to tell them (see [`acquire_quiet`]).
    untold: Vec<File>,
    line: String,
    /// The published holder file, removed when the lock is released.
    holder: Option<(Dir, String)>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some((dir, name)) = &self.holder {
            let _ = dir.unlink(name);
        }
    }
}

/// One lock file to take, and its path for messages.
struct Place {
    file: File,
    shown: PathBuf,
    /// `.releasectl/lock`, under ROOT (root's own lives in `/run`).
    in_root: bool,
}

/// Take the app's lock, waiting up to `timeout`. `state_dir` is the app's
/// `.releasectl` directory handle.
pub fn acquire(
    root: &RootDir,
    state_dir: &Dir,
    me: &Holder,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Lock> {
    let mut lock = acquire_quiet(root, state_dir, me, timeout, cancel)?;
    lock.announce()?;
    Ok(lock)
}

/// [`acquire`], but the lock files under ROOT are not told who holds them
/// until [`Lock::announce`]: a run that finds nothing to do under the lock
/// (an activation of the release already active) leaves ROOT untouched,
/// not even the lock file's modification time. Until then a user's own
/// run waiting on `.releasectl/lock` names the previous holder; root's
/// runs wait on root's own lock, which is told at once.
pub fn acquire_quiet(
    root: &RootDir,
    state_dir: &Dir,
    me: &Holder,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Lock> {
    let mut places = places(root, Some(state_dir), true)?;
    // Timeouts are bounded at load; saturate anyway rather than panic.
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
    for place in &mut places {
        wait_for(place, timeout, deadline, cancel)?;
    }
    // We own the lock: record who we are for anyone who finds it busy.
    let line = serde_json::to_string(me).expect("holder serializes") + "\n";
    let (untold, mut told): (Vec<Place>, Vec<Place>) = places.into_iter().partition(|p| p.in_root);
    for place in &mut told {
        write_holder(&mut place.file, &line)?;
    }
    let holder = if creds::is_root() {
        publish_holder(root, &line)
    } else {
        None
    };
    Ok(Lock {
        _files: told.into_iter().map(|p| p.file).collect(),
        untold: untold.into_iter().map(|p| p.file).collect(),
        line,
        holder,
    })
}

impl Lock {
    /// Write who holds the lock into the lock files under ROOT, before
    /// anything is changed under it (once; later calls do nothing more).
    pub fn announce(&mut self) -> Result<()> {
        for file in &mut self.untold {
            write_holder(file, &self.line)?;
        }
        self._files.append(&mut self.untold);
        Ok(())
    }
}

fn wait_for(
    place: &mut Place,
    timeout: Duration,
    deadline: Instant,
    cancel: &Cancel,
) -> Result<()> {
    let mut pause = Duration::from_millis(1);
    // Say once who we are waiting for, so a deploy that seems stuck says why.
    let mut told = false;
    let started = Instant::now();
    loop {
        match flock(&place.file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => {}
            Err(e) => return Err(Error::op_ctx(e, "flock")),
        }
        if let Err(why) = cancel.check() {
            return Err(Error::ActivationFailed {
                switch: None,
                reason: format!("{why} while waiting for the lock"),
                undone: crate::error::Undone::NothingChanged,
            });
        }
        if !told && started.elapsed() >= Duration::from_secs(1) && Instant::now() < deadline {
            told = true;
            let holder = read_holder_from(&mut place.file)
                .map_or_else(|| "an unknown holder".to_string(), |h| h.to_string());
            crate::log::info(&format!(
                "waiting for the lock held by {holder} (up to {}s)",
                timeout.as_secs()
            ));
        }
        if Instant::now() >= deadline {
            let holder = read_holder_from(&mut place.file)
                .map_or_else(|| "an unknown holder".to_string(), |h| h.to_string());
            return Err(Error::LockBusy {
                lock: place.shown.clone(),
                holder: Some(holder),
                waited: timeout,
            });
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Overwrite, then cut to length: truncating to zero first would make
/// ext4 (auto_da_alloc) flush the file on close, a disk write per activation.
fn write_holder(file: &mut File, line: &str) -> Result<()> {
    file.rewind().context("rewinding lock file")?;
    file.write_all(line.as_bytes())
        .context("writing lock holder")?;
    file.set_len(line.len() as u64)
        .context("truncating lock file")?;
    Ok(())
}

/// Whether this process could take the app's lock, found out without
/// taking it or creating anything (for `prune --dry-run`, which must not
/// promise what the real run is then refused). Root always can: its lock
/// lives in `/run/releasectl`. Anyone else opens `.releasectl/lock` for
/// writing, creating it (and `.releasectl/`) if missing: a member in root's
/// layout cannot. `Err` is the one line saying why not.
pub fn check_can_take(root: &RootDir, state_dir: Option<&Dir>) -> Result<()> {
    use std::os::fd::AsFd;
    if creds::is_root() {
        return Ok(());
    }
    // What the real run writes: the lock file, or the directory it (or
    // `.releasectl/` itself) would be created in.
    let (dir, name, shown) = match state_dir {
        Some(state) if state.stat(LOCK_FILE)?.is_some() => {
            (state.as_fd(), LOCK_FILE, state.shown(LOCK_FILE))
        }
        Some(state) => (state.as_fd(), ".", state.shown(LOCK_FILE)),
        None => (
            root.dir().as_fd(),
            ".",
            root.dir().shown(crate::fs::root::STATE_DIR).join(LOCK_FILE),
        ),
    };
    rustix::fs::accessat(
        dir,
        name,
        rustix::fs::Access::WRITE_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .map_err(|e| {
        Error::operational(format_args!(
            "cannot take the lock {}: {} (the lock is root's: run it as root)",
            shown.display(),
            std::io::Error::from(e)
        ))
    })
}

/// The current holder, if the lock is held right now (for `status`).
pub fn current_holder(root: &RootDir, state_dir: Option<&Dir>) -> Result<Option<Holder>> {
    match while_idle(root, state_dir, || Ok(()))? {
        Ok(()) => Ok(None),
        Err(holder) => Ok(holder),
    }
}

/// Whether an activation is running right now, decided under a shared
/// lock held while `f` runs: with the lock free, no activation can start
/// until `f` returns, so what `f` reads (the intent record) is not in
/// flight. `Err(holder)` when the lock is held. A user who can open no
/// lock file of this app (a member, in root's layout) goes by the
/// published holder instead, which cannot keep an activation from
/// starting meanwhile: good enough for a report, never for a decision.
pub fn while_idle<T>(
    root: &RootDir,
    state_dir: Option<&Dir>,
    f: impl FnOnce() -> Result<T>,
) -> Result<std::result::Result<T, Option<Holder>>> {
    let mut held = Vec::new();
    for mut place in places(root, state_dir, false)? {
        match flock(&place.file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => held.push(place.file),
            Err(Errno::WOULDBLOCK) => return Ok(Err(read_holder_from(&mut place.file))),
            Err(e) => return Err(Error::op_ctx(e, "flock")),
        }
    }
    if !creds::is_root() {
        if let Some(h) = published_holder(root) {
            return Ok(Err(Some(h)));
        }
    }
    let out = f();
    drop(held);
    out.map(Ok)
}

/// The lock files of this app that this process takes (`create`) or can
/// look at: root's private one, and the owner's `.releasectl/lock`.
fn places(root: &RootDir, state_dir: Option<&Dir>, create: bool) -> Result<Vec<Place>> {
    let mut out = Vec::new();
    let root_run = creds::is_root();
    if root_run {
        if let Some(p) = private_lock(root, create)? {
            out.push(p);
        }
    }
    // The owner's own lock: taken by the owner's runs, and by root's over
    // an app root another user owns (never in root's own layout, where it
    // would be a file others might open).
    let owners = !root_run || root.dir().act().is_some();
    if let (true, Some(state)) = (owners, state_dir) {
        match open_lock(state, create) {
            Ok(Some(file)) => out.push(Place {
                file,
                shown: state.shown(LOCK_FILE),
                in_root: true,
            }),
            Ok(None) => {}
            // Someone else's lock we may not open: a read-only view goes
            // by the published holder; a run that needs it fails here.
            Err(e) if !create && is_permission(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn is_permission(e: &Error) -> bool {
    e.one_line().contains("Permission denied")
}

/// ROOT's key in `/run/releasectl/`: its device and inode, which no rename
/// of anything inside ROOT can change.
pub(crate) fn key(root: &RootDir) -> Result<String> {
    let st = root.dir().stat_self()?;
    Ok(format!("{}-{}", st.st_dev, st.st_ino))
}

/// `/run/releasectl/NAME`, created as root's (mode `mode`) if missing and
/// `create`; refused unless it is a directory of root's that nobody else
/// may write in (or, with `private`, enter).
pub(crate) fn run_subdir(name: &str, mode: u32, create: bool) -> Result<Option<Dir>> {
    let Some(run) = Dir::open_path(Path::new("/run"))? else {
        return Ok(None);
    };
    let base = if create {
        run.open_or_create_dir("releasectl", 0o755)?
    } else {
        match run.open_dir("releasectl")? {
            Some(d) => d,
            None => return Ok(None),
        }
    };
    check_private(&base, 0o022)?;
    let dir = if create {
        base.open_or_create_dir(name, mode)?
    } else {
        match base.open_dir(name)? {
            Some(d) => d,
            None => return Ok(None),
        }
    };
    check_private(&dir, !mode & 0o777)?;
    Ok(Some(dir))
}

fn check_private(dir: &Dir, forbidden: u32) -> Result<()> {
    let st = dir.stat_self()?;
    if st.st_uid != 0 || st.st_mode & forbidden != 0 {
        return Err(Error::operational(format_args!(
            "{} must be a directory of root's with mode {:o} at most (it is uid {}, mode {:o}); \
             remove it and retry",
            dir.shown("").display(),
            0o777 & !forbidden,
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// Root's lock for ROOT: `/run/releasectl/locks/DEV-INO.lock`, 0600.
fn private_lock(root: &RootDir, create: bool) -> Result<Option<Place>> {
    let Some(dir) = run_subdir("locks", 0o700, create)? else {
        return Ok(None);
    };
    let name = format!("{}.lock", key(root)?);
    let how = if create {
        Access::ReadWrite
    } else {
        Access::Read
    };
    let Some(file) = dir.open_file(&name, how)? else {
        return Ok(None);
    };
    make_private(&file, &dir.shown(&name))?;
    Ok(Some(Place {
        file,
        shown: dir.shown(&name),
        in_root: false,
    }))
}

/// Lock files are created 0644 by older releases: nobody but their owner
/// may open them now.
fn make_private(file: &File, shown: &Path) -> Result<()> {
    let st = rustix::fs::fstat(file)
        .map_err(|e| crate::fs::dir::io_error(e, format!("stat {}", shown.display())))?;
    if st.st_mode & 0o077 != 0 {
        rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(0o600))
            .map_err(|e| crate::fs::dir::io_error(e, format!("chmod {}", shown.display())))?;
    }
    Ok(())
}

/// Publish who holds root's lock (a failure only costs the report).
fn publish_holder(root: &RootDir, line: &str) -> Option<(Dir, String)> {
    let dir = run_subdir("holders", 0o755, true).ok()??;
    let name = format!("{}.json", key(root).ok()?);
    let tmp = format!(".{name}.{}", std::process::id());
    let mut f = dir.open_file(&tmp, Access::CreateNew).ok()??;
    if f.write_all(line.as_bytes()).is_err() || dir.rename(&tmp, &name).is_err() {
        let _ = dir.unlink(&tmp);
        return None;
    }
    Some((dir, name))
}

/// The published holder of root's lock, if its process still runs.
fn published_holder(root: &RootDir) -> Option<Holder> {
    let dir = run_subdir("holders", 0o755, false).ok()??;
    let mut f = dir
        .open_file(&format!("{}.json", key(root).ok()?), Access::Read)
        .ok()??;
    let holder = read_holder_from(&mut f)?;
    // Left by a run that was killed: its pid is gone, or (reused) belongs
    // to a process that is not releasectl.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", holder.pid)).ok()?;
    (comm.trim_end() == "releasectl").then_some(holder)
}

/// The owner's lock file is a state file like the others: no symlink, no
/// FIFO, no second link (see [`Dir::open_file`]), and nobody else's to open.
fn open_lock(state_dir: &Dir, create: bool) -> Result<Option<File>> {
    let how = if create {
        Access::ReadWrite
    } else {
        Access::Read
    };
    let file = state_dir.open_file(LOCK_FILE, how)?;
    if let (Some(f), true) = (&file, create) {
        state_dir.as_owner(|| make_private(f, &state_dir.shown(LOCK_FILE)))?;
    }
    Ok(file)
}

/// The holder named in the file, if it reads as one. The file is writable
/// by ROOT's owner: read at most 4 KiB, and validate what it says.
fn read_holder_from(file: &mut File) -> Option<Holder> {
    let mut bytes = Vec::new();
    file.rewind().ok()?;
    file.take(4096).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let holder: Holder = serde_json::from_str(text.lines().next()?).ok()?;
    let known = ["(prune)", "(recover)"].contains(&holder.release.as_str())
        || crate::release_id::validate(&holder.release).is_ok();
    (known && holder.since.len() <= 64).then_some(holder)
}
