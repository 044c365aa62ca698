//! The per-app activation lock: `flock(LOCK_EX)` on `.releasectl/lock`.
//!
//! flock(2) belongs to the open file description, so the kernel drops it when
//! the holder dies, however it dies: there are no stale locks and no PID files
//! to second-guess. The file's content only names the holder for humans.

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::root::{Access, Dir};
use anyhow::Context;
use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, Write};
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
    _file: File,
}

/// Take the lock, waiting up to `timeout`. `state_dir` is the app's
/// `.releasectl` directory handle.
pub fn acquire(state_dir: &Dir, me: &Holder, timeout: Duration, cancel: &Cancel) -> Result<Lock> {
    let mut file = open_lock(state_dir, true)?.expect("created");
    // Timeouts are bounded at load; saturate anyway rather than panic.
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
    let mut pause = Duration::from_millis(1);
    // Say once who we are waiting for, so a deploy that seems stuck says why.
    let mut told = false;
    let started = Instant::now();
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => {}
            Err(e) => return Err(anyhow::Error::from(e).context("flock").into()),
        }
        if let Err(why) = cancel.check() {
            return Err(Error::ActivationFailed(format!(
                "{why} while waiting for the lock; nothing changed"
            )));
        }
        if !told && started.elapsed() >= Duration::from_secs(1) && Instant::now() < deadline {
            told = true;
            let holder = read_holder_from(&mut file)
                .map_or_else(|| "an unknown holder".to_string(), |h| h.to_string());
            crate::log::info(&format!(
                "waiting for the lock held by {holder} (up to {}s)",
                timeout.as_secs()
            ));
        }
        if Instant::now() >= deadline {
            let holder = read_holder_from(&mut file)
                .map_or_else(|| "an unknown holder".to_string(), |h| h.to_string());
            return Err(Error::LockBusy(format!(
                "{} is locked by {holder} (waited {}s)",
                state_dir.shown(LOCK_FILE).display(),
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    // We own the lock: record who we are for anyone who finds it busy.
    let line = serde_json::to_string(me).expect("holder serializes") + "\n";
    // Overwrite, then cut to length: truncating to zero first would make
    // ext4 (auto_da_alloc) flush the file on close, a disk write per activation.
    file.rewind().context("rewinding lock file")?;
    file.write_all(line.as_bytes())
        .context("writing lock holder")?;
    file.set_len(line.len() as u64)
        .context("truncating lock file")?;
    Ok(Lock { _file: file })
}

/// The current holder, if the lock is held right now (for `status`).
pub fn current_holder(state_dir: &Dir) -> Result<Option<Holder>> {
    let Some(mut file) = open_lock(state_dir, false)? else {
        return Ok(None);
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        // Nobody holds it; our shared lock goes away with `file`.
        Ok(()) => Ok(None),
        Err(Errno::WOULDBLOCK) => Ok(read_holder_from(&mut file)),
        Err(e) => Err(anyhow::Error::from(e).context("flock").into()),
    }
}

/// Whether an activation is running right now, decided under a shared
/// lock held while `f` runs: with the lock free, no activation can start
/// until `f` returns, so what `f` reads (the intent record) is not in
/// flight. `Err(holder)` when the lock is held.
pub fn while_idle<T>(
    state_dir: &Dir,
    f: impl FnOnce() -> Result<T>,
) -> Result<std::result::Result<T, Option<Holder>>> {
    let Some(mut file) = open_lock(state_dir, false)? else {
        return f().map(Ok);
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let out = f();
            drop(file);
            out.map(Ok)
        }
        Err(Errno::WOULDBLOCK) => Ok(Err(read_holder_from(&mut file))),
        Err(e) => Err(anyhow::Error::from(e).context("flock").into()),
    }
}

/// The lock file is a state file like the others: no symlink, no FIFO, no
/// second link (see [`Dir::open_file`]).
fn open_lock(state_dir: &Dir, create: bool) -> Result<Option<File>> {
    let how = if create {
        Access::ReadWrite
    } else {
        Access::Read
    };
    state_dir.open_file(LOCK_FILE, how)
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
