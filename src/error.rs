//! The one error type of the command line boundary. Every failure that reaches
//! `main` is an [`Error`], and its variant decides the documented exit code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// The lock (the app's, or the one over the requesters' results) is
    /// held by someone else for longer than we would wait.
    #[error("{}", lock_busy(lock, holder.as_deref(), waited))]
    LockBusy {
        /// The lock file, as shown.
        lock: PathBuf,
        /// Who holds the app's lock (as its holder line says, or "an
        /// unknown holder"); `None`: the results lock, held by another
        /// writer of the results.
        holder: Option<String>,
        waited: Duration,
    },
    /// The activation failed and the release that was live is live again
    /// (or nothing was changed).
    #[error("{}", activation_failed(switch.as_deref(), reason, undone))]
    ActivationFailed {
        /// The activation; `None` if it failed before it was told (an
        /// interrupted wait for the lock).
        switch: Option<Box<Switch>>,
        reason: String,
        undone: Undone,
    },
    /// The activation failed and so did the rollback: manual attention needed.
    #[error(
        "{switch}: {reason}; rollback failed: {rollback}. MANUAL ATTENTION NEEDED: \
         `current` points to {}; fix the cause, then run `releasectl recover` \
         (pending.json kept)",
        live.as_deref().unwrap_or("nothing")
    )]
    RollbackFailed {
        switch: Box<Switch>,
        reason: String,
        /// Why the rollback failed.
        rollback: String,
        /// What `current` names after the failed rollback.
        live: Option<String>,
    },
    /// A release does not match its manifest (or has none to check).
    #[error("{}", verify_failed(app.as_ref(), release, differences.as_deref(), *activation))]
    VerifyFailed {
        /// The app, once known (the manifest check alone does not name it).
        app: Option<AppRef>,
        release: String,
        /// The differences on one line; `None`: there is no manifest.
        differences: Option<String>,
        /// Found on the way to activating it: nothing was changed.
        activation: bool,
    },
    /// The command printed its report, and that report shows interrupted
    /// activations waiting for `releasectl recover` (`status`).
    #[error("{}", interrupted.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    NeedsRecovery { interrupted: Vec<Interrupted> },
    /// Anything else: I/O errors, D-Bus unreachable, ...
    #[error(transparent)]
    Operational(#[from] anyhow::Error),
    /// The outcome of an activation another process ran (`request --wait`),
    /// passed on with that activation's exit status (the outcome itself is
    /// the command's report).
    #[error("{message}")]
    Relayed {
        code: i32,
        message: String,
        app: String,
        release: Option<String>,
    },
}

/// An app as an error names it.
#[derive(Debug, Clone)]
pub struct AppRef {
    /// Its name; `None` for an app given by `--root`.
    pub name: Option<String>,
    /// What messages call it: the name, else the root's path.
    pub label: String,
}

/// The activation an error is about; shown as `label: from → to`.
#[derive(Debug, Clone)]
pub struct Switch {
    pub app: AppRef,
    /// The release that was live when it began.
    pub from: Option<String>,
    pub to: String,
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self.from.as_deref().unwrap_or("(none)");
        write!(f, "{}: {from} → {}", self.app.label, self.to)
    }
}

/// What became of a failed activation (exit 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undone {
    /// It failed before anything changed.
    NothingChanged,
    /// It was of the release already live (forced, or redone after a
    /// recovery): there was nothing to undo.
    StillLive,
    /// `from` is live again, and the outcome recorded.
    RolledBack,
    /// `from` is live again, but the outcome could not be recorded (why):
    /// the intent record is kept for the next run.
    RolledBackUnrecorded(String),
}

/// An activation left interrupted (`status`, exit 13).
#[derive(Debug, Clone)]
pub struct Interrupted {
    pub app: AppRef,
    pub from: Option<String>,
    pub to: String,
    pub pid: u32,
    pub started: String,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: the activation {} → {} (pid {}, started {}) was interrupted; run \
             `releasectl recover{}` (the next activation also recovers it first)",
            self.app.label,
            self.from.as_deref().unwrap_or("none"),
            self.to,
            self.pid,
            self.started,
            self.app
                .name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default()
        )
    }
}

fn lock_busy(lock: &Path, holder: Option<&str>, waited: &Duration) -> String {
    let (lock, secs) = (lock.display(), waited.as_secs_f64());
    match holder {
        Some(holder) => format!("{lock} is locked by {holder} (waited {secs}s)"),
        None => format!("{lock} is held by another writer of the results (waited {secs}s)"),
    }
}

fn activation_failed(switch: Option<&Switch>, reason: &str, undone: &Undone) -> String {
    let mut line = match switch {
        Some(s) => format!("{s}: {reason}"),
        None => reason.to_string(),
    };
    let back = switch.and_then(|s| s.from.as_deref()).unwrap_or("(none)");
    match undone {
        Undone::NothingChanged => line += "; nothing changed",
        Undone::StillLive => {}
        Undone::RolledBack => line += &format!("; rolled back to {back}"),
        Undone::RolledBackUnrecorded(why) => {
            line += &format!(
                "; rolled back to {back}, but the outcome could not be recorded ({why}); \
                 pending.json kept for the next run"
            )
        }
    }
    line
}

/// How `release` differs from its manifest (`None`: it has none), as
/// history records it.
pub fn mismatch(release: &str, differences: Option<&str>) -> String {
    match differences {
        Some(d) => format!("{release} does not match its manifest: {d}"),
        None => format!(
            "release {release} has no manifest to verify against (it was not staged by \
             releasectl, or by a version without manifests)"
        ),
    }
}

fn verify_failed(
    app: Option<&AppRef>,
    release: &str,
    differences: Option<&str>,
    activation: bool,
) -> String {
    let mut line = mismatch(release, differences);
    if let Some(app) = app {
        line = format!("{}: {line}", app.label);
    }
    if activation {
        line += "; nothing changed (see `releasectl verify`)";
    }
    line
}

/// What an error says of the app it failed on: the JSON error document
/// takes it from here rather than from the disk.
pub struct Left<'a> {
    pub app: Option<&'a str>,
    pub release: Option<&'a str>,
    /// The state the failure left, when the error knows it.
    pub state: Option<After<'a>>,
}

/// An activation's app and release, and the state it left.
fn switched<'a>(s: &'a Switch, state: After<'a>) -> Left<'a> {
    Left {
        app: s.app.name.as_deref(),
        release: Some(&s.to),
        state: Some(state),
    }
}

/// The state a failed activation left.
pub struct After<'a> {
    /// What `current` names.
    pub current: Option<&'a str>,
    /// Whether the intent record was kept (its contents are the state
    /// layer's to read).
    pub pending_kept: bool,
}

impl Error {
    /// The exit status: the kind's, or the one relayed as it was.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Relayed { code, .. } => *code,
            other => other.kind().code(),
        }
    }

    /// What a failed activation undid (`None` for any other error).
    pub fn undone(&self) -> Option<&Undone> {
        match self {
            Error::ActivationFailed { undone, .. } => Some(undone),
            _ => None,
        }
    }

    /// The kind of failure: what the JSON error document names and what the
    /// exit status says. A relayed status names the kind it documents; one
    /// that documents none (another build's) is operational.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Usage(_) => Kind::Usage,
            Error::LockBusy { .. } => Kind::LockBusy,
            Error::ActivationFailed { .. } => Kind::ActivationFailed,
            Error::RollbackFailed { .. } => Kind::RollbackFailed,
            Error::NeedsRecovery { .. } => Kind::NeedsRecovery,
            Error::VerifyFailed { .. } => Kind::VerifyFailed,
            Error::Operational(_) => Kind::Operational,
            Error::Relayed { code, .. } => Kind::from_code(*code).unwrap_or(Kind::Operational),
        }
    }

    /// The app and release the error is about, and the state it left, as
    /// far as it knows them. `None` for the errors that carry no state
    /// (usage, operational, lock busy, relayed: the JSON error document reads
    /// the disk for those).
    pub fn left(&self) -> Option<Left<'_>> {
        match self {
            Error::ActivationFailed {
                switch: Some(s),
                undone,
                ..
            } => Some(switched(
                s,
                // Undone or not begun: what was live is live.
                After {
                    current: s.from.as_deref(),
                    pending_kept: matches!(undone, Undone::RolledBackUnrecorded(_)),
                },
            )),
            Error::RollbackFailed { switch, live, .. } => Some(switched(
                switch,
                After {
                    current: live.as_deref(),
                    pending_kept: true,
                },
            )),
            Error::VerifyFailed {
                app: Some(app),
                release,
                ..
            } => Some(Left {
                app: app.name.as_deref(),
                release: Some(release),
                state: None,
            }),
            Error::NeedsRecovery { interrupted } => match interrupted.as_slice() {
                [one] => Some(Left {
                    app: one.app.name.as_deref(),
                    release: None,
                    state: None,
                }),
                _ => None,
            },
            Error::Relayed { app, release, .. } => Some(Left {
                app: Some(app),
                release: release.as_deref(),
                state: None,
            }),
            _ => None,
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

    fn relayed(code: i32) -> Error {
        Error::Relayed {
            code,
            message: "m".into(),
            app: "web".into(),
            release: None,
        }
    }

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
            let e = relayed(k.code());
            assert_eq!(e.kind(), k, "{}", k.name());
            assert_eq!(e.exit_code(), k.code());
        }
        let odd = relayed(99);
        assert_eq!((odd.kind(), odd.exit_code()), (Kind::Operational, 99));
    }

    fn switch(from: Option<&str>) -> Option<Box<Switch>> {
        Some(Box::new(Switch {
            app: AppRef {
                name: Some("web".into()),
                label: "web".into(),
            },
            from: from.map(str::to_string),
            to: "v2".into(),
        }))
    }

    fn failed(switch: Option<Box<Switch>>, undone: Undone) -> String {
        let reason = "health check failed".to_string();
        Error::ActivationFailed {
            switch,
            reason,
            undone,
        }
        .one_line()
    }

    /// The typed errors print the lines the string ones did, word for word.
    #[test]
    fn typed_errors_print_the_documented_lines() {
        let why = "health check failed";
        assert_eq!(
            failed(switch(Some("v1")), Undone::RolledBack),
            format!("web: v1 → v2: {why}; rolled back to v1")
        );
        assert_eq!(
            failed(switch(None), Undone::RolledBack),
            format!("web: (none) → v2: {why}; rolled back to (none)")
        );
        assert_eq!(
            failed(switch(Some("v1")), Undone::NothingChanged),
            format!("web: v1 → v2: {why}; nothing changed")
        );
        assert_eq!(
            failed(None, Undone::NothingChanged),
            format!("{why}; nothing changed")
        );
        assert_eq!(
            failed(switch(Some("v2")), Undone::StillLive),
            format!("web: v2 → v2: {why}")
        );
        assert_eq!(
            failed(
                switch(Some("v1")),
                Undone::RolledBackUnrecorded("disk full".into())
            ),
            format!(
                "web: v1 → v2: {why}; rolled back to v1, but the outcome could not be \
                 recorded (disk full); pending.json kept for the next run"
            )
        );
        let rb = Error::RollbackFailed {
            switch: switch(Some("v1")).unwrap(),
            reason: why.into(),
            rollback: "reload failed".into(),
            live: None,
        };
        assert_eq!(
            rb.one_line(),
            format!(
                "web: v1 → v2: {why}; rollback failed: reload failed. MANUAL ATTENTION \
                 NEEDED: `current` points to nothing; fix the cause, then run `releasectl \
                 recover` (pending.json kept)"
            )
        );
        let busy = |holder: Option<&str>, ms| Error::LockBusy {
            lock: "/srv/web/.releasectl/lock".into(),
            holder: holder.map(str::to_string),
            waited: Duration::from_millis(ms),
        };
        assert_eq!(
            busy(Some("pid 7"), 1500).one_line(),
            "/srv/web/.releasectl/lock is locked by pid 7 (waited 1.5s)"
        );
        assert_eq!(
            busy(None, 30_000).one_line(),
            "/srv/web/.releasectl/lock is held by another writer of the results (waited 30s)"
        );
        let verify = |app: bool, differences: Option<&str>, activation| Error::VerifyFailed {
            app: app.then(|| AppRef {
                name: None,
                label: "/srv/web".into(),
            }),
            release: "v2".into(),
            differences: differences.map(str::to_string),
            activation,
        };
        assert_eq!(
            verify(true, Some("1 changed: a"), false).one_line(),
            "/srv/web: v2 does not match its manifest: 1 changed: a"
        );
        assert_eq!(
            verify(true, Some("1 changed: a"), true).one_line(),
            "/srv/web: v2 does not match its manifest: 1 changed: a; nothing changed \
             (see `releasectl verify`)"
        );
        assert_eq!(
            verify(false, None, false).one_line(),
            "release v2 has no manifest to verify against (it was not staged by \
             releasectl, or by a version without manifests)"
        );
        let stuck = |name: Option<&str>| Interrupted {
            app: AppRef {
                name: name.map(str::to_string),
                label: name.unwrap_or("/srv/x").into(),
            },
            from: None,
            to: "v2".into(),
            pid: 9,
            started: "T".into(),
        };
        let e = Error::NeedsRecovery {
            interrupted: vec![stuck(Some("web")), stuck(None)],
        };
        assert_eq!(
            e.one_line(),
            "web: the activation none → v2 (pid 9, started T) was interrupted; run \
             `releasectl recover web` (the next activation also recovers it first); \
             /srv/x: the activation none → v2 (pid 9, started T) was interrupted; run \
             `releasectl recover` (the next activation also recovers it first)"
        );
    }
}
