//! `.releasectl/history.jsonl`: one JSON object per line, appended and
//! fsynced, never rewritten. It is the record of what happened and the source
//! of "previous", "last good" and "bad".

use crate::error::Result;
use crate::fs::dir::{Access, Dir};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};

pub const HISTORY_FILE: &str = "history.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An activation committed: `to` is current.
    Activated,
    /// An activation failed after the swap (or was interrupted) and `from`
    /// is current again. `to` is marked bad, unless `interrupted` says a
    /// signal stopped it.
    RolledBack,
    /// An activation failed before the swap (pre_activate hook); nothing
    /// changed. `to` is marked bad, unless `interrupted` is set.
    Aborted,
    /// The rollback itself failed: manual attention needed.
    RollbackFailed,
    /// An interrupted activation was found and `from` restored.
    Recovered,
    /// `rollback` committed: `to` (an earlier release) is current and
    /// `from`, the release it left, is marked bad, so a second `rollback`
    /// goes further back instead of forward again.
    Reverted,
    /// `to` was marked bad by hand (`mark-bad`): `rollback` skips it until
    /// it is activated successfully again.
    MarkedBad,
    /// `to` was marked good by hand (`mark-good`): no longer skipped.
    MarkedGood,
}

impl Event {
    /// The word history.jsonl stores (serde's snake_case name).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Activated => "activated",
            Event::RolledBack => "rolled_back",
            Event::Aborted => "aborted",
            Event::RollbackFailed => "rollback_failed",
            Event::Recovered => "recovered",
            Event::Reverted => "reverted",
            Event::MarkedBad => "marked_bad",
            Event::MarkedGood => "marked_good",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub time: String,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub pid: u32,
    /// The release live after this event, as releasectl left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// Who: the effective uid, and `$SUDO_USER` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// How releasectl was started: `cli`, `unit` (deploy@), `path` (a
    /// request file) or `package` (a maintainer script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Milliseconds from the start of the activation to this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The `stage --meta` pairs of `to` (git revision, build URL, who).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
    /// `rolled_back`/`aborted` because a signal stopped the activation
    /// (`SIGINT`, `SIGTERM`, `SIGHUP`: Ctrl-C, `systemctl stop`): `to` was
    /// not refused, so it is not marked bad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// Who asked, for an activation started by a request file (`activate
    /// --request`): the file's owner, and its user name if it resolves.
    /// `uid`/`user` stay root's: releasectl acted as root on their behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
}

static TRIGGER: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The owner of the request being acted on (`activate --request`).
static REQUESTER: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);

/// Record `uid` as the requester of the entries written from now on.
pub fn set_requester(uid: u32) {
    *REQUESTER.lock().unwrap_or_else(|e| e.into_inner()) = Some(uid);
}

fn requester() -> Option<u32> {
    *REQUESTER.lock().unwrap_or_else(|e| e.into_inner())
}

/// The name of `uid` in /etc/passwd, if it is a plain name.
pub fn user_name(uid: u32) -> Option<String> {
    crate::passwd::users()
        .into_iter()
        .find(|u| u.uid == uid && plain_user(&u.name))
        .map(|u| u.name)
}

/// Name the trigger explicitly (`activate --request` sets `path`).
pub fn set_trigger(trigger: &'static str) {
    let _ = TRIGGER.set(trigger);
}

/// How this process was started, as recorded in each entry.
fn trigger() -> &'static str {
    TRIGGER.get().copied().unwrap_or_else(|| {
        let env = |k: &str| std::env::var_os(k).is_some();
        if env("DPKG_MAINTSCRIPT_PACKAGE") || env("RPM_PACKAGE_NAME") {
            "package"
        } else if env("INVOCATION_ID") {
            // systemd sets it for every unit it starts (deploy@, cron-like
            // timers too); a shell does not have it.
            "unit"
        } else {
            "cli"
        }
    })
}

/// `$SUDO_USER`, if it is a plain user name.
fn sudo_user() -> Option<String> {
    let user = std::env::var("SUDO_USER").ok()?;
    plain_user(&user).then_some(user)
}

fn plain_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Entry {
    pub fn new(event: Event, app: Option<&str>, from: Option<&str>, to: Option<&str>) -> Entry {
        Entry {
            time: crate::clock::now_rfc3339(),
            event,
            app: app.map(str::to_string),
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            reason: None,
            pid: std::process::id(),
            live: None,
            uid: Some(rustix::process::geteuid().as_raw()),
            user: sudo_user(),
            trigger: Some(trigger().to_string()),
            duration_ms: None,
            meta: std::collections::BTreeMap::new(),
            interrupted: None,
            requester_uid: requester(),
            requester: requester().and_then(user_name),
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Entry {
        self.reason = Some(reason.into());
        self
    }
}

/// Append one entry and fsync it before returning: once an activation is
/// reported committed, its record survives a power cut.
pub fn append(state_dir: &Dir, entry: &Entry) -> Result<()> {
    let mut line = serde_json::to_vec(entry).expect("entry serializes");
    line.push(b'\n');
    let mut file = state_dir
        .open_file(HISTORY_FILE, Access::Append)?
        .expect("created");
    let shown = state_dir.shown(HISTORY_FILE);
    let size = file
        .metadata()
        .with_context(|| format!("stat {}", shown.display()))?
        .len();
    // A line torn by a power cut would swallow ours: start on a new line.
    let mut last = [b'\n'];
    if size > 0 {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut last, size - 1)
            .with_context(|| format!("reading {}", shown.display()))?;
    }
    if last[0] != b'\n' {
        line.insert(0, b'\n');
    }
    // One write(2) per line keeps lines whole even if a reader races us.
    let written = crate::fault::check(crate::fault::point::HISTORY_APPEND)
        .and_then(|()| file.write_all(&line))
        .and_then(|()| file.sync_data());
    if let Err(e) = written {
        // Disk full mid-line: cut the partial line off again, so the file
        // ends where it did and the failure leaves no trace to misread.
        let _ = file.set_len(size);
        return Err(anyhow::Error::from(e)
            .context(format!("appending to {}", shown.display()))
            .into());
    }
    Ok(())
}

/// Make sure the history can be appended to (creating it if missing),
/// before anything is changed: a planted symlink, FIFO or hard link must
/// refuse the activation up front, not after the swap.
pub fn check_writable(state_dir: &Dir) -> Result<()> {
    state_dir.open_file(HISTORY_FILE, Access::Append).map(drop)
}

/// The current size of the history file (0 if there is none): O(1).
pub fn size(state_dir: &Dir) -> Result<u64> {
    Ok(state_dir
        .stat(HISTORY_FILE)?
        .map_or(0, |st| st.st_size as u64))
}

/// All entries, oldest first (`state_dir` `None`: there is no history yet).
pub fn read(state_dir: Option<&Dir>) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    if let Some(dir) = state_dir {
        for_each(dir, 0, |e| entries.push(e))?;
    }
    Ok(entries)
}

/// The last `n` entries, oldest first, in memory bounded by `n`.
pub fn tail(state_dir: Option<&Dir>, n: usize) -> Result<Vec<Entry>> {
    let mut last = std::collections::VecDeque::with_capacity(n.min(4096));
    if let Some(dir) = state_dir {
        for_each(dir, 0, |e| {
            if last.len() == n {
                last.pop_front();
            }
            if n > 0 {
                last.push_back(e);
            }
        })?;
    }
    Ok(last.into())
}

/// The longest line read as an entry; ours are a few hundred bytes.
const MAX_LINE: usize = 64 * 1024;

/// Call `f` for each entry appended after byte `offset`, oldest first,
/// streaming: memory stays bounded whatever the file holds. The file is
/// writable by ROOT's owner, so it is read like user input: a line that is
/// too long, not UTF-8, not an entry, or that names an invalid release id is
/// skipped (a torn last line after a power cut is one of these), and one
/// warning says how many were. A damaged history never blocks an activation
/// or a recovery.
pub fn for_each(state_dir: &Dir, offset: u64, mut f: impl FnMut(Entry)) -> Result<()> {
    let shown = state_dir.shown(HISTORY_FILE);
    let Some(mut file) = state_dir.open_file(HISTORY_FILE, Access::Read)? else {
        return Ok(());
    };
    file.seek(SeekFrom::Start(offset))
        .with_context(|| format!("reading {}", shown.display()))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut skipped = 0u64;
    while let Some(whole) =
        next_line(&mut reader, &mut line).with_context(|| format!("reading {}", shown.display()))?
    {
        if line.iter().all(u8::is_ascii_whitespace) && whole {
            continue;
        }
        match parse(&line).filter(|_| whole) {
            Some(e) => f(e),
            None => skipped += 1,
        }
    }
    if skipped > 0 {
        crate::log::warn(&format!(
            "{}: {skipped} damaged line(s) skipped",
            shown.display()
        ));
    }
    Ok(())
}

fn parse(line: &[u8]) -> Option<Entry> {
    // One UTF-8 check of the line, then no per-string checks in the parser.
    let mut e: Entry = serde_json::from_str(std::str::from_utf8(line).ok()?).ok()?;
    // Read back like user input: pairs that break the --meta rules go.
    e.meta
        .retain(|k, v| crate::state::record::meta_problem(k, v).is_none());
    let ids_ok = [&e.from, &e.to]
        .into_iter()
        .flatten()
        .all(|id| crate::release_id::validate(id).is_ok())
        && e.app
            .as_deref()
            .is_none_or(|a| crate::release_id::validate_app(a).is_ok());
    ids_ok.then_some(e)
}

/// Read one line into `buf` (without its newline). `Some(false)`: the line
/// was longer than [`MAX_LINE`] and was skipped; `None`: end of file.
/// `read_until` and `skip_until` find newlines with the standard library's
/// memchr: a scan of a huge damaged file runs at memory speed.
fn next_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    use std::io::Read;
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(true));
    }
    if buf.len() <= MAX_LINE {
        // The last line, without its newline.
        return Ok(Some(true));
    }
    buf.clear();
    r.skip_until(b'\n')?;
    Ok(Some(false))
}

/// What the history says about releases.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Releases whose latest attempt failed.
    pub bad: HashSet<String>,
    /// The newest release that was committed successfully.
    pub last_good: Option<String>,
    /// The release `current` was switched away from most recently.
    pub previous: Option<String>,
    /// Good releases in the order they were last active, newest first.
    pub good_newest_first: Vec<String>,
    pub last: Option<Entry>,
}

impl Summary {
    /// What `rollback` without `--to` goes back to: the newest good release
    /// that is not current and still `exists`. `prune` keeps it for that reason.
    pub fn rollback_target(
        &self,
        current: Option<&str>,
        exists: impl Fn(&str) -> bool,
    ) -> Option<&str> {
        self.good_newest_first
            .iter()
            .map(String::as_str)
            .find(|id| Some(*id) != current && exists(id))
    }
}

/// The summary of the whole history, read as a stream.
pub fn summary(state_dir: Option<&Dir>) -> Result<Summary> {
    let mut s = Summarizer::default();
    if let Some(dir) = state_dir {
        for_each(dir, 0, |e| s.push(e))?;
    }
    Ok(s.finish())
}

#[cfg(test)]
pub fn summarize(entries: &[Entry]) -> Summary {
    let mut s = Summarizer::default();
    for e in entries {
        s.push(e.clone());
    }
    s.finish()
}

/// Builds a [`Summary`] one entry at a time, in memory bounded by the
/// number of distinct releases, not by the length of the history.
#[derive(Default)]
struct Summarizer {
    s: Summary,
    /// Sequence number of each release's last successful activation.
    last_activated: HashMap<String, u64>,
    seq: u64,
}

impl Summarizer {
    fn push(&mut self, e: Entry) {
        self.seq += 1;
        if let Some(to) = e.to.clone() {
            let s = &mut self.s;
            match e.event {
                Event::Activated | Event::Reverted => {
                    if e.event == Event::Reverted {
                        s.bad.extend(e.from.clone().filter(|f| *f != to));
                    }
                    s.bad.remove(&to);
                    if e.from.is_some() && e.from != e.to {
                        s.previous = e.from.clone();
                    }
                    s.last_good = Some(to.clone());
                    self.last_activated.insert(to, self.seq);
                }
                // Stopped by a signal: not refused, so not bad (nor good).
                Event::RolledBack | Event::Aborted if e.interrupted.is_some() => {}
                Event::RolledBack | Event::Aborted | Event::RollbackFailed | Event::MarkedBad => {
                    s.bad.insert(to);
                }
                Event::MarkedGood => {
                    s.bad.remove(&to);
                }
                Event::Recovered => {}
            }
        }
        self.s.last = Some(e);
    }

    /// Good releases newest first by their last activation; a release that
    /// was good and later failed is not a rollback target.
    fn finish(mut self) -> Summary {
        let mut good: Vec<(u64, String)> = self
            .last_activated
            .into_iter()
            .filter(|(id, _)| !self.s.bad.contains(id))
            .map(|(id, seq)| (seq, id))
            .collect();
        good.sort_unstable_by_key(|g| std::cmp::Reverse(g.0));
        self.s.good_newest_first = good.into_iter().map(|(_, id)| id).collect();
        self.s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(event: Event, from: Option<&str>, to: &str) -> Entry {
        Entry::new(event, None, from, Some(to))
    }

    #[test]
    fn summary_tracks_bad_previous_and_last_good() {
        let s = summarize(&[
            e(Event::Activated, None, "v1"),
            e(Event::Activated, Some("v1"), "v2"),
            e(Event::RolledBack, Some("v2"), "v3"),
            e(Event::Aborted, Some("v2"), "v4"),
        ]);
        assert_eq!(s.last_good.as_deref(), Some("v2"));
        assert_eq!(s.previous.as_deref(), Some("v1"));
        assert!(s.bad.contains("v3") && s.bad.contains("v4"));
        assert_eq!(s.good_newest_first, vec!["v2", "v1"]);
    }

    #[test]
    fn good_order_follows_the_last_activation() {
        let s = summarize(&[
            e(Event::Activated, None, "v1"),
            e(Event::Activated, Some("v1"), "v2"),
            e(Event::Activated, Some("v2"), "v3"),
            e(Event::Activated, Some("v3"), "v1"),
            e(Event::RolledBack, Some("v1"), "v2"),
        ]);
        assert_eq!(s.good_newest_first, vec!["v1", "v3"]);
    }

    #[test]
    fn damaged_lines_are_skipped_and_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::fs::root::RootDir::open(dir.path()).unwrap();
        let state = root.state_dir(true).unwrap().unwrap();
        append(&state, &e(Event::Activated, None, "v1")).unwrap();
        let mut junk = b"\xff\xfe not utf-8\n".to_vec();
        junk.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        junk.extend_from_slice(b"\n{\"time\":\"t\",\"event\":\"activated\",\"from\":null,");
        junk.extend_from_slice(b"\"to\":\"../../etc\",\"pid\":1}\n\n");
        let path = dir.path().join(".releasectl").join(HISTORY_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&junk).unwrap();
        append(&state, &e(Event::Activated, Some("v1"), "v2")).unwrap();
        // A torn line, as a power cut mid-append leaves it: the next
        // append starts on a line of its own.
        f.write_all(b"{\"time\":\"t\",\"ev").unwrap();
        append(&state, &e(Event::Activated, Some("v2"), "v3")).unwrap();
        f.write_all(b"{\"time\":\"t\",\"ev").unwrap();
        let got: Vec<_> = read(Some(&state)).unwrap();
        let tos: Vec<_> = got.iter().map(|e| e.to.clone().unwrap()).collect();
        assert_eq!(tos, ["v1", "v2", "v3"]);
        assert_eq!(tail(Some(&state), 1).unwrap()[0].to.as_deref(), Some("v3"));
        assert!(tail(Some(&state), 0).unwrap().is_empty());
        let s = summary(Some(&state)).unwrap();
        assert_eq!(s.previous.as_deref(), Some("v2"));
    }

    #[test]
    fn an_interrupted_attempt_is_not_bad() {
        let stopped = |event| Entry {
            interrupted: Some("SIGINT".into()),
            ..e(event, Some("v1"), "v2")
        };
        let s = summarize(&[
            e(Event::Activated, None, "v1"),
            stopped(Event::RolledBack),
            stopped(Event::Aborted),
        ]);
        assert!(s.bad.is_empty(), "{:?}", s.bad);
        // Not good either: never committed, so no rollback target.
        assert_eq!(s.good_newest_first, vec!["v1"]);
        // A signal does not clear an earlier failure.
        let s = summarize(&[e(Event::RolledBack, None, "v2"), stopped(Event::RolledBack)]);
        assert!(s.bad.contains("v2"));
    }

    #[test]
    fn later_success_clears_bad() {
        let s = summarize(&[
            e(Event::RolledBack, None, "v1"),
            e(Event::Activated, None, "v1"),
        ]);
        assert!(s.bad.is_empty());
    }
}
