//! The per-app activation lock: `flock(LOCK_EX)` on `.releasectl/lock`.
//!
//! flock(2) belongs to the open file description, so the kernel drops it when
//! the holder dies, however it dies: there are no stale locks and no PID files
//! to second-guess. The file's content only names the holder for humans.

use crate::cancel::Cancel;
use crate::error::{usage, Error, Result};
use crate::swap::open_in;
use anyhow::Context;
use rustix::fs::{flock, FlockOperation, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

pub const LOCK_FILE: &str = "lock";

/// Who holds the lock, as written into the lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub release: String,
    pub since: String,
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
/// `.releasectl` directory handle; `shown` its path for messages.
pub fn acquire(
    state_dir: &OwnedFd,
    shown: &Path,
    me: &Holder,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Lock> {
    let mut file = open_lock(state_dir, shown, true)?.expect("created");
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
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
        if Instant::now() >= deadline {
            let holder = read_holder_from(&mut file)
                .map_or_else(|| "an unknown holder".to_string(), |h| h.to_string());
            return Err(Error::LockBusy(format!(
                "{} is locked by {holder} (waited {}s)",
                shown.join(LOCK_FILE).display(),
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
pub fn current_holder(state_dir: &OwnedFd, shown: &Path) -> Result<Option<Holder>> {
    let Some(mut file) = open_lock(state_dir, shown, false)? else {
        return Ok(None);
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        // Nobody holds it; our shared lock goes away with `file`.
        Ok(()) => Ok(None),
        Err(Errno::WOULDBLOCK) => Ok(read_holder_from(&mut file)),
        Err(e) => Err(anyhow::Error::from(e).context("flock").into()),
    }
}

fn open_lock(state_dir: &OwnedFd, shown: &Path, create: bool) -> Result<Option<File>> {
    let flags = if create {
        OFlags::RDWR | OFlags::CREATE
    } else {
        OFlags::RDONLY
    };
    let path = shown.join(LOCK_FILE);
    match open_in(state_dir, LOCK_FILE, flags, 0o644) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => Err(usage(format!(
            "lock file {} is a symlink; refusing to use it",
            path.display()
        ))),
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(usage(format!(
            "cannot open lock file {}: {e}",
            path.display()
        ))),
    }
}

fn read_holder_from(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.lines().next()?).ok()
}
