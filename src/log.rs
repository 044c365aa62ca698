//! Messages for the operator, on stderr. When stderr is the journal's
//! stream (see [`stderr_is_journal`]) each line carries a
//! `<N>` syslog priority prefix, which journald strips and files as the
//! entry's PRIORITY (SyslogLevelPrefix= is on by default), so
//! `journalctl -p err` finds the failures.

use std::borrow::Cow;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI8, Ordering};
use std::sync::OnceLock;

static VERBOSITY: AtomicI8 = AtomicI8::new(0);

/// -1 quiet (errors only), 0 normal, 1 verbose.
pub fn set_verbosity(v: i8) {
    VERBOSITY.store(v, Ordering::Relaxed);
}

pub fn error(msg: &str) {
    emit(3, msg);
}

pub fn warn(msg: &str) {
    emit(4, msg);
}

pub fn info(msg: &str) {
    if VERBOSITY.load(Ordering::Relaxed) >= 0 {
        emit(6, msg);
    }
}

pub fn debug(msg: &str) {
    if VERBOSITY.load(Ordering::Relaxed) >= 1 {
        emit(7, msg);
    }
}

/// `s` with control characters (newline, ESC, DEL, C1…) shown as escapes:
/// messages quote text read from disk or from hooks' configs, and a raw
/// newline followed by `<0>` would forge a journal priority, a raw ESC
/// would drive the operator's terminal.
pub fn clean(s: &str) -> Cow<'_, str> {
    // Byte scan first (every output line goes through here): C0 controls,
    // DEL, 0xC2 (the lead byte of every C1 control in UTF-8) and 0xE2 (that
    // of the bidirectional overrides U+202A-202E and U+2066-2069, which make
    // a terminal show text in another order).
    let suspect = |b: u8| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2;
    if !s.bytes().any(suspect) || !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if is_unsafe(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// One line a hook or health command printed: escaped like [`clean`]
/// (tabs kept), each byte that is not UTF-8 shown as `\xNN`, after `| `
/// so that it cannot pass for one of our messages. Not shown with `-q`.
pub fn command_output(line: &[u8]) {
    if VERBOSITY.load(Ordering::Relaxed) < 0 {
        return;
    }
    let mut text = String::with_capacity(line.len());
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c != '\t' && is_unsafe(c) {
                text.extend(c.escape_default());
            } else {
                text.push(c);
            }
        }
        for b in chunk.invalid() {
            text += &format!("\\x{b:02x}");
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = if stderr_is_journal() {
        writeln!(err, "<6>| {text}")
    } else {
        writeln!(err, "| {text}")
    };
}

fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn emit(priority: u8, msg: &str) {
    let msg = clean(msg);
    let mut err = std::io::stderr().lock();
    let _ = if stderr_is_journal() {
        writeln!(err, "<{priority}>{msg}")
    } else {
        writeln!(err, "releasectl: {msg}")
    };
}

/// Whether stderr goes to the journal: `$JOURNAL_STREAM` is "DEV:INODE" of
/// the stream systemd connected; a child whose stderr was redirected
/// inherits the variable but not the stream, hence the comparison.
pub fn stderr_is_journal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(st) = rustix::fs::fstat(std::io::stderr().as_fd()) else {
            return false;
        };
        var.to_str() == Some(&format!("{}:{}", st.st_dev, st.st_ino))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::clean("plain → text"), "plain → text");
        assert_eq!(super::clean("a\n<0>b\x1b[2J"), "a\\n<0>b\\u{1b}[2J");
    }
}
