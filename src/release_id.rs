//! Release ids and app names, and the `[APP:]RELEASE` request syntax.
//!
//! Validation happens before anything is touched, so every refusal here is an
//! exit-2 "nothing changed" error.

use crate::error::{usage, Result};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Longest allowed release id or app name, in bytes.
pub const MAX_LEN: usize = 128;

/// Check a release id: 1–128 bytes of `[A-Za-z0-9._+~-]`, not starting with
/// `.` or `-`. This rules out `/`, `:`, `..`, whitespace and non-ASCII.
pub fn validate(id: &str) -> Result<()> {
    validate_name("release id", id)
}

/// App names follow the release id rules: they become file names
/// (`/etc/releasectl/<app>.toml`) and systemd instance strings.
pub fn validate_app(app: &str) -> Result<()> {
    validate_name("app name", app)
}

fn validate_name(what: &str, s: &str) -> Result<()> {
    // The common case first and cheap: history and listings validate every
    // id they read, and building the error text for each costs more than
    // the check.
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_LEN
            && !s.starts_with(['.', '-'])
            && s.chars().all(is_id_char)
    };
    if valid(s) {
        return Ok(());
    }
    // Shortened: the input may be long and hostile.
    let shown: String = match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", s[..cut].escape_debug()),
        None => s.escape_debug().to_string(),
    };
    if s.is_empty() {
        return Err(usage(format!("invalid {what} \"\": must not be empty")));
    }
    if s.len() > MAX_LEN {
        return Err(usage(format!(
            "invalid {what} \"{shown}\": {} bytes, at most {MAX_LEN} allowed",
            s.len()
        )));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(usage(format!(
            "invalid {what} \"{shown}\": must not start with '.' or '-'"
        )));
    }
    if let Some(bad) = s.chars().find(|c| !is_id_char(*c)) {
        return Err(usage(format!(
            "invalid {what} \"{shown}\": character {:?} not allowed (use A-Z a-z 0-9 . _ + ~ -)",
            bad
        )));
    }
    Ok(())
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | '-')
}

/// Undo systemd's `\xNN` instance escaping. `-` stays `-`: systemd's
/// path-unescaping would turn it into `/`, which must never reach a release
/// path. Invalid or truncated escapes are refused rather than passed through.
pub fn systemd_unescape(s: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            let hex = s.get(i + 1..i + 4).filter(|h| h[0] == b'x');
            let byte = hex
                .and_then(|h| std::str::from_utf8(&h[1..]).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match byte {
                Some(b) => {
                    out.push(b);
                    i += 4;
                }
                None => {
                    return Err(usage(format!(
                        "invalid escape in \"{}\": only \\xNN is accepted",
                        String::from_utf8_lossy(s).escape_debug()
                    )))
                }
            }
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A parsed activation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub app: Option<String>,
    pub release: String,
}

/// Parse `[APP:]RELEASE` as given on the command line or as a systemd
/// instance string. `allow_app` is false in `--root` mode, where a `:` is
/// refused because there is no app to name.
pub fn parse_request(raw: &OsStr, allow_app: bool) -> Result<Request> {
    let bytes = systemd_unescape(raw.as_bytes())?;
    let text = String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "invalid release \"{}\": not valid UTF-8",
            raw.to_string_lossy().escape_debug()
        ))
    })?;
    let (app, release) = match text.split_once(':') {
        Some(_) if !allow_app => {
            return Err(usage(format!(
                "invalid release id \"{}\": ':' is not allowed (there is no APP with --root)",
                text.escape_debug()
            )))
        }
        Some((app, release)) => {
            validate_app(app)?;
            (Some(app.to_string()), release.to_string())
        }
        None => (None, text),
    };
    validate(&release)?;
    Ok(Request { app, release })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn accepts_ordinary_ids() {
        for id in [
            "v1",
            "20261125T170443Z",
            "1.0.3-rc1",
            "a+b~c_d",
            &"x".repeat(128),
        ] {
            validate(id).unwrap();
        }
    }

    #[test]
    fn refuses_hostile_ids() {
        let long = "x".repeat(129);
        for id in [
            "", "..", "../x", "a/b", ".hidden", "-x", "a:b", "a b", "a\nb", "é", &long,
        ] {
            assert!(validate(id).is_err(), "{id:?} accepted");
        }
    }

    #[test]
    fn unescapes_systemd_instances_but_not_dashes() {
        let r = parse_request(OsStr::new("web:v\\x2d2-x"), true).unwrap();
        assert_eq!(r.app.as_deref(), Some("web"));
        assert_eq!(r.release, "v-2-x");
    }

    #[test]
    fn escaped_slash_is_refused() {
        assert!(parse_request(OsStr::new("web:a\\x2fb"), true).is_err());
        assert!(parse_request(OsStr::new("web:\\x2e\\x2e"), true).is_err());
        assert!(parse_request(OsStr::new("bad\\x2"), true).is_err());
    }

    #[test]
    fn colon_refused_in_root_mode() {
        assert!(parse_request(OsStr::new("web:v1"), false).is_err());
        assert_eq!(
            parse_request(OsStr::new("v1"), false).unwrap().release,
            "v1"
        );
    }

    #[test]
    fn non_utf8_refused() {
        let raw = OsString::from_vec(vec![b'v', 0xff]);
        assert!(parse_request(&raw, true).is_err());
    }
}
