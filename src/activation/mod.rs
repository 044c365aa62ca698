//! The activation transaction, in the order of the README's numbered steps
//! (validate, lock, recover, check, pre_activate hooks, intent, swap and
//! post_swap hooks, units, health, post_activate hooks, commit).
//! It ends committed or rolled back, never half-done; a SIGKILL at any
//! instant leaves `pending.json` for the next run to finish.
//!
//! The `activation` layer: this transaction and `recover`. Verifying a
//! release against its record lives with the record
//! ([`crate::state::record::verify`]). May import state, host, config, fs
//! and the base modules; never staging or cli.

use crate::config::app::App;
use crate::error::{usage, Error, Result};
use crate::fs::dir::Dir;
use crate::host::cancel::Cancel;
use crate::host::services::ServiceManager;
use crate::host::{health, notify, process};
use crate::log;
use crate::state::history;
use crate::state::history::{Entry, Event};
use crate::state::journal;
use crate::state::lock;
use crate::state::lock::Holder;
use crate::state::pending;
use crate::state::pending::Pending;
use anyhow::Context;
use std::time::Duration;

/// A step of the transaction after validation: a hook, the units, the
/// health check. Its error says why, with context; it becomes the reason
/// of the rollback (and of the exit status 11 or 12), never an exit status
/// of its own.
type Step = anyhow::Result<()>;

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

    // 3. Finish an interrupted activation before starting ours. Whatever
    //    the recovery found, the units may still run the interrupted
    //    release: killed after the swap, `current` is moved back here; after
    //    a failed rollback (exit 12) `current` is back already but the units'
    //    rollback jobs failed. So they are redone below even when the target
    //    is already current.
    let mut recovered = false;
    if let Some(p) = pending::read(Some(&state))? {
        lock.announce()?;
        recovered = matches!(recover_pending(app, &state, &p)?, Recovery::Restored { .. });
    }

    // 4. Check again under the lock: another activation may have run
    //    meanwhile. The release is opened here once; hooks and health
    //    checks run in this very directory, whatever its name means later.
    let to = resolve(app, target, Some(&state))?;
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
        verify(app, &state, &from, &to, &release)?;
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
        state: &state,
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
    };
    tx.run()
}

struct Transaction<'a> {
    app: &'a App,
    state: &'a Dir,
    from: Option<String>,
    to: String,
    /// `releases/<to>` as checked: the working directory of hooks and checks.
    release: Dir,
    opts: &'a Options,
    services: &'a mut dyn ServiceManager,
    cancel: &'a Cancel,
    /// An interrupted activation was undone just before this one.
    recovered: bool,
    /// Whether the units were asked to act for `to`: only then does the
    /// rollback act on them again (a post_swap failure reloads nothing).
    units_touched: bool,
    /// When the activation began, for the duration recorded.
    started: std::time::Instant,
    /// Why it runs, for hooks and health commands (`RELEASECTL_ACTION`):
    /// `activate`, `rollback`, or `recover` (the restored release redone
    /// after an interrupted activation was undone).
    action: &'static str,
    /// The signal that interrupted it: recorded with the rollback or abort,
    /// so that `to` is not marked bad (it was stopped, not refused).
    interrupted: Option<&'static str>,
    /// ROOT's device-inode, the prefix of the hooks' process marks.
    root_key: String,
}

impl Transaction<'_> {
    fn run(mut self) -> Result<Outcome> {
        let result = self.transact();
        if let Err(e) = &result {
            self.on_failure(e);
        }
        result
    }

    fn transact(&mut self) -> Result<Outcome> {
        let arrow = self.arrow();
        log::info(&format!("{arrow}: activating"));

        // 5. pre_activate hooks: a failure here changes nothing.
        if let Err(why) = self.hooks("pre_activate", &self.app.config.hooks.pre_activate) {
            self.interrupted = self.cancel.received();
            let reason = format!("{why:#}");
            if let Err(e) = self.record(Event::Aborted, Some(&reason)) {
                log::warn(&format!("cannot record the abort: {}", e.one_line()));
            }
            notify::status(&format!("{arrow}: aborted: {reason}"));
            return Err(Error::ActivationFailed(format!(
                "{arrow}: {reason}; nothing changed"
            )));
        }

        // The current release again (--force, or after a recovery): reload,
        // check and run the post hooks; there is nothing to swap or undo.
        if self.from.as_deref() == Some(self.to.as_str()) {
            return match self.bring_up().and_then(|()| self.post_hooks()) {
                Ok(()) => {
                    let why = if self.recovered {
                        "redone after recovery"
                    } else {
                        "forced"
                    };
                    self.record(Event::Activated, Some(why))?;
                    Ok(Outcome::Activated {
                        from: self.from.clone(),
                        to: self.to.clone(),
                    })
                }
                Err(why) => Err(Error::ActivationFailed(format!("{arrow}: {why:#}"))),
            };
        }

        // 6. Intent record, durable before `current` changes.
        pending::write(
            self.state,
            &Pending {
                from: self.from.clone(),
                to: self.to.clone(),
                pid: std::process::id(),
                started: crate::clock::now_rfc3339(),
                history_offset: history::size(self.state)?,
            },
        )?;

        // 7. The swap itself.
        if let Err(e) = self.app.root.swap_current(&self.to) {
            // rename(2) is all or nothing, but the fsync after it can fail
            // with the new link in place: look before deciding.
            if self.app.root.current().ok().flatten().as_deref() == Some(self.to.as_str()) {
                return self.roll_back(&e.one_line());
            }
            pending::remove(self.state)?;
            return Err(e);
        }

        // 8–10. Services, health, post hooks; any failure or signal rolls back.
        match self.bring_up().and_then(|()| self.post_hooks()) {
            Ok(()) => self.commit(),
            Err(why) => {
                // A signal makes every step fail (a hook or check killed, a
                // job abandoned); the failure is then the signal's.
                self.interrupted = self.cancel.received();
                self.roll_back(&format!("{why:#}"))
            }
        }
    }

    /// post_swap hooks, then steps 8 and 9.
    fn bring_up(&mut self) -> Step {
        self.cancel.check()?;
        // `current` names the new release now, so a check of the service
        // configuration it ships (`nginx -t`) sees the new one, and its
        // failure rolls back before any unit is reloaded onto it.
        self.hooks("post_swap", &self.app.config.hooks.post_swap)?;
        if !self.opts.no_reload {
            self.units_touched = !self.app.config.services.units.is_empty();
            self.act_on_units(&self.to.clone(), self.cancel.clone())?;
        }
        self.cancel.check()?;
        let health = &self.app.config.health;
        if health.is_configured() && !self.opts.no_health {
            notify::status(&format!("{}: checking health", self.arrow()));
            notify::extend_timeout(health.timeout + Duration::from_secs(10));
            let cwd = self.release.proc_path();
            self.health_check(&self.to, &cwd, self.env(), self.cancel)?;
        }
        Ok(self.cancel.check()?)
    }

    /// Step 10.
    fn post_hooks(&mut self) -> Step {
        self.hooks("post_activate", &self.app.config.hooks.post_activate)?;
        Ok(self.cancel.check()?)
    }

    /// Step 11.
    fn commit(&mut self) -> Result<Outcome> {
        // Committed means recorded. If the record cannot be written (disk
        // full, I/O error), the activation is undone rather than left live
        // and undecided for the next run to revert silently.
        // `rollback` leaves its `from` bad in the same record.
        let event = match self.from.as_deref() {
            Some(from) if self.opts.mark_from_bad && from != self.to => Event::Reverted,
            _ => Event::Activated,
        };
        if let Err(e) = self.record(event, None) {
            let why = format!("recording the outcome failed: {}", e.one_line());
            return self.roll_back(&why);
        }
        // Recorded: a leftover intent is recognised as such by the next run.
        if let Err(e) = pending::remove(self.state) {
            log::warn(&e.one_line());
        }
        publish_live(self.app, &self.to, self.from.as_deref());
        let msg = format!("{}: {} active", self.app.label(), self.to);
        notify::status(&msg);
        log::info(&format!("{}: committed", self.arrow()));
        Ok(Outcome::Activated {
            from: self.from.clone(),
            to: self.to.clone(),
        })
    }

    /// Put `from` back the same atomic way, redo the services for it, record why.
    fn roll_back(&mut self, why: &str) -> Result<Outcome> {
        let arrow = self.arrow();
        let back = self.from.clone().unwrap_or_else(|| "(none)".into());
        log::error(&format!("{arrow}: {why}; rolling back to {back}"));
        notify::status(&format!("{arrow}: failed ({why}); rolling back"));
        let restored = match &self.from {
            Some(from) => self.app.root.swap_current(from),
            None => self.app.root.remove_current(),
        }
        .map_err(|e| anyhow::anyhow!(e.one_line()));
        // The rollback must finish even if another signal arrives.
        let services = match (&restored, &self.from) {
            (Ok(()), Some(from)) if self.units_touched => {
                let from = from.clone();
                self.act_on_units(&from, Cancel::never())
                    .and_then(|()| self.recheck(&from))
            }
            _ => Ok(()),
        };
        if let Err(rb) = restored.and(services) {
            let reason = format!("{why}; rollback failed: {rb:#}");
            if let Err(e) = self.record(Event::RollbackFailed, Some(&reason)) {
                log::error(&format!(
                    "cannot record the failed rollback: {}",
                    e.one_line()
                ));
            }
            notify::status(&format!("{arrow}: ROLLBACK FAILED: {rb:#}"));
            return Err(Error::RollbackFailed(format!(
                "{arrow}: {reason}. MANUAL ATTENTION NEEDED: `current` points to {}; \
                 fix the cause, then run `releasectl recover` (pending.json kept)",
                self.app
                    .root
                    .current()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "nothing".into())
            )));
        }
        if let Err(e) = self.record(Event::RolledBack, Some(why)) {
            // `from` is live and its units redone; only the record is
            // missing. The intent stays, so the next run records the
            // interruption once the disk takes writes again.
            return Err(Error::ActivationFailed(format!(
                "{arrow}: {why}; rolled back to {back}, but the outcome could not be \
                 recorded ({}); pending.json kept for the next run",
                e.one_line()
            )));
        }
        pending::remove(self.state)?;
        notify::status(&format!(
            "{}: {back} active again; {} failed: {why}",
            self.app.label(),
            self.to
        ));
        Err(Error::ActivationFailed(format!(
            "{arrow}: {why}; rolled back to {back}"
        )))
    }

    /// The rollback's own health check: the units were redone for `from`,
    /// and the same gate that refused `to` must now see `from` answer (with
    /// `expect`, its own answer, not a worker still running `to`). Without
    /// that the restored release is not known to serve: the rollback failed.
    fn recheck(&self, from: &str) -> Step {
        let health = &self.app.config.health;
        if !health.is_configured() || self.opts.no_health {
            return Ok(());
        }
        notify::status(&format!("{}: checking health of {from}", self.app.label()));
        notify::extend_timeout(health.timeout + Duration::from_secs(10));
        let release = self
            .app
            .root
            .open_release(from)
            .map_err(|e| anyhow::anyhow!(e.one_line()))?;
        let mut env = self.env();
        for (key, value) in env.iter_mut() {
            match *key {
                "RELEASECTL_RELEASE" => *value = from.to_string(),
                "RELEASECTL_PREVIOUS" => *value = self.to.clone(),
                "RELEASECTL_ACTION" => *value = "rollback-of-failed".into(),
                _ => {}
            }
        }
        self.health_check(from, &release.proc_path(), env, &Cancel::never())
            .with_context(|| format!("{from} after the rollback"))
    }

    /// The health gate for `release`, its command marked and recorded like
    /// a hook, so what it leaves behind a SIGKILLed releasectl is reaped
    /// by `recover` (see [`pending::HOOK_FILE`]).
    fn health_check(
        &self,
        release: &str,
        cwd: &std::path::Path,
        mut env: Vec<(&'static str, String)>,
        cancel: &Cancel,
    ) -> anyhow::Result<()> {
        let token = pending::hook_token(&self.root_key);
        env.push((pending::HOOK_ID_VAR, token.clone()));
        let hook = pending::RunningHook {
            pgid: 0,
            token,
            command: "health check".into(),
        };
        if let Err(e) = pending::hook_started(self.state, &hook) {
            log::warn(&format!("cannot record the health check: {}", e.one_line()));
        }
        let checked = health::wait_healthy(&self.app.config.health, release, cwd, &env, cancel);
        if let Err(e) = pending::hook_ended(self.state) {
            log::warn(&format!("cannot clear the hook record: {}", e.one_line()));
        }
        checked
    }

    fn act_on_units(&mut self, release: &str, cancel: Cancel) -> Step {
        act_on_units(self.app, self.services, release, &cancel)
    }

    fn hooks(&self, phase: &'static str, hooks: &[Vec<String>]) -> Step {
        for argv in hooks {
            self.cancel.check()?;
            notify::status(&format!("{}: {phase} {}", self.arrow(), argv[0]));
            self.hook(phase, argv, Vec::new(), self.cancel)
                .with_context(|| format!("{phase} hook"))?;
        }
        Ok(())
    }

    /// Run one hook with the transaction's environment plus `extra`, its
    /// process group recorded while it runs (see [`pending::HOOK_FILE`]).
    fn hook(
        &self,
        phase: &'static str,
        argv: &[String],
        extra: Vec<(&'static str, String)>,
        cancel: &Cancel,
    ) -> anyhow::Result<()> {
        let timeout = self.app.config.hooks.timeout;
        notify::extend_timeout(timeout + Duration::from_secs(10));
        let deadline = std::time::Instant::now().checked_add(timeout);
        let token = pending::hook_token(&self.root_key);
        let mut env = self.env();
        env.push(("RELEASECTL_PHASE", phase.to_string()));
        env.push((pending::HOOK_ID_VAR, token.clone()));
        env.extend(extra);
        let mut record = |pgid| {
            let hook = pending::RunningHook {
                pgid,
                token: token.clone(),
                command: process::shell_words(argv),
            };
            if let Err(e) = pending::hook_started(self.state, &hook) {
                log::warn(&format!("cannot record the running hook: {}", e.one_line()));
            }
        };
        // Before it starts (its group is not known yet), then with its group.
        record(0);
        let ran = process::run_tracked(
            argv,
            &self.release.proc_path(),
            &env,
            deadline,
            cancel,
            &mut record,
        );
        if let Err(e) = pending::hook_ended(self.state) {
            log::warn(&format!("cannot clear the hook record: {}", e.one_line()));
        }
        ran
    }

    /// `[hooks] on_failure`, after a failed activation was rolled back or
    /// aborted, or its rollback failed (exit 11 or 12), to notify or page.
    /// Not after an interruption: the operator who stopped it knows. Their
    /// failure is logged and changes nothing, the exit status included.
    fn on_failure(&self, e: &Error) {
        let hooks = &self.app.config.hooks.on_failure;
        let code = e.exit_code();
        let failed = [
            crate::error::exit::ACTIVATION_FAILED,
            crate::error::exit::ROLLBACK_FAILED,
        ];
        if hooks.is_empty() || !failed.contains(&code) {
            return;
        }
        if let Some(sig) = self.cancel.received() {
            log::info(&format!(
                "{}: interrupted by {sig}; on_failure hooks not run",
                self.arrow()
            ));
            return;
        }
        let live = self.app.root.current().ok().flatten().unwrap_or_default();
        let extra = vec![
            ("RELEASECTL_FAILURE", log::clean(&e.one_line()).into_owned()),
            ("RELEASECTL_EXIT", code.to_string()),
            ("RELEASECTL_LIVE", live),
        ];
        for argv in hooks {
            // A second Ctrl-C must not cut the notification of the first failure short.
            if let Err(why) = self.hook("on_failure", argv, extra.clone(), &Cancel::never()) {
                log::warn(&format!("{}: on_failure hook: {why:#}", self.app.label()));
            }
        }
    }

    /// What hooks and health commands find in their environment (see
    /// releasectl.toml(5), ENVIRONMENT).
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RELEASECTL_APP", self.app.name.clone().unwrap_or_default()),
            ("RELEASECTL_RELEASE", self.to.clone()),
            ("RELEASECTL_PREVIOUS", self.from.clone().unwrap_or_default()),
            (
                "RELEASECTL_ROOT",
                self.app.root.path().display().to_string(),
            ),
            ("RELEASECTL_ACTION", self.action.to_string()),
        ]
    }

    fn record(&self, event: Event, reason: Option<&str>) -> Result<()> {
        let mut e = Entry::new(
            event,
            self.app.name.as_deref(),
            self.from.as_deref(),
            Some(&self.to),
        );
        e.reason = reason.map(str::to_string);
        if matches!(event, Event::RolledBack | Event::Aborted) {
            e.interrupted = self.interrupted.map(str::to_string);
        }
        e.live = match event {
            Event::Activated | Event::Reverted => Some(self.to.clone()),
            Event::RolledBack | Event::Aborted => self.from.clone(),
            _ => self.app.root.current().ok().flatten(),
        };
        e.duration_ms = Some(self.started.elapsed().as_millis().min(u64::MAX as u128) as u64);
        // What the release was staged with (`--meta`), if its record says.
        e.meta = self
            .app
            .root
            .releases_dir(false)
            .ok()
            .flatten()
            .and_then(|r| {
                crate::state::record::read_header(&r, &self.to)
                    .ok()
                    .flatten()
            })
            .map(|h| h.meta)
            .unwrap_or_default();
        history::append(self.state, &e)?;
        journal::record(&e);
        Ok(())
    }

    fn arrow(&self) -> String {
        format!(
            "{}: {} → {}",
            self.app.label(),
            self.from.as_deref().unwrap_or("(none)"),
            self.to
        )
    }
}

/// The release as opened must match the manifest recorded when it was
/// staged. A mismatch changes nothing but the history: the attempt is
/// recorded as aborted (so `to` counts as bad) and the exit status is 14.
fn verify(app: &App, state: &Dir, from: &Option<String>, to: &str, release: &Dir) -> Result<()> {
    notify::status(&format!("{}: verifying {to}", app.label()));
    let releases = app
        .root
        .releases_dir(false)?
        .expect("the release was opened in it");
    let why = match crate::state::record::verify::check(&releases, to, release) {
        Ok(diffs) if diffs.matches() => {
            log::info(&format!("{}: {to} matches its manifest", app.label()));
            return Ok(());
        }
        Ok(diffs) => format!("{to} does not match its manifest: {}", diffs.summary()),
        Err(Error::VerifyFailed(why)) => why,
        Err(e) => return Err(e),
    };
    let mut e = Entry::new(
        Event::Aborted,
        app.name.as_deref(),
        from.as_deref(),
        Some(to),
    )
    .with_reason(why.clone());
    e.live = from.clone();
    history::append(state, &e)?;
    journal::record(&e);
    Err(Error::VerifyFailed(format!(
        "{}: {why}; nothing changed (see `releasectl verify`)",
        app.label()
    )))
}

/// Step 8: the configured action on each unit, in order, for `release`.
pub fn act_on_units(
    app: &App,
    services: &mut dyn ServiceManager,
    release: &str,
    cancel: &Cancel,
) -> Step {
    let svc = &app.config.services;
    for unit in &svc.units {
        let what = format!(
            "{}: {} {unit} for {release}",
            app.label(),
            svc.action.as_str()
        );
        notify::status(&what);
        notify::extend_timeout(svc.timeout + Duration::from_secs(10));
        log::info(&what);
        services.apply(unit, svc.action, svc.timeout, cancel)?;
    }
    Ok(())
}

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
        return Ok(false);
    };
    // Redo the units whenever an intent was found, moved or not: after a
    // failed rollback (exit 12) `current` is back already, but the units
    // still have to pick it up.
    let recovered = recover_pending(app, &state, &p)? != Recovery::AlreadyRecorded;
    if recovered && !no_reload {
        let mut services = connect(app)?;
        let release = p.from.as_deref().unwrap_or("(none)");
        act_on_units(app, services.as_mut(), release, &Cancel::never()).map_err(|e| {
            Error::Operational(anyhow::anyhow!("{}: restored, but {e}", app.label()))
        })?;
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

/// Where the live release of each configured app is published for its own
/// units: `APP.env`, root's, 0644, in root's `/run/releasectl/apps/`.
pub const LIVE_DIR: &str = "apps";

/// Write `/run/releasectl/apps/APP.env` (`RELEASECTL_APP=`,
/// `RELEASECTL_RELEASE=`, `RELEASECTL_PREVIOUS=`) once an activation
/// committed, for the app's units (`EnvironmentFile=-/run/releasectl/apps/
/// APP.env`) and anything else that wants the id without reading the link.
/// Nothing is written into the release: it is the deploy user's content, and
/// one copy may be live on one host and staged on another. Best effort (the
/// activation stands either way), root only (`/run/releasectl` is root's),
/// configured apps only (a `--root` activation has no name to file it by).
fn publish_live(app: &App, to: &str, from: Option<&str>) {
    let Some(name) = app.name.as_deref() else {
        return;
    };
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let body = format!(
        "RELEASECTL_APP={name}\nRELEASECTL_RELEASE={to}\nRELEASECTL_PREVIOUS={}\n",
        from.unwrap_or("")
    );
    let written = lock::run_subdir(LIVE_DIR, 0o755, true).and_then(|dir| {
        let dir = dir.expect("created");
        let tmp = format!(".{name}.env.tmp");
        let mut f = dir
            .open_file(&tmp, crate::fs::dir::Access::CreateNew)?
            .expect("created");
        std::io::Write::write_all(&mut f, body.as_bytes())
            .with_context(|| format!("writing {}", dir.shown(&tmp).display()))?;
        drop(f);
        dir.rename(&tmp, &format!("{name}.env"))
    });
    if let Err(e) = written {
        log::warn(&format!(
            "{}: live release not published: {}",
            app.label(),
            e.one_line()
        ));
    }
}

/// Kill what is left of a hook whose releasectl was killed (`kill -9`
/// during a hook), and say so; the caller holds the lock. `true`: a hook
/// was found.
fn reap_left_hook(app: &App, state: &Dir) -> Result<bool> {
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
                    Error::Operational(anyhow::anyhow!(
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

#[cfg(test)]
mod tests;
