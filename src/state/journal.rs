//! Activation outcomes as structured journal entries, so that
//! `journalctl RELEASECTL_APP=web` shows an app's history and
//! `journalctl MESSAGE_ID=…` finds every rollback on a host.
//!
//! Sent whenever journald's socket exists; the `<N>` priority prefixes of
//! the stderr lines (src/log.rs) are used only when stderr is the journal
//! (`$JOURNAL_STREAM` names stderr's device and inode, see systemd.exec(5)). The native protocol is a datagram of
//! `KEY=value\n` fields (systemd's JOURNAL_NATIVE_PROTOCOL), small enough to
//! write by hand.

use crate::state::history::{Entry, Event};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

const SOCKET: &str = "/run/systemd/journal/socket";

/// One fixed MESSAGE_ID per outcome (`journalctl MESSAGE_ID=...`); never
/// change them, they are part of the interface.
pub fn message_id(event: Event) -> &'static str {
    match event {
        Event::Activated => "90c1b27532d64f829d840ec5854b3364",
        Event::RolledBack => "0baf940067494a568cf232c4caf2e8e5",
        Event::Aborted => "0465d986c31747758124a8118c537eb6",
        Event::RollbackFailed => "d5c0068713714c4ca6d840085180b52d",
        Event::Recovered => "28d9df36780844388619252c59d08a5d",
        Event::Reverted => "ccee4b9d180947f3858afed97fbfb149",
        Event::MarkedBad => "6f3b1c0e9a5d4e27b8c4f1d2a7e6b903",
        Event::MarkedGood => "b2d84e6f1c0a4b5d9e3f7a6c8d1e2f40",
    }
}

/// syslog priority: a rollback is an error, a failed rollback critical.
fn priority(event: Event) -> u8 {
    match event {
        Event::Activated | Event::Reverted | Event::MarkedGood => 5,
        Event::Recovered | Event::Aborted | Event::MarkedBad => 4,
        Event::RolledBack => 3,
        Event::RollbackFailed => 2,
    }
}

/// Send the outcome recorded in `entry` to the journal whenever there is
/// one, also when run from a shell, cron or a package script: an app's
/// history in `journalctl RELEASECTL_APP=…` must not depend on how the
/// activation was started. A failure is reported on stderr and never fails
/// the activation.
pub fn record(entry: &Entry) {
    if !Path::new(SOCKET).exists() {
        return;
    }
    if let Err(e) = send_to(Path::new(SOCKET), &fields(entry)) {
        crate::log::warn(&format!("cannot write the outcome to the journal: {e}"));
    }
}

/// The journal fields for one outcome.
pub fn fields(e: &Entry) -> Vec<(&'static str, String)> {
    let word = e.event.as_str();
    let app = e.app.as_deref().unwrap_or("(root)");
    let from = e.from.as_deref().unwrap_or("(none)");
    let to = e.to.as_deref().unwrap_or("(none)");
    let mut message = format!("{app}: {from} → {to}: {}", word.replace('_', " "));
    if let Some(reason) = &e.reason {
        message += &format!(": {reason}");
    }
    // Reasons quote hooks' output and text read back from disk: no raw
    // control characters in the journal either.
    let message = crate::log::clean(&message).into_owned();
    let mut f = vec![
        ("MESSAGE", message),
        ("MESSAGE_ID", message_id(e.event).to_string()),
        ("PRIORITY", priority(e.event).to_string()),
        ("SYSLOG_IDENTIFIER", "releasectl".to_string()),
        ("RELEASECTL_OUTCOME", word.to_string()),
    ];
    if let Some(app) = &e.app {
        f.push(("RELEASECTL_APP", app.clone()));
    }
    if let Some(to) = &e.to {
        f.push(("RELEASECTL_RELEASE", to.clone()));
    }
    if let Some(from) = &e.from {
        f.push(("RELEASECTL_PREVIOUS", from.clone()));
    }
    if let Some(reason) = &e.reason {
        f.push(("RELEASECTL_REASON", crate::log::clean(reason).into_owned()));
    }
    f
}

/// Native protocol encoding: `KEY=value\n`, or, for a value containing a
/// newline, `KEY\n` + little-endian u64 length + value + `\n`.
pub fn encode(fields: &[(&str, String)]) -> Vec<u8> {
    let mut buf = Vec::new();
    for (key, value) in fields {
        if value.contains('\n') {
            buf.extend_from_slice(key.as_bytes());
            buf.push(b'\n');
            buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            let _ = write!(buf, "{key}=");
        }
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'\n');
    }
    buf
}

/// One datagram to `socket` (our entries are far below the datagram limit).
pub fn send_to(socket: &Path, fields: &[(&str, String)]) -> std::io::Result<()> {
    UnixDatagram::unbound()?.send_to(&encode(fields), socket)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: Event, reason: Option<&str>) -> Entry {
        let mut e = Entry::new(event, Some("web"), Some("v1"), Some("v2"));
        e.reason = reason.map(str::to_string);
        e
    }

    #[test]
    fn outcome_fields_name_app_releases_and_outcome() {
        let f = fields(&entry(
            Event::RolledBack,
            Some("reload of web.service failed"),
        ));
        let get = |k: &str| f.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("RELEASECTL_APP"), Some("web"));
        assert_eq!(get("RELEASECTL_RELEASE"), Some("v2"));
        assert_eq!(get("RELEASECTL_PREVIOUS"), Some("v1"));
        assert_eq!(get("RELEASECTL_OUTCOME"), Some("rolled_back"));
        assert_eq!(get("MESSAGE_ID"), Some("0baf940067494a568cf232c4caf2e8e5"));
        assert_eq!(get("PRIORITY"), Some("3"));
        assert_eq!(
            get("MESSAGE"),
            Some("web: v1 → v2: rolled back: reload of web.service failed")
        );
    }

    #[test]
    fn message_ids_are_distinct_128_bit_ids() {
        let all = [
            Event::Activated,
            Event::RolledBack,
            Event::Aborted,
            Event::RollbackFailed,
            Event::Recovered,
            Event::Reverted,
            Event::MarkedBad,
            Event::MarkedGood,
        ];
        let ids: std::collections::HashSet<_> = all.iter().map(|e| message_id(*e)).collect();
        assert_eq!(ids.len(), all.len());
        for id in ids {
            assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()));
        }
        // The outcome word is the one history.jsonl uses.
        for e in all {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }

    #[test]
    fn multi_line_values_use_the_length_prefixed_form() {
        let buf = encode(&[("A", "x".into()), ("B", "1\n2".into())]);
        let mut want = b"A=x\nB\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"1\n2\n");
        assert_eq!(buf, want);
    }

    #[test]
    fn sends_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let f = fields(&entry(Event::Activated, None));
        send_to(&path, &f).unwrap();
        let mut buf = vec![0; 4096];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], encode(&f).as_slice());
        assert!(String::from_utf8_lossy(&buf[..n]).contains("RELEASECTL_OUTCOME=activated\n"));
    }
}
