//! The one error type of the command line boundary. Every failure that reaches
//! `main` is an [`Error`], and its variant decides the documented exit code.

use std::fmt;

/// Exit codes, as documented in releasectl(1).
pub mod exit {
    pub const OK: i32 = 0;
    pub const OPERATIONAL: i32 = 1;
    pub const USAGE: i32 = 2;
    // Outside 3-7, which systemd shows with LSB names (`status=4/NOPERMISSION`
    // for a rollback), and outside the BSD (64-78) and systemd (200-243)
    // ranges it names too: `systemctl status deploy@…` shows them plain.
    pub const LOCK_BUSY: i32 = 10;
    pub const ACTIVATION_FAILED: i32 = 11;
    pub const ROLLBACK_FAILED: i32 = 12;
    /// `status`: an activation was interrupted (its intent record is left
    /// and nobody holds the lock); `releasectl recover` finishes it.
    pub const NEEDS_RECOVERY: i32 = 13;
    /// A release differs from the manifest recorded when it was staged
    /// (`verify`; activation with verification: nothing changed).
    pub const VERIFY_FAILED: i32 = 14;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or input; nothing was changed on disk.
    #[error("{0}")]
    Usage(String),
    /// The lock is held by another activation.
    #[error("{0}")]
    LockBusy(String),
    /// The activation failed and the previous release is in place again.
    #[error("{0}")]
    ActivationFailed(String),
    /// The activation failed and so did the rollback: manual attention needed.
    #[error("{0}")]
    RollbackFailed(String),
    /// A release does not match its manifest (or has none to check).
    #[error("{0}")]
    VerifyFailed(String),
    /// The command printed its report, and that report shows an interrupted
    /// activation waiting for `releasectl recover` (`status`).
    #[error("{0}")]
    NeedsRecovery(String),
    /// Anything else: I/O errors, D-Bus unreachable, ...
    #[error(transparent)]
    Operational(#[from] anyhow::Error),
    /// The outcome of an activation another process ran (`request --wait`),
    /// passed on with that activation's exit status (the outcome itself is
    /// the command's report).
    #[error("{message}")]
    Relayed { code: i32, message: String },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::LockBusy(_) => exit::LOCK_BUSY,
            Error::ActivationFailed(_) => exit::ACTIVATION_FAILED,
            Error::RollbackFailed(_) => exit::ROLLBACK_FAILED,
            Error::NeedsRecovery(_) => exit::NEEDS_RECOVERY,
            Error::VerifyFailed(_) => exit::VERIFY_FAILED,
            Error::Operational(_) => exit::OPERATIONAL,
            Error::Relayed { code, .. } => *code,
        }
    }

    /// The kind named in the JSON error document.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::LockBusy(_) => "lock_busy",
            Error::ActivationFailed(_) => "activation_failed",
            Error::RollbackFailed(_) => "rollback_failed",
            Error::NeedsRecovery(_) => "needs_recovery",
            Error::VerifyFailed(_) => "verify_failed",
            Error::Operational(_) => "operational",
            Error::Relayed { code, .. } => match *code {
                exit::USAGE => "usage",
                exit::LOCK_BUSY => "lock_busy",
                exit::ACTIVATION_FAILED => "activation_failed",
                exit::ROLLBACK_FAILED => "rollback_failed",
                _ => "operational",
            },
        }
    }

    /// The one line printed to stderr: anyhow chains are joined with ": ".
    pub fn one_line(&self) -> String {
        let text = match self {
            Error::Operational(e) => format!("{e:#}"),
            other => other.to_string(),
        };
        text.replace('\n', " ")
    }
}

/// Shorthand for a usage error with a formatted message.
pub fn usage(msg: impl fmt::Display) -> Error {
    Error::Usage(msg.to_string())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
