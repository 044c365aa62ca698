//! SIGINT, SIGTERM and SIGHUP become a flag that the transaction polls, so an
//! interrupted activation rolls back instead of dying half-way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Cancel {
    signal: Arc<AtomicUsize>,
}

impl Cancel {
    /// A token that is never cancelled (used while rolling back: the rollback
    /// must finish even when the operator presses Ctrl-C again).
    pub fn never() -> Cancel {
        Cancel::default()
    }

    /// Catch SIGINT, SIGTERM and SIGHUP for the rest of the process.
    pub fn install() -> std::io::Result<Cancel> {
        let cancel = Cancel::default();
        for sig in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register_usize(sig, Arc::clone(&cancel.signal), sig as usize)?;
        }
        Ok(cancel)
    }

    /// The name of the signal received, if any.
    pub fn received(&self) -> Option<&'static str> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s if s == signal_hook::consts::SIGINT as usize => Some("SIGINT"),
            s if s == signal_hook::consts::SIGTERM as usize => Some("SIGTERM"),
            s if s == signal_hook::consts::SIGHUP as usize => Some("SIGHUP"),
            _ => Some("a signal"),
        }
    }

    /// `Err(Interrupted("SIGTERM"))` once a signal arrived.
    pub fn check(&self) -> Result<(), Interrupted> {
        match self.received() {
            Some(sig) => Err(Interrupted(sig)),
            None => Ok(()),
        }
    }

    #[cfg(test)]
    pub fn trigger(&self) {
        self.signal
            .store(signal_hook::consts::SIGTERM as usize, Ordering::SeqCst);
    }
}

/// A signal arrived: what the transaction was doing stops, and an
/// activation past its swap rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {0}")]
pub struct Interrupted(pub &'static str);

impl From<Interrupted> for String {
    fn from(i: Interrupted) -> String {
        i.to_string()
    }
}
