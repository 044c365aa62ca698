//! The one error type of the command line boundary. Every failure that reaches
//! `main` is an [`Error`], and its variant decides the documented exit code.

use std::fmt;

/// Exit codes, as documented in releasectl(1).
pub mod exit {
    pub const OK: i32 = 0;
    pub const OPERATIONAL: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const LOCK_BUSY: i32 = 3;
    pub const ACTIVATION_FAILED: i32 = 4;
    pub const ROLLBACK_FAILED: i32 = 5;
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
    /// Anything else: I/O errors, D-Bus unreachable, ...
    #[error(transparent)]
    Operational(#[from] anyhow::Error),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::LockBusy(_) => exit::LOCK_BUSY,
            Error::ActivationFailed(_) => exit::ACTIVATION_FAILED,
            Error::RollbackFailed(_) => exit::ROLLBACK_FAILED,
            Error::Operational(_) => exit::OPERATIONAL,
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
