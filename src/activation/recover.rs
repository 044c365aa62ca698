//! Recovery from an activation that was interrupted (a SIGKILL, a crash,
//! a reboot): `releasectl recover`, and step 3 of every activation.

use super::transaction::act_on_units;
use crate::config::app::App;
use crate::error::{Error, Result};
use crate::fs::dir::Dir;
use crate::host::cancel::Cancel;
use crate::host::services::ServiceManager;
use crate::log;
use crate::state::history::{self, Entry, Event};
use crate::state::journal;
use crate::state::lock::{self, Holder};
use crate::state::pending::{self, Pending};
use std::time::Duration;

/// `releasectl recover`: under the lock, finish an interrupted activation
/// of `app` if there is one, and redo its units for the restored release
/// (unless `no_reload`: the boot unit, before services start). `connect`
/// is called only when units are to be acted on. `Ok(true)`: something
/// was recovered.
pub fn recover(
    app: &App,
    no_reload: bool,
    lock_timeout: Duration,
    connect: impl FnOnce(&App) -> Result<Box<dyn ServiceManager>>,
) -> Result<bool> {
    let Some(state) = app.state_dir(false)? else {
        return Ok(false);
    };
    let _lock = lock::acquire(
        &app.root,
        &state,
        &Holder::me("(recover)"),
        lock_timeout,
        &Cancel::never(),
    )?;
    let reaped = reap_left_hook(app, &state)?;
    let Some(p) = pending::read(Some(&state))? else {
        if !reaped {
            log::info(&format!("{}: nothing to recover", app.label()));
        }
        if no_reload {
            refront_at_boot(app)?;
        } else {
            settle_instances(app, connect)?;
        }
        return Ok(false);
    };
    // Redo the units whenever an intent was found, moved or not: after a
    // failed rollback (exit 12) `current` is back already, but the units
    // still have to pick it up.
    let recovered = recover_pending(app, &state, &p)? != Recovery::AlreadyRecorded;
    if recovered && !no_reload {
        let mut services = connect(app)?;
        let release = p.from.as_deref().unwrap_or("(none)");
        act_on_units(app, services.as_mut(), release, &Cancel::never())
            .map_err(|e| Error::operational(format_args!("{}: restored, but {e}", app.label())))?;
        if app.config.bluegreen.is_some() {
            settle_instances(app, |_| Ok(services))?;
        }
    } else if !no_reload {
        // Recorded already (killed between the commit's record and the
        // intent's removal): the blue/green instances may still be two.
        settle_instances(app, connect)?;
    } else if app.config.bluegreen.is_some() {
        refront_at_boot(app)?;
    } else if recovered && !app.config.services.units.is_empty() {
        // The boot unit: services have not started yet and will start on the
        // restored release. Run by hand on a live system, say what is left.
        log::warn(&format!(
            "{}: units not acted on (--no-reload); if they are running, run \
             `releasectl activate --force {}:{}`",
            app.label(),
            app.name.as_deref().unwrap_or(""),
            p.from.as_deref().unwrap_or("RELEASE")
        ));
    }
    Ok(recovered)
}

/// Blue/green: front the slot that runs `current` (after a recovery, the
/// restored release), make sure it runs, and stop the other: an activation
/// killed at any instant, even while the old instance drained, leaves one.
fn settle_instances(
    app: &App,
    connect: impl FnOnce(&App) -> Result<Box<dyn ServiceManager>>,
) -> Result<()> {
    let Some(bg) = &app.config.bluegreen else {
        return Ok(());
    };
    let mut services = connect(app)?;
    let live = app.root.current()?;
    super::bluegreen::restore(app, bg, live.as_deref(), services.as_mut())
        .map_err(|e| Error::operational(format_args!("{}: {e:#}", app.label())))
}

/// Blue/green under the boot unit (`--no-reload`), before the front and
/// the instances start: the front names the slot that runs `current`,
/// also after a kill between a recovery and its settling of the instances.
fn refront_at_boot(app: &App) -> Result<()> {
    match &app.config.bluegreen {
        Some(bg) => super::bluegreen::refront_at_boot(app, bg, app.root.current()?.as_deref()),
        None => Ok(()),
    }
}

/// Kill what is left of a hook whose releasectl was killed (`kill -9`
/// during a hook), and say so; the caller holds the lock. `true`: a hook
/// was found.
pub(super) fn reap_left_hook(app: &App, state: &Dir) -> Result<bool> {
    let Some(r) = pending::reap_hook(state, &lock::key(&app.root)?)? else {
        return Ok(false);
    };
    let label = app.label();
    let hook = &r.command;
    log::warn(&if r.killed.is_empty() {
        format!("{label}: hook `{hook}` of an interrupted activation had ended by itself")
    } else {
        let pids: Vec<String> = r.killed.iter().map(u32::to_string).collect();
        format!(
            "{label}: killed what was left of hook `{hook}` of an interrupted activation \
             (process group {}: pid {})",
            r.pgid,
            pids.join(", ")
        )
    });
    Ok(true)
}

/// Restore the `from` of an interrupted activation and record it. Services
/// are not touched here: at boot they have not started yet, and inside an
/// activation step 8 follows anyway (also when the restored release is the
/// target: see `recovered` in `activate`).
///
/// If the history already holds this activation's outcome, the process died
/// between recording it and removing the intent: the outcome stands and only
/// the stale record goes. This is also why removing `pending.json` needs no
/// fsync: a resurrected record is recognised here.
pub fn recover_pending(app: &App, state: &Dir, p: &Pending) -> Result<Recovery> {
    if outcome_recorded(state, p)? {
        log::info(&format!(
            "{}: outcome of the activation to {} already recorded; clearing its intent record",
            app.label(),
            p.to
        ));
        pending::remove(state)?;
        return Ok(Recovery::AlreadyRecorded);
    }
    app.root.remove_stale_temp_links()?;
    let moved = app.root.current()? != p.from;
    if moved {
        match &p.from {
            Some(from) => app.root.swap_current(from)?,
            None => app.root.remove_current()?,
        }
    }
    let reason = format!(
        "activation by pid {} started {} was interrupted; restored {}",
        p.pid,
        p.started,
        p.from.as_deref().unwrap_or("(no current)")
    );
    log::warn(&format!("{}: {reason}", app.label()));
    let entry = Entry::new(
        Event::Recovered,
        app.name.as_deref(),
        p.from.as_deref(),
        Some(&p.to),
    )
    .with_reason(reason);
    let entry = Entry {
        live: p.from.clone(),
        ..entry
    };
    history::append(state, &entry)?;
    journal::record(&entry);
    pending::remove(state)?;
    Ok(Recovery::Restored { moved })
}

/// What [`recover_pending`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The interrupted run had recorded its outcome; only its intent was left.
    AlreadyRecorded,
    /// `from` was restored and `recovered` recorded; `moved`: `current` changed.
    Restored { moved: bool },
}

/// Whether the activation `p` describes already appended its outcome.
fn outcome_recorded(state: &Dir, p: &Pending) -> Result<bool> {
    let mut found = false;
    history::for_each(state, p.history_offset, |e| {
        found |= e.pid == p.pid
            && e.to.as_deref() == Some(p.to.as_str())
            && matches!(
                e.event,
                Event::Activated | Event::Reverted | Event::RolledBack
            );
    })?;
    Ok(found)
}
