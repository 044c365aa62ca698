//! The transaction itself, once `activate` has locked, recovered and
//! checked: pre_activate hooks, the intent record, the swap and post_swap
//! hooks, the units, the health check, post_activate hooks, and the commit
//! or the rollback (README, steps 5 to 10).

use super::bluegreen::{self, Slots};
use super::options::{Options, Outcome, Step};
use crate::config::app::App;
use crate::config::{Action, BlueGreen, Health};
use crate::error::{Error, Kind, Result, Switch, Undone};
use crate::fs::dir::Dir;
use crate::host::cancel::Cancel;
use crate::host::services::ServiceManager;
use crate::host::{health, notify, process};
use crate::log;
use crate::state::history::{self, Entry, Event};
use crate::state::journal;
use crate::state::lock;
use crate::state::pending::{self, Pending};
use anyhow::Context;
use std::time::Duration;

pub(super) struct Transaction<'a> {
    pub(super) app: &'a App,
    pub(super) state: &'a Dir,
    pub(super) from: Option<String>,
    pub(super) to: String,
    /// `releases/<to>` as checked: the working directory of hooks and checks.
    pub(super) release: Dir,
    pub(super) opts: &'a Options,
    pub(super) services: &'a mut dyn ServiceManager,
    pub(super) cancel: &'a Cancel,
    /// An interrupted activation was undone just before this one.
    pub(super) recovered: bool,
    /// Whether the units were asked to act for `to`: only then does the
    /// rollback act on them again (a post_swap failure reloads nothing).
    pub(super) units_touched: bool,
    /// When the activation began, for the duration recorded.
    pub(super) started: std::time::Instant,
    /// Why it runs, for hooks and health commands (`RELEASECTL_ACTION`):
    /// `activate`, `rollback`, or `recover` (the restored release redone
    /// after an interrupted activation was undone).
    pub(super) action: &'static str,
    /// The signal that interrupted it: recorded with the rollback or abort,
    /// so that `to` is not marked bad (it was stopped, not refused).
    pub(super) interrupted: Option<&'static str>,
    /// ROOT's device-inode, the prefix of the hooks' process marks.
    pub(super) root_key: String,
    /// Blue/green: how far the switch of instances got, for the rollback.
    pub(super) bg: Option<BgSwitch>,
}

/// How far a blue/green switch got: the rollback undoes exactly that.
pub(super) struct BgSwitch {
    slots: Slots,
    /// The idle slot's instance was (re)started for `to`.
    started: bool,
    /// The front names the idle slot.
    fronted: bool,
}

impl Transaction<'_> {
    pub(super) fn run(mut self) -> Result<Outcome> {
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
            return Err(self.failed(reason, Undone::NothingChanged));
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
                    // Blue/green switched instances all the same.
                    self.retire_old_instance();
                    Ok(Outcome::Activated {
                        from: self.from.clone(),
                        to: self.to.clone(),
                    })
                }
                Err(why) => {
                    self.undo_forced_switch();
                    Err(self.failed(format!("{why:#}"), Undone::StillLive))
                }
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
        let app = self.app;
        if !self.opts.no_reload {
            if let Some(bg) = &app.config.bluegreen {
                self.blue_green_up(bg)?;
            }
            self.units_touched = !self.app.config.services.units.is_empty();
            self.act_on_units(&self.to.clone(), self.cancel.clone())?;
        }
        self.cancel.check()?;
        let health = &self.app.config.health;
        // Blue/green gates the new instance on its own port, before the
        // front names it (the URL has {port}).
        if health.is_configured() && !self.opts.no_health && app.config.bluegreen.is_none() {
            notify::status(&format!("{}: checking health", self.arrow()));
            notify::extend_timeout(health.timeout + Duration::from_secs(10));
            let cwd = self.release.proc_path();
            self.health_check(health, &self.to, &cwd, self.env(), self.cancel)?;
        }
        Ok(self.cancel.check()?)
    }

    /// Blue/green, steps 8 and 9 for the app's own instances: the idle
    /// slot's link names `to`, its instance is restarted and gated on its
    /// own port, and only then does the front name it. The live instance
    /// is not touched: a failure here leaves it serving.
    fn blue_green_up(&mut self, bg: &BlueGreen) -> Step {
        let app = self.app;
        let slots = bluegreen::slots(bg).map_err(|e| anyhow::anyhow!(e.one_line()))?;
        let idle = slots.idle.clone();
        self.bg = Some(BgSwitch {
            slots,
            started: false,
            fronted: false,
        });
        app.root
            .point_slot(&idle, &self.to)
            .map_err(|e| anyhow::anyhow!(e.one_line()))?;
        let unit = bg.instance(&idle);
        let what = format!("{}: restart {unit} for {}", app.label(), self.to);
        notify::status(&what);
        log::info(&what);
        self.bg_mut().started = true;
        let timeout = app.config.services.timeout;
        self.services
            .apply(&unit, Action::Restart, timeout, self.cancel)?;
        let health = &app.config.health;
        if health.is_configured() && !self.opts.no_health {
            let port = bg.port(&idle).expect("a configured slot").to_string();
            let mut on_idle = health.clone();
            on_idle.url = on_idle.url.map(|u| u.replace("{port}", &port));
            notify::status(&format!("{}: checking health of {unit}", self.arrow()));
            notify::extend_timeout(health.timeout + Duration::from_secs(10));
            let cwd = self.release.proc_path();
            self.health_check(&on_idle, &self.to, &cwd, self.env(), self.cancel)?;
        }
        self.cancel.check()?;
        self.bg_mut().fronted = true;
        bluegreen::front(app, bg, &idle, self.services, self.cancel)
    }

    fn bg_mut(&mut self) -> &mut BgSwitch {
        self.bg.as_mut().expect("a blue/green switch under way")
    }

    /// Undo what [`Self::blue_green_up`] did: the front back on the live
    /// slot (reloaded), the idle instance stopped. Runs to the end whatever
    /// signal arrives.
    fn blue_green_down(&mut self) -> anyhow::Result<()> {
        let (Some(bg), Some(state)) = (&self.app.config.bluegreen, self.bg.take()) else {
            return Ok(());
        };
        let mut result = Ok(());
        if state.fronted {
            if let Some(live) = &state.slots.live {
                result = bluegreen::front(self.app, bg, live, self.services, &Cancel::never());
                bluegreen::drain(self.app, bg, &state.slots.idle);
            }
        }
        if state.started {
            bluegreen::retire(self.app, bg, &state.slots.idle, self.services);
        }
        result
    }

    /// A failed activation of the live release (forced, or redone after a
    /// recovery): `current` stays, but a blue/green switch is undone as in
    /// a rollback, so the instance that served (never stopped) serves
    /// again and the new one stops. Unless the front named no slot before:
    /// then the new instance, once fronted, is the only one it names.
    fn undo_forced_switch(&mut self) {
        if self
            .bg
            .as_ref()
            .is_some_and(|s| s.fronted && s.slots.live.is_none())
        {
            return;
        }
        if let Err(e) = self.blue_green_down() {
            log::warn(&format!("{}: {e:#}", self.app.label()));
        }
    }

    /// After the commit: the instance that served before drains (until its
    /// connections are closed, `drain` at most), then is stopped. Best effort: the activation stands, and
    /// `recover` stops an instance left running.
    fn retire_old_instance(&mut self) {
        let (Some(bg), Some(state)) = (&self.app.config.bluegreen, self.bg.take()) else {
            return;
        };
        let Some(old) = state.slots.live.filter(|l| *l != state.slots.idle) else {
            return;
        };
        bluegreen::drain(self.app, bg, &old);
        bluegreen::retire(self.app, bg, &old, self.services);
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
        self.retire_old_instance();
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
        // Blue/green first: the front back on the old instance, which was
        // never stopped, then the new one stopped.
        let instances = self.blue_green_down();
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
        if let Err(rb) = instances.and(restored).and(services) {
            let reason = format!("{why}; rollback failed: {rb:#}");
            if let Err(e) = self.record(Event::RollbackFailed, Some(&reason)) {
                log::error(&format!(
                    "cannot record the failed rollback: {}",
                    e.one_line()
                ));
            }
            notify::status(&format!("{arrow}: ROLLBACK FAILED: {rb:#}"));
            return Err(Error::RollbackFailed {
                switch: Box::new(self.switch()),
                reason: why.to_string(),
                rollback: format!("{rb:#}"),
                live: self.app.root.current().ok().flatten(),
            });
        }
        if let Err(e) = self.record(Event::RolledBack, Some(why)) {
            // `from` is live and its units redone; only the record is
            // missing. The intent stays, so the next run records the
            // interruption once the disk takes writes again.
            return Err(self.failed(why, Undone::RolledBackUnrecorded(e.one_line())));
        }
        pending::remove(self.state)?;
        notify::status(&format!(
            "{}: {back} active again; {} failed: {why}",
            self.app.label(),
            self.to
        ));
        Err(self.failed(why, Undone::RolledBack))
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
        self.health_check(health, from, &release.proc_path(), env, &Cancel::never())
            .with_context(|| format!("{from} after the rollback"))
    }

    /// The health gate for `release`, its command marked and recorded like
    /// a hook, so what it leaves behind a SIGKILLed releasectl is reaped
    /// by `recover` (see [`pending::HOOK_FILE`]).
    fn health_check(
        &self,
        health: &Health,
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
        let checked = health::wait_healthy(health, release, cwd, &env, cancel);
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
        let failed = [Kind::ActivationFailed, Kind::RollbackFailed];
        if hooks.is_empty() || !failed.contains(&e.kind()) {
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
        self.switch().to_string()
    }

    /// This activation, as its errors name it.
    fn switch(&self) -> Switch {
        Switch {
            app: self.app.subject(),
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }

    /// The activation failed for `reason` (exit 11); `undone` says what
    /// became of it.
    fn failed(&self, reason: impl Into<String>, undone: Undone) -> Error {
        Error::ActivationFailed {
            switch: Some(Box::new(self.switch())),
            reason: reason.into(),
            undone,
        }
    }
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
pub(super) fn publish_live(app: &App, to: &str, from: Option<&str>) {
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
