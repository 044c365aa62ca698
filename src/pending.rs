//! `.releasectl/pending.json`: the intent record of an activation in flight.
//!
//! It is made durable before `current` is touched and removed only after the
//! outcome is recorded, so after a crash its presence alone says "an
//! activation was interrupted; `from` is the last state known to be good".

use crate::error::Result;
use crate::swap::open_in;
use anyhow::Context;
use rustix::fs::{self as rfs, AtFlags, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

pub const PENDING_FILE: &str = "pending.json";
const PENDING_TMP: &str = "pending.json.tmp";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub from: Option<String>,
    pub to: String,
    pub pid: u32,
    pub started: String,
    /// Size of history.jsonl when the record was written: this activation's
    /// outcome, if recorded, is after it (a wall-clock comparison would be
    /// fooled by a clock step). A record without it is searched from the start.
    #[serde(default)]
    pub history_offset: u64,
}

/// Write the record: temp file, fsync, rename, fsync the directory. A crash
/// at any point leaves either no record or a complete one.
pub fn write(state_dir: &OwnedFd, p: &Pending) -> Result<()> {
    let body = serde_json::to_vec_pretty(p).expect("pending serializes");
    let mut f = open_in(
        state_dir,
        PENDING_TMP,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
        0o644,
    )
    .context("creating pending.json.tmp")?;
    f.write_all(&body).context("writing pending.json.tmp")?;
    f.sync_all().context("fsync pending.json.tmp")?;
    rfs::renameat(state_dir, PENDING_TMP, state_dir, PENDING_FILE)
        .context("renaming pending.json")?;
    rfs::fsync(state_dir).context("fsync .releasectl")?;
    Ok(())
}

/// The record, if an activation is in flight or was interrupted.
pub fn read(state_dir: Option<&OwnedFd>) -> Result<Option<Pending>> {
    let Some(dir) = state_dir else {
        return Ok(None);
    };
    let mut text = String::new();
    match open_in(dir, PENDING_FILE, OFlags::RDONLY, 0) {
        Ok(mut f) => f
            .read_to_string(&mut text)
            .context("reading pending.json")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context("opening pending.json")
                .into())
        }
    };
    let p = serde_json::from_str(&text)
        .context("pending.json is corrupt; inspect it and remove it by hand")?;
    Ok(Some(p))
}

/// Remove the record: the activation's outcome is already in history.
pub fn remove(state_dir: &OwnedFd) -> Result<()> {
    match rfs::unlinkat(state_dir, PENDING_FILE, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context("removing pending.json")
                .into())
        }
    }
    // No fsync: if a power cut brings the record back, recovery finds this
    // activation's outcome already in the (fsynced) history and only clears
    // it again (see activation::recover_pending).
    Ok(())
}
