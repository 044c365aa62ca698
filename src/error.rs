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

/// The kinds of failure, each with its exit status and its name in the JSON
/// error document (schema `releasectl.v1`, `error.kind`): the one table of
/// both, read both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Operational,
    Usage,
    LockBusy,
    ActivationFailed,
    RollbackFailed,
    NeedsRecovery,
    VerifyFailed,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Operational,
        Kind::Usage,
        Kind::LockBusy,
        Kind::ActivationFailed,
        Kind::RollbackFailed,
        Kind::NeedsRecovery,
        Kind::VerifyFailed,
    ];

    pub fn code(self) -> i32 {
        match self {
            Kind::Operational => exit::OPERATIONAL,
            Kind::Usage => exit::USAGE,
            Kind::LockBusy => exit::LOCK_BUSY,
            Kind::ActivationFailed => exit::ACTIVATION_FAILED,
            Kind::RollbackFailed => exit::ROLLBACK_FAILED,
            Kind::NeedsRecovery => exit::NEEDS_RECOVERY,
            Kind::VerifyFailed => exit::VERIFY_FAILED,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Operational => "operational",
            Kind::Usage => "usage",
            Kind::LockBusy => "lock_busy",
            Kind::ActivationFailed => "activation_failed",
            Kind::RollbackFailed => "rollback_failed",
            Kind::NeedsRecovery => "needs_recovery",
            Kind::VerifyFailed => "verify_failed",
        }
    }

    /// The kind an exit status documents; `None` for 0 and for any status
    /// releasectl(1) does not list.
    pub fn from_code(code: i32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }
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
    /// The exit status: the kind's, or the one relayed as it was.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Relayed { code, .. } => *code,
            other => other.kind().code(),
        }
    }

    /// The kind of failure: what the JSON error document names and what the
    /// exit status says. A relayed status names the kind it documents; one
    /// that documents none (another build's) is operational.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Usage(_) => Kind::Usage,
            Error::LockBusy(_) => Kind::LockBusy,
            Error::ActivationFailed(_) => Kind::ActivationFailed,
            Error::RollbackFailed(_) => Kind::RollbackFailed,
            Error::NeedsRecovery(_) => Kind::NeedsRecovery,
            Error::VerifyFailed(_) => Kind::VerifyFailed,
            Error::Operational(_) => Kind::Operational,
            Error::Relayed { code, .. } => Kind::from_code(*code).unwrap_or(Kind::Operational),
        }
    }

    /// An operational error (exit 1) with this message: an I/O failure
    /// explained, a service manager that cannot be reached, ...
    pub fn operational(msg: impl fmt::Display) -> Error {
        Error::Operational(anyhow::anyhow!("{msg}"))
    }

    /// An operational error (exit 1): `err`, with what was being done.
    pub fn op_ctx<E>(err: E, context: impl fmt::Display) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Operational(anyhow::Error::from(err).context(context.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_read_back_from_its_code() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k.code()), Some(k), "{}", k.name());
        }
        assert_eq!(Kind::from_code(exit::OK), None);
        assert_eq!(Kind::from_code(99), None);
    }

    /// `request --wait` relays the activation's status: its kind is the one
    /// that status documents (13 and 14 were once called "operational").
    #[test]
    fn a_relayed_status_keeps_its_kind() {
        for k in Kind::ALL {
            let e = Error::Relayed {
                code: k.code(),
                message: "m".into(),
            };
            assert_eq!(e.kind(), k, "{}", k.name());
            assert_eq!(e.exit_code(), k.code());
        }
        let odd = Error::Relayed {
            code: 99,
            message: "m".into(),
        };
        assert_eq!((odd.kind(), odd.exit_code()), (Kind::Operational, 99));
    }
}
