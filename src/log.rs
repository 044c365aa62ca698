//! Messages for the operator, on stderr. Under systemd (`$JOURNAL_STREAM`)
//! each line carries a `<N>` syslog priority prefix so the journal files it
//! at the right level.

use std::io::Write;
use std::sync::atomic::{AtomicI8, Ordering};

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

fn emit(priority: u8, msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = if under_journal() {
        writeln!(err, "<{priority}>{msg}")
    } else {
        writeln!(err, "releasectl: {msg}")
    };
}

fn under_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}
