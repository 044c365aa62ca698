//! Wall-clock formatting: RFC 3339 for records, the compact UTC form for
//! default release ids.

use std::time::SystemTime;

/// `2026-11-25T17:04:43.123Z`
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// `20261125T170443Z`: sorts like time, and is a valid release id.
pub fn compact_utc(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.chars().filter(|c| *c != '-' && *c != ':').collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn compact_form() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        let s = super::compact_utc(t);
        assert_eq!(s.len(), 16);
        assert!(s.ends_with('Z') && s.as_bytes()[8] == b'T', "{s}");
        crate::release_id::validate(&s).unwrap();
    }
}
