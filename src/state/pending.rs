//! `.releasectl/pending.json`: the intent record of an activation in flight.
//!
//! It is made durable before `current` is touched and removed only after the
//! outcome is recorded, so after a crash its presence alone says "an
//! activation was interrupted; `from` is the last state known to be good".

use crate::error::{Error, Result};
use crate::fs::dir::{Access, Dir};
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
        Error::operational(format_args!(
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

/// `.releasectl/hook.json`: the hook (or health command) running right now.
///
/// A hook runs in its own process group, which releasectl kills at a
/// timeout or a signal; but a `kill -9` of releasectl leaves the group
/// running after the lock is free. So the hook is recorded while it runs
/// (before it starts, then with its process group), and the next holder of
/// the lock (an activation's recovery step, or `recover`) kills what is left
/// of it ([`reap_hook`]).
///
/// Why not a parent-death signal: without `unsafe` (no `pre_exec`) it would
/// take a wrapper such as `setpriv --pdeathsig=KILL`, a dependency on
/// util-linux ≥ 2.33, and the signal reaches the group leader only, not the
/// `sleep` its shell started; the recorded group covers every member.
/// Under deploy@ and deploy-watch@ systemd also kills the unit's cgroup
/// when releasectl exits.
///
/// Every process of the hook carries `RELEASECTL_HOOK_ID=TOKEN` in its
/// environment (inherited by its children), where TOKEN starts with ROOT's
/// device and inode. A process is killed only if it carries the token,
/// whatever its group (a member that called setsid too): a recycled group
/// id matches nothing, and a record copied from another app's root (the
/// file is in ROOT, which its owner may write) is refused by its prefix.
/// The lock is held meanwhile, so no hook of this root legitimately runs.
/// The token is recorded before the hook starts: a kill between its start
/// and the record must not lose it.
pub const HOOK_FILE: &str = "hook.json";
const HOOK_TMP: &str = "hook.json.tmp";
/// The environment variable that marks a hook's processes.
pub const HOOK_ID_VAR: &str = "RELEASECTL_HOOK_ID";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningHook {
    /// The process group (the hook's first process's pid); 0 until known.
    pub pgid: u32,
    /// The value of `RELEASECTL_HOOK_ID` its processes carry.
    pub token: String,
    /// The hook as an operator would type it, for the report.
    pub command: String,
}

/// A token for a hook of the root whose key (device-inode) is `root_key`.
pub fn hook_token(root_key: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{root_key}:{}:{}:{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Record the running hook. No fsync: the record only has to outlive a
/// SIGKILL of releasectl (the page cache does); a power cut ends the hook.
pub fn hook_started(state_dir: &Dir, hook: &RunningHook) -> Result<()> {
    let body = serde_json::to_vec(hook).expect("hook record serializes");
    let mut f = state_dir
        .open_file(HOOK_TMP, Access::CreateNew)?
        .expect("created");
    f.write_all(&body)
        .with_context(|| format!("writing {}", state_dir.shown(HOOK_TMP).display()))?;
    drop(f);
    state_dir.rename(HOOK_TMP, HOOK_FILE)
}

/// The hook ended (or was killed and waited for): forget it.
pub fn hook_ended(state_dir: &Dir) -> Result<()> {
    state_dir.unlink(HOOK_FILE)
}

/// What [`reap_hook`] found of a hook left running by a killed releasectl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub command: String,
    pub pgid: u32,
    /// Pids killed (empty: the hook had ended by itself).
    pub killed: Vec<u32>,
}

/// Kill what is left of the hook a killed releasectl recorded, if anything;
/// the caller holds the app's lock. A record that is damaged or names
/// another root is removed and reported, never acted on.
pub fn reap_hook(state_dir: &Dir, root_key: &str) -> Result<Option<Reaped>> {
    let Some(f) = state_dir.open_file(HOOK_FILE, Access::Read)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    f.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", state_dir.shown(HOOK_FILE).display()))?;
    let hook = serde_json::from_slice::<RunningHook>(&bytes)
        .ok()
        .filter(|h| valid_hook(h, root_key));
    state_dir.unlink(HOOK_FILE)?;
    let Some(hook) = hook else {
        crate::log::warn(&format!(
            "{} is not a hook record of this root; removed, nothing killed",
            state_dir.shown(HOOK_FILE).display()
        ));
        return Ok(None);
    };
    let killed = kill_marked(&hook.token);
    Ok(Some(Reaped {
        command: hook.command,
        pgid: hook.pgid,
        killed,
    }))
}

fn valid_hook(h: &RunningHook, root_key: &str) -> bool {
    let printable = |s: &str| s.len() <= 4096 && !s.chars().any(char::is_control);
    h.pgid <= i32::MAX as u32
        && printable(&h.command)
        && printable(&h.token)
        && h.token
            .strip_prefix(root_key)
            .is_some_and(|rest| rest.starts_with(':'))
}

/// SIGKILL every process whose environment carries the hook's token; the
/// pids killed. Repeated until none is left, since one may fork while we
/// look.
fn kill_marked(token: &str) -> Vec<u32> {
    let needle = format!("{HOOK_ID_VAR}={token}");
    let mut killed = Vec::new();
    for _ in 0..10 {
        let found = marked(needle.as_bytes());
        if found.is_empty() {
            break;
        }
        for pid in found {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                if rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok()
                    && !killed.contains(&pid)
                {
                    killed.push(pid);
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed
}

/// Pids with `needle` as one entry of their environment.
fn marked(needle: &[u8]) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|&pid| {
            let env = std::fs::File::open(format!("/proc/{pid}/environ")).and_then(|f| {
                let mut buf = Vec::new();
                f.take(1 << 20).read_to_end(&mut buf).map(|_| buf)
            });
            env.is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_hook_group_is_killed_only_where_marked() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::fs::root::RootDir::open(dir.path()).unwrap();
        let state = root.state_dir(true).unwrap().unwrap();
        let token = hook_token("1-2");
        let spawn = |token: &str, script: &str| {
            use std::os::unix::process::CommandExt;
            std::process::Command::new("/bin/sh")
                .args(["-c", script])
                .env(HOOK_ID_VAR, token)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut ours = spawn(&token, "sleep 30 & wait");
        let mut other = spawn("1-2:someone-else", "exec sleep 30");
        // Wait until the shell has started its sleep.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let needle = format!("{HOOK_ID_VAR}={token}");
        while marked(needle.as_bytes()).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // A record with a token nobody carries kills nothing, whatever
        // group it names.
        let planted = RunningHook {
            pgid: other.id(),
            token: hook_token("1-2"),
            command: "sleep 30".into(),
        };
        hook_started(&state, &planted).unwrap();
        assert!(reap_hook(&state, "1-2").unwrap().unwrap().killed.is_empty());
        // Another root's record is not acted on.
        let foreign = RunningHook {
            pgid: ours.id(),
            ..planted.clone()
        };
        hook_started(&state, &foreign).unwrap();
        assert_eq!(reap_hook(&state, "9-9").unwrap(), None);
        assert!(state.stat(HOOK_FILE).unwrap().is_none());
        // Ours: the shell and its sleep are killed.
        hook_started(
            &state,
            &RunningHook {
                pgid: 0,
                token,
                ..planted
            },
        )
        .unwrap();
        let reaped = reap_hook(&state, "1-2").unwrap().unwrap();
        assert_eq!(reaped.killed.len(), 2, "{reaped:?}");
        assert!(!ours.wait().unwrap().success());
        assert!(marked(needle.as_bytes()).is_empty());
        assert_eq!(
            other.try_wait().unwrap(),
            None,
            "the other group was touched"
        );
        other.kill().unwrap();
        let _ = other.wait();
        assert_eq!(reap_hook(&state, "1-2").unwrap(), None);
    }
}
