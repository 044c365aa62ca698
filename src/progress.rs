//! A progress line for `stage` on a terminal: files and bytes written so
//! far, redrawn on stderr at most ten times a second and erased at the end.
//! Nothing is drawn when stderr is not a terminal (the journal, a pipe, a
//! CI log), with `--json` or with `-q`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ALLOWED: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicBool = AtomicBool::new(false);
static FILES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LAST_DRAW: Mutex<Option<Instant>> = Mutex::new(None);

const EVERY: Duration = Duration::from_millis(100);

/// Called once per run: whether the command's output mode allows a
/// progress line at all (not `--json`, not `-q`) and stderr is a terminal.
pub fn allow(by_options: bool) {
    let tty = rustix::termios::isatty(std::io::stderr());
    ALLOWED.store(by_options && tty, Ordering::Relaxed);
}

/// Start counting (the line appears after the first redraw interval).
pub fn begin() {
    FILES.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    *LAST_DRAW.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    ACTIVE.store(ALLOWED.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// `n` more bytes written.
pub fn bytes(n: u64) {
    if ACTIVE.load(Ordering::Relaxed) {
        BYTES.fetch_add(n, Ordering::Relaxed);
        maybe_draw();
    }
}

/// One more file written.
pub fn file() {
    if ACTIVE.load(Ordering::Relaxed) {
        FILES.fetch_add(1, Ordering::Relaxed);
        maybe_draw();
    }
}

/// Erase the line; counting stops.
pub fn end() {
    if ACTIVE.swap(false, Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}

fn maybe_draw() {
    let mut last = LAST_DRAW.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < EVERY) {
        return;
    }
    *last = Some(now);
    let line = format!(
        "staging: {} files, {}",
        FILES.load(Ordering::Relaxed),
        human(BYTES.load(Ordering::Relaxed))
    );
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[K{line}");
    let _ = err.flush();
}

fn human(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes < 1024 * 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::human(2048), "2 KiB");
        assert_eq!(super::human(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }
}
