//! `activate`: make a staged release current, by id or (`--request`)
//! as a request file asks; and the activation run that `deploy` and
//! `rollback` share.

use crate::activation::{self, Options, Outcome, Target};
use crate::cli;
use crate::cli::output::Output;
use crate::config::app::{App, Source};
use crate::error::{usage, Error, Result};
use crate::host::cancel::Cancel;
use crate::host::systemd::service_manager;
use crate::state::history::{self};
use crate::state::request::{self, Report};
use crate::state::store;
use crate::{log, release_id};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

pub(super) fn run(
    source: &Source,
    out: &Output,
    a: cli::ActivateArgs,
    wait: Duration,
) -> Result<()> {
    if let Some(name) = &a.request {
        history::set_trigger("path");
        return activate_requested(source, out, &a, name, wait);
    }
    let Some(raw) = &a.release else {
        return Err(usage("no release given"));
    };
    let request = release_id::parse_request(raw, source.allows_app())?;
    check_flags(&a.flags)?;
    let app = source.open(request.app.as_deref())?;
    out.about(&app, Some(&request.release));
    let target = Target::Release(request.release);
    run_activation(&app, &target, &a.flags, wait, Leaving::Keep, out).map(drop)
}

/// The key of `activate --request`'s reports, one per request followed
/// (schema `activations`).
pub(super) const ACTIVATIONS: &str = "activations";

/// `activate --request APP` (deploy-watch@APP.service): activate what the
/// request file names, and record each request's outcome, a refused one
/// too, where the requester can read it.
fn activate_requested(
    source: &Source,
    out: &Output,
    a: &cli::ActivateArgs,
    name: &str,
    wait: Duration,
) -> Result<()> {
    let name = request::app_name(name)?;
    out.many(ACTIVATIONS);
    let results = request::results_dir(&a.dirs.requests_dir, a.dirs.results_dir.as_deref());
    // Ends the wait for the results lock; each activation has its own too.
    let cancel = Cancel::install()
        .map_err(|e| Error::operational(format_args!("installing signal handlers: {e}")))?;
    let mut done: Option<request::Request> = None;
    loop {
        let req = match request::read(&a.dirs.requests_dir, &name) {
            Ok(req) => req,
            // Removed after what ran: nothing more was asked. (lstat: a
            // dangling symlink planted there is a request to refuse.)
            Err(Error::Usage(_))
                if done.is_some()
                    && std::fs::symlink_metadata(a.dirs.requests_dir.join(&name)).is_err() =>
            {
                return Ok(())
            }
            Err(e) => {
                request::record(&results, Report::new(&name, None).failed(&e), &cancel);
                // What ran before a garbled follow-up stands.
                return if done.is_some() { Ok(()) } else { Err(e) };
            }
        };
        // The same file, unchanged: nothing new was asked.
        if done.as_ref() == Some(&req) {
            return Ok(());
        }
        if done.is_some() {
            // A request written while this one ran does not start the watch
            // service again (systemd merges it into the running job), so
            // the file is read once more after each activation.
            log::info(&format!(
                "{name}: request changed to {} meanwhile; activating it",
                req.release
            ));
        }
        // History records who asked (the request file's owner).
        crate::state::history::set_requester(req.uid);
        let result = check_flags(&a.flags).and_then(|()| {
            let app = source.open(Some(&name))?;
            out.about(&app, Some(&req.release));
            let target = Target::Release(req.release.clone());
            run_activation(&app, &target, &a.flags, wait, Leaving::Keep, out)
        });
        let report = Report::new(&name, Some(&req));
        request::record(
            &results,
            match &result {
                Ok(done) => {
                    report.succeeded(done.outcome.word(), done.from.clone(), done.describe(&name))
                }
                Err(e) => report.failed(e),
            },
            &cancel,
        );
        result?;
        // Stopped (SIGTERM from `systemctl stop`): what ran stands, and no
        // follow-up request is started.
        if let Some(sig) = cancel.received() {
            log::info(&format!(
                "{name}: {sig} received; not reading the request again"
            ));
            return Ok(());
        }
        done = Some(req);
    }
}

/// The current release, or exit 2 if `--expect-current` names another.
pub(super) fn expect_current(app: &App, f: &cli::ActivateFlags) -> Result<Option<String>> {
    let current = app.root.current()?;
    activation::check_expected(f.expect_current.as_deref(), &current)?;
    Ok(current)
}

pub(super) fn check_flags(f: &cli::ActivateFlags) -> Result<()> {
    // '' is the one value that is not an id: "there is no current".
    if let Some(id) = f.expect_current.as_deref().filter(|id| !id.is_empty()) {
        release_id::validate(id)?;
    }
    Ok(())
}

/// `rollback`: the release left behind is marked bad once the rollback
/// commits, so a second rollback goes further back.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Leaving {
    Keep,
    MarkBad,
}

/// What an activation that did not fail did: the `outcome` of its report
/// (and of a request's recorded outcome).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Did {
    Activated,
    AlreadyActive,
    WouldActivate,
    /// `deploy --dry-run`: nothing staged, nothing activated.
    WouldDeploy,
}

impl Did {
    /// The word its report says, for the request's results file (a record
    /// with a wider vocabulary of its own: `invalid`, `failed`, ...).
    fn word(self) -> &'static str {
        match self {
            Did::Activated => "activated",
            Did::AlreadyActive => "already_active",
            Did::WouldActivate => "would_activate",
            Did::WouldDeploy => "would_deploy",
        }
    }
}

/// The report of `activate`, `rollback` and `deploy` (schema `activation`).
#[derive(Serialize)]
pub(super) struct Activation<'a> {
    pub(super) app: Option<&'a str>,
    pub(super) root: &'a Path,
    pub(super) outcome: Did,
    pub(super) release: &'a str,
    pub(super) previous: Option<&'a str>,
}

/// What an activation that did not fail did.
pub(super) struct Done {
    outcome: Did,
    from: Option<String>,
    to: String,
}

impl Done {
    /// One line for a requester.
    fn describe(&self, app: &str) -> String {
        let from = self.from.as_deref().unwrap_or("none");
        match self.outcome {
            Did::AlreadyActive => format!("{app}: {} already active", self.to),
            did => format!("{app}: {} {} (previous: {from})", self.to, did.word()),
        }
    }
}

pub(super) fn run_activation(
    app: &App,
    target: &Target,
    f: &cli::ActivateFlags,
    lock_timeout: Duration,
    leaving: Leaving,
    out: &Output,
) -> Result<Done> {
    let opts = Options {
        no_reload: f.no_reload,
        no_health: f.no_health,
        force: f.force,
        lock_timeout,
        expect_current: f.expect_current.clone(),
        dry_run: f.dry_run,
        refuse_bad: f.refuse_bad,
        verify: f.verify,
        mark_from_bad: leaving == Leaving::MarkBad,
    };
    let cancel = Cancel::install()
        .map_err(|e| Error::operational(format_args!("installing signal handlers: {e}")))?;
    let mut services = service_manager(app, opts.no_reload || opts.dry_run)?;
    let outcome = activation::activate(app, target, &opts, services.as_mut(), &cancel)?;
    let (did, from, to) = match &outcome {
        Outcome::Activated { from, to } => (Did::Activated, from.clone(), to.clone()),
        Outcome::AlreadyActive { release } => {
            (Did::AlreadyActive, Some(release.clone()), release.clone())
        }
        Outcome::WouldActivate { from, to } => (Did::WouldActivate, from.clone(), to.clone()),
    };
    if let (Outcome::Activated { .. }, Some(keep)) = (&outcome, app.config.auto_prune) {
        auto_prune(app, keep);
    }
    let label = app.label();
    let report = Activation {
        app: app.name.as_deref(),
        root: app.root.path(),
        outcome: did,
        release: &to,
        previous: from.as_deref(),
    };
    out.print(&report, || match &outcome {
        Outcome::Activated { .. } => String::new(),
        Outcome::AlreadyActive { release } => format!("{label}: {release} already active"),
        Outcome::WouldActivate { from, to } => format!(
            "{label}: would activate {to} (current: {})",
            from.as_deref().unwrap_or("none")
        ),
    });
    Ok(Done {
        outcome: did,
        from,
        to,
    })
}

/// `[prune] keep`: after a committed activation, prune to `keep` good
/// releases. The activation stands whatever happens here: a failure is a
/// warning. The lock is not waited for: whoever holds it is activating,
/// and prunes after its own commit.
fn auto_prune(app: &App, keep: usize) {
    let label = app.label();
    match store::prune(app, keep, Duration::ZERO) {
        Ok(done) if done.plan.remove.is_empty() => {}
        Ok(done) => log::info(&format!(
            "{label}: pruned to {keep} good releases ([prune] keep): removed {}",
            done.plan.remove.join(", ")
        )),
        Err(Error::LockBusy { .. }) => log::info(&format!(
            "{label}: not pruned after the activation: the lock is busy (the next activation prunes)"
        )),
        Err(e) => log::warn(&format!(
            "{label}: pruning after the activation failed (the activation stands): {}",
            e.one_line()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Did;

    /// The results file and the JSON report say the same word.
    #[test]
    fn an_outcome_word_is_its_json() {
        for did in [
            Did::Activated,
            Did::AlreadyActive,
            Did::WouldActivate,
            Did::WouldDeploy,
        ] {
            assert_eq!(serde_json::to_value(did).unwrap(), did.word(), "{did:?}");
        }
    }
}
