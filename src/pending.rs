//! `.releasectl/pending.json`: the intent record of an activation in flight.
//!
//! It is made durable before `current` is touched and removed only after the
//! outcome is recorded, so after a crash its presence alone says "an
//! activation was interrupted; `from` is the last state known to be good".

use crate::error::{Error, Result};
use crate::root::{Access, Dir};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

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
pub fn write(state_dir: &Dir, p: &Pending) -> Result<()> {
    let body = serde_json::to_vec_pretty(p).expect("pending serializes");
    // A new file each time: whatever was left or planted under the temp
    // name is unlinked, never written through.
    let mut f = state_dir
        .open_file(PENDING_TMP, Access::CreateNew)?
        .expect("created");
    let written = crate::fault::check(crate::fault::point::PENDING_WRITE)
        .and_then(|()| f.write_all(&body))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", state_dir.shown(PENDING_TMP).display()));
    if let Err(e) = written {
        // Disk full: leave no half-written temp file behind.
        let _ = state_dir.unlink(PENDING_TMP);
        return Err(e.into());
    }
    state_dir.rename(PENDING_TMP, PENDING_FILE)?;
    state_dir.sync()
}

/// Largest intent record read back (ours are a few hundred bytes).
const MAX_SIZE: u64 = 64 * 1024;

/// The record, if an activation is in flight or was interrupted. It is read
/// like user input: the ids in it are validated before anything acts on them.
pub fn read(state_dir: Option<&Dir>) -> Result<Option<Pending>> {
    let Some(dir) = state_dir else {
        return Ok(None);
    };
    let Some(f) = dir.open_file(PENDING_FILE, Access::Read)? else {
        return Ok(None);
    };
    let shown = dir.shown(PENDING_FILE);
    let corrupt = |why: String| {
        Error::Operational(anyhow::anyhow!(
            "{} is corrupt ({why}); inspect it and remove it by hand",
            shown.display()
        ))
    };
    let mut bytes = Vec::new();
    f.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", shown.display()))?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(corrupt(format!("larger than {MAX_SIZE} bytes")));
    }
    let p: Pending = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    for id in std::iter::once(&p.to).chain(p.from.as_ref()) {
        crate::release_id::validate(id).map_err(|e| corrupt(e.to_string()))?;
    }
    if p.started.len() > 64 || p.started.chars().any(char::is_control) {
        return Err(corrupt("bad start time".into()));
    }
    Ok(Some(p))
}

/// Remove the record: the activation's outcome is already in history.
pub fn remove(state_dir: &Dir) -> Result<()> {
    state_dir.unlink(PENDING_FILE)?;
    // No fsync: if a power cut brings the record back, recovery finds this
    // activation's outcome already in the (fsynced) history and only clears
    // it again (see activation::recover_pending).
    Ok(())
}
