//! What an activation is asked to do, and what came of it.

use std::time::Duration;

/// A step of the transaction after validation: a hook, the units, the
/// health check. Its error says why, with context; it becomes the reason
/// of the rollback (and of the exit status 11 or 12), never an exit status
/// of its own.
pub type Step = anyhow::Result<()>;

/// What to activate.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Release(String),
    /// The newest good release that is not current (`rollback`).
    PreviousGood,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub no_reload: bool,
    pub no_health: bool,
    pub force: bool,
    pub lock_timeout: Duration,
    pub expect_current: Option<String>,
    pub dry_run: bool,
    /// Refuse a release marked bad (package hooks: never retry a failure).
    pub refuse_bad: bool,
    /// Mark the release left behind bad once this activation commits
    /// (`rollback`: a second rollback goes further back, not forward again).
    pub mark_from_bad: bool,
    /// Check the release against its manifest before anything changes
    /// (`--verify`; the config's `verify = true` turns it on as well).
    pub verify: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            no_reload: false,
            no_health: false,
            force: false,
            lock_timeout: Duration::from_secs(60),
            expect_current: None,
            dry_run: false,
            refuse_bad: false,
            mark_from_bad: false,
            verify: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Activated {
        from: Option<String>,
        to: String,
    },
    AlreadyActive {
        release: String,
    },
    /// `--dry-run`: what would happen; nothing was touched.
    WouldActivate {
        from: Option<String>,
        to: String,
    },
}
