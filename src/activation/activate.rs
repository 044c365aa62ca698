//! `activate`: steps 1 to 4 of the README (validate, lock, recover,
//! check), then the transaction.

use super::options::{Options, Outcome, Target};
use super::recover::{reap_left_hook, recover_pending, Recovery};
use super::transaction::Transaction;
use super::verify::verify;
use crate::config::app::App;
use crate::error::{usage, Error, Result};
use crate::fs::dir::Dir;
use crate::host::cancel::Cancel;
use crate::host::services::ServiceManager;
use crate::log;
use crate::state::history;
use crate::state::lock::{self, Holder};
use crate::state::pending;

/// Run the whole transaction for `target`.
pub fn activate(
    app: &App,
    target: &Target,
    opts: &Options,
    services: &mut dyn ServiceManager,
    cancel: &Cancel,
) -> Result<Outcome> {
    let started = std::time::Instant::now();
    // 1. Validate everything that can be validated without the lock, so bad
    //    input fails before anything (even .releasectl/) is created.
    let state_ro = app.state_dir(false)?;
    let planned = resolve(app, target, state_ro.as_ref())?;
    app.root.check_release(&planned)?;
    let current = app.root.current()?;
    check_expected(opts.expect_current.as_deref(), &current)?;
    if opts.refuse_bad && history::summary(state_ro.as_ref())?.bad.contains(&planned) {
        return Err(usage(format!(
            "{}: release {planned} is marked bad (its latest activation failed, see \
             `releasectl history`); not activating it again; fix it, or activate it without \
             --refuse-bad",
            app.label()
        )));
    }
    if opts.dry_run {
        return dry_run(&app.root, state_ro.as_ref(), planned, current);
    }
    drop(state_ro);

    // 2. Take the lock: from here on we are the only activation of this app.
    let state = app.state_dir(true)?.expect("state dir created");
    // Quiet: an activation of the release already active writes nothing
    // under ROOT, not even the lock file; it is told before any change.
    let mut lock = lock::acquire_quiet(
        &app.root,
        &state,
        &Holder::me(&planned),
        opts.lock_timeout,
        cancel,
    )?;
    history::check_writable(&state)?;
    reap_left_hook(app, &state)?;
    let run = Run {
        app,
        target,
        opts,
        state: &state,
        started,
    };
    under_lock(run, &mut lock, services, cancel)
}

/// What [`under_lock`] carries on with.
struct Run<'a> {
    app: &'a App,
    target: &'a Target,
    opts: &'a Options,
    state: &'a Dir,
    started: std::time::Instant,
}

/// Steps 3 and 4, then the transaction, with the lock held.
fn under_lock(
    run: Run<'_>,
    lock: &mut lock::Lock,
    services: &mut dyn ServiceManager,
    cancel: &Cancel,
) -> Result<Outcome> {
    let Run {
        app,
        target,
        opts,
        state,
        started,
    } = run;
    // 3. Finish an interrupted activation before starting ours. Whatever
    //    the recovery found, the units may still run the interrupted
    //    release: killed after the swap, `current` is moved back here; after
    //    a failed rollback (exit 12) `current` is back already but the units'
    //    rollback jobs failed. So they are redone below even when the target
    //    is already current.
    let mut recovered = false;
    if let Some(p) = pending::read(Some(state))? {
        lock.announce()?;
        recovered = matches!(recover_pending(app, state, &p)?, Recovery::Restored { .. });
        // Blue/green: the front may still name the interrupted release's
        // instance; front the one that runs the restored release first.
        if let (true, Some(bg)) = (recovered, &app.config.bluegreen) {
            super::bluegreen::restore(app, bg, p.from.as_deref(), services).map_err(|e| {
                Error::operational(format_args!("{}: restored, but {e:#}", app.label()))
            })?;
        }
    }

    // 4. Check again under the lock: another activation may have run
    //    meanwhile. The release is opened here once; hooks and health
    //    checks run in this very directory, whatever its name means later.
    let to = resolve(app, target, Some(state))?;
    let release = app.root.open_release(&to)?;
    let from = app.root.current()?;
    check_expected(opts.expect_current.as_deref(), &from)?;
    let label = app.label();
    if from.as_deref() == Some(to.as_str()) && !opts.force && !recovered {
        log::info(&format!("{label}: {to} is already active"));
        return Ok(Outcome::AlreadyActive { release: to });
    }
    lock.announce()?;
    if opts.verify || app.config.verify {
        verify(app, state, &from, &to, &release)?;
    }

    let action = if recovered && from.as_deref() == Some(to.as_str()) {
        "recover"
    } else if opts.mark_from_bad || *target == Target::PreviousGood {
        "rollback"
    } else {
        "activate"
    };
    let tx = Transaction {
        app,
        state,
        from,
        to,
        release,
        opts,
        services,
        cancel,
        recovered,
        units_touched: false,
        started,
        action,
        interrupted: None,
        root_key: lock::key(&app.root)?,
        bg: None,
    };
    tx.run()
}

fn resolve(app: &App, target: &Target, state: Option<&Dir>) -> Result<String> {
    match target {
        Target::Release(id) => Ok(id.clone()),
        Target::PreviousGood => {
            let summary = history::summary(state)?;
            let current = app.root.current()?;
            summary
                .rollback_target(current.as_deref(), |id| app.root.check_release(id).is_ok())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::operational(format_args!(
                        "{}: no earlier good release to roll back to",
                        app.label()
                    ))
                })
        }
    }
}

/// `--expect-current`: exit 2, nothing changed, unless `current` is `want`
/// (`''`: unless there is no current).
pub fn check_expected(want: Option<&str>, current: &Option<String>) -> Result<()> {
    let Some(want) = want else { return Ok(()) };
    let expected = Some(want).filter(|w| !w.is_empty());
    if current.as_deref() == expected {
        return Ok(());
    }
    Err(usage(format!(
        "current is {}, not {} as --expect-current requires; nothing changed",
        current.as_deref().unwrap_or("(none)"),
        expected.unwrap_or("(none)")
    )))
}

fn dry_run(
    root: &crate::fs::root::RootDir,
    state: Option<&Dir>,
    to: String,
    from: Option<String>,
) -> Result<Outcome> {
    if let Some(h) = lock::current_holder(root, state)? {
        log::warn(&format!("the lock is held right now by {h}"));
    }
    if pending::read(state)?.is_some() {
        log::warn("an interrupted activation would be recovered first");
    }
    if from.as_deref() == Some(to.as_str()) {
        return Ok(Outcome::AlreadyActive { release: to });
    }
    Ok(Outcome::WouldActivate { from, to })
}
