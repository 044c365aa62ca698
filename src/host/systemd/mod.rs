//! systemd's service manager over D-Bus (the real [`ServiceManager`]).
//!
//! One job per unit: enqueue it with mode "replace", wait for its
//! `JobRemoved` signal, accept only the result "done", then check the unit
//! is active (and, after a restart, that it is a new invocation).
//!
//! `reload` of a unit that is not running (inactive, or failed) starts it,
//! as `systemctl reload-or-restart` does: a server whose configuration
//! includes `current/` may not have been able to start before the first
//! release was activated, and a reload it cannot take would fail that
//! release. An active unit is reloaded (never restarted: a unit without
//! `ExecReload=` is refused as before).
//!
//! The connection may die under a job: `systemctl restart dbus` takes every
//! client's connection with it, although the bus is back a moment later.
//! Such faults are retried over a fresh connection until the job's timeout
//! is used up; systemd's own answers (no such unit, a failed job, access
//! denied) are final.

use crate::config::Action;
use crate::error::{Error, Result};
use crate::host::cancel::Cancel;
use crate::host::services::ServiceManager;
use crate::log;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use zbus::blocking::Connection;
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_async = false,
    blocking_name = "ManagerProxy"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_or_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::zvariant::ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_async = false,
    blocking_name = "UnitProxy"
)]
trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn can_reload(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn can_start(&self) -> zbus::Result<bool>;
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> zbus::Result<Vec<u8>>;
    #[zbus(property)]
    fn triggered_by(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn requires(&self) -> zbus::Result<Vec<String>>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Socket",
    default_service = "org.freedesktop.systemd1",
    gen_async = false,
    blocking_name = "SocketProxy"
)]
trait Socket {
    #[zbus(property)]
    fn accept(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn backlog(&self) -> zbus::Result<u32>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_async = false,
    blocking_name = "ServiceProxy"
)]
trait Service {
    #[zbus(property)]
    fn user(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn dynamic_user(&self) -> zbus::Result<bool>;
}

/// What a socket unit that triggers a restarted service says about the
/// handover: its listener outlives the restart only with `Accept=no`, and
/// the service must `Requires=` it (else a start of the service alone
/// binds nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    pub socket: String,
    pub accept: bool,
    pub backlog: u32,
    pub required: bool,
}

/// Below this backlog a restart under load refuses connections even with a
/// socket unit: they no longer fit in the queue while the app starts.
const MIN_BACKLOG: u32 = 128;

/// `check`'s word on how a restart treats connections: socket handover
/// (`handover`, the socket units triggering the service) or none.
pub fn handover_verdict(unit: &str, handover: &[Handover]) -> Result<String, String> {
    let Some(h) = handover.first() else {
        return Ok(format!(
            "restarts refuse connections while {unit} starts (no .socket unit holds its \
             listener: see \"Restarts without refused connections\" in the README)"
        ));
    };
    if h.accept {
        return Err(format!(
            "{} has Accept=yes: one process per connection, nothing to hand over; use Accept=no",
            h.socket
        ));
    }
    if !h.required {
        return Err(format!(
            "{unit} does not Requires={}: a start of {unit} alone would not get its listener",
            h.socket
        ));
    }
    if h.backlog < MIN_BACKLOG {
        return Err(format!(
            "{} has Backlog={}: connections arriving while {unit} restarts overflow it; \
             raise it (systemd's default is the kernel's SOMAXCONN)",
            h.socket, h.backlog
        ));
    }
    Ok(format!(
        "listener held by {} (Accept=no, backlog {}): restarts queue connections",
        h.socket, h.backlog
    ))
}

/// A finished job, as announced by `JobRemoved`.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedJob {
    pub job: String,
    pub unit: String,
    pub result: String,
}

/// Opens a fresh connection to replace one that died.
type Reconnect = Box<dyn FnMut() -> zbus::Result<Connection>>;

pub struct Systemd {
    conn: Connection,
    /// Set up on the first `apply`: `check` only reads properties and needs
    /// no subscription.
    jobs: Option<Receiver<FinishedJob>>,
    /// `None` for a connection handed in by [`Systemd::on`]: only its maker
    /// knows how to make another, so its faults are reported, not retried.
    reconnect: Option<Reconnect>,
}

/// The unit as it was before the first attempt at a job: a retried job is
/// judged against this, not against what the lost attempt left behind.
struct Before {
    was_active: bool,
    invocation: Vec<u8>,
}

/// Pauses between attempts over a new connection: a restarted bus is
/// usually back within a second, so start short and stay short.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

impl Systemd {
    /// Connect to the system bus. The subscription to job signals is made
    /// lazily, on the first job.
    pub fn connect() -> Result<Systemd> {
        let conn = Connection::system().map_err(|e| {
            let why = match e {
                zbus::Error::InputOutput(io) => io.to_string(),
                zbus::Error::Failure(text) => text,
                other => other.to_string(),
            };
            Error::operational(format_args!(
                "cannot reach systemd: no system bus (is D-Bus running?): {why}"
            ))
        })?;
        Ok(Systemd::with_reconnect(
            conn,
            Some(Box::new(Connection::system)),
        ))
    }

    /// Use an existing connection (tests hand in a peer-to-peer one). It is
    /// never replaced: a fault on it is reported as it is.
    #[cfg(test)]
    pub fn on(conn: Connection) -> Systemd {
        Systemd::with_reconnect(conn, None)
    }

    fn with_reconnect(conn: Connection, reconnect: Option<Reconnect>) -> Systemd {
        Systemd {
            conn,
            jobs: None,
            reconnect,
        }
    }

    /// Replace the connection by a fresh one. The subscription to job
    /// signals was the old connection's: the next job makes a new one.
    fn reopen(&mut self) -> zbus::Result<()> {
        let reconnect = self
            .reconnect
            .as_mut()
            .expect("only retried with a reconnector");
        let old = std::mem::replace(&mut self.conn, reconnect()?);
        self.jobs = None;
        // Usually dead already; if not (systemd had left a bus that stayed
        // up), closing it ends its signal thread instead of leaving it be.
        let _ = old.close();
        Ok(())
    }

    fn manager(&self) -> zbus::Result<ManagerProxy<'static>> {
        ManagerProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
    }

    fn unit(&self, path: OwnedObjectPath) -> zbus::Result<UnitProxy<'static>> {
        UnitProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
    }

    /// Subscribe and start forwarding `JobRemoved` into a channel, once.
    ///
    /// Order matters: systemd emits job signals only to subscribed clients,
    /// and the bus delivers a signal only once our match rule is in place. A
    /// reload is often finished before the method call that enqueued it has
    /// even returned, so both must be set up *before* the job is enqueued,
    /// or its `JobRemoved` is lost and we would wait for the timeout.
    fn job_signals(&mut self) -> zbus::Result<&Receiver<FinishedJob>> {
        if self.jobs.is_none() {
            let manager = self.manager()?;
            manager.subscribe()?;
            let signals = manager.receive_job_removed()?;
            let (tx, rx) = mpsc::channel();
            // The blocking iterator has no timeout; a thread forwards the
            // signals so the waiting side can poll the cancel token.
            std::thread::Builder::new()
                .name("job-signals".into())
                .spawn(move || {
                    for signal in signals {
                        let Ok(a) = signal.args() else { continue };
                        let done = FinishedJob {
                            job: a.job.to_string(),
                            unit: a.unit.to_string(),
                            result: a.result.to_string(),
                        };
                        if tx.send(done).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| zbus::Error::InputOutput(e.into()))?;
            self.jobs = Some(rx);
        }
        Ok(self.jobs.as_ref().expect("just set"))
    }

    /// [`Systemd::attempt`] until it succeeds, fails for good, or
    /// `timeout` is used up.
    fn try_apply(
        &mut self,
        unit: &str,
        action: Action,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<(), String> {
        let verb = action.as_str();
        let started = Instant::now();
        let mut before = None;
        let mut pause = RETRY_FIRST;
        // The connection died during this job, so a new one is due.
        let mut lost = false;
        loop {
            let result = if lost {
                self.reopen()
                    .map_err(|e| Fault::dbus(&e, unit, verb))
                    .and_then(|()| {
                        self.attempt(unit, action, started, timeout, cancel, &mut before)
                    })
            } else {
                self.attempt(unit, action, started, timeout, cancel, &mut before)
            };
            let fault = match result {
                Ok(()) if lost => {
                    log::info(&format!("{verb} of {unit} done over a new bus connection"));
                    return Ok(());
                }
                Ok(()) => return Ok(()),
                Err(fault) => fault,
            };
            let worth_retrying = match fault.kind {
                FaultKind::Connection => true,
                // Right after a bus restart, systemd joins the new bus a
                // moment after us; on a first connection its absence means
                // it is not PID 1, and waiting would not change that.
                FaultKind::SystemdAbsent => lost,
                FaultKind::Answer => false,
            };
            if !worth_retrying || self.reconnect.is_none() {
                return Err(fault.line);
            }
            if started.elapsed() + pause >= timeout {
                return Err(format!(
                    "{}; still failing {} after the first attempt",
                    fault.line,
                    humantime::format_duration(timeout)
                ));
            }
            if lost {
                log::debug(&format!("{}; retrying", fault.line));
            } else {
                log::warn(&format!(
                    "{}; retrying over a new bus connection",
                    fault.line
                ));
            }
            lost = true;
            sleep(pause, cancel)?;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// One try at the job: enqueue it (again, after a lost connection),
    /// wait for it, check the unit.
    ///
    /// A job enqueued over a connection that then died still runs, but its
    /// `JobRemoved` went with the connection. Enqueuing the same action again
    /// with mode "replace" is safe: systemd merges it into the job still
    /// queued or running, or runs it once more if that one has ended, and
    /// the job path it returns is the one to wait for.
    fn attempt(
        &mut self,
        unit: &str,
        action: Action,
        started: Instant,
        timeout: Duration,
        cancel: &Cancel,
        before: &mut Option<Before>,
    ) -> Result<(), Fault> {
        let verb = action.as_str();
        let fail = |e: zbus::Error| Fault::dbus(&e, unit, verb);
        let manager = self.manager().map_err(fail)?;
        let path = manager.load_unit(unit).map_err(fail)?;
        let proxy = self.unit(path).map_err(fail)?;
        if before.is_none() {
            *before = Some(Before {
                was_active: {
                    let state = proxy.active_state().map_err(fail)?;
                    is_active(&state) || state == "reloading"
                },
                invocation: proxy.invocation_id().map_err(fail)?,
            });
        }
        let before = before.as_ref().expect("just read");

        let jobs = self.job_signals().map_err(fail)?;
        // Signals of jobs that ended before ours was enqueued are not ours.
        while jobs.try_recv().is_ok() {}
        let job = match action {
            // Started, not reloaded: see the module's doc. `before` is kept
            // across a retry, so a retried attempt starts it again (merged
            // by systemd, or a no-op once it runs).
            Action::Reload if !before.was_active => {
                log::info(&format!(
                    "{unit} is not running: starting it instead of a reload"
                ));
                manager.start_unit(unit, "replace")
            }
            Action::Reload => manager.reload_unit(unit, "replace"),
            Action::Restart => manager.restart_unit(unit, "replace"),
            Action::TryRestart => manager.try_restart_unit(unit, "replace"),
            Action::ReloadOrRestart => manager.reload_or_restart_unit(unit, "replace"),
        }
        .map_err(fail)?;
        let result = wait_for_job(jobs, job.as_str(), started, timeout, cancel)
            .map_err(|f| f.context(&format!("{verb} of {unit}")))?;
        if result != "done" {
            let verb = match action {
                Action::Reload if !before.was_active => "start",
                _ => verb,
            };
            return Err(Fault::answer(job_failed(unit, verb, &result)));
        }

        let state = settle(&proxy, started, timeout, cancel).map_err(fail)?;
        if action == Action::TryRestart && !before.was_active {
            // try-restart leaves a stopped unit alone, by definition.
            return Ok(());
        }
        if !is_active(&state) {
            let sub = proxy.sub_state().unwrap_or_default();
            return Err(Fault::answer(format!(
                "{unit} is {state} ({sub}) after {verb}, not active; see `journalctl -u {unit}`"
            )));
        }
        let after = proxy.invocation_id().map_err(fail)?;
        if matches!(action, Action::Restart | Action::TryRestart) && after == before.invocation {
            return Err(Fault::answer(format!(
                "{unit} was not restarted (same invocation id after {verb})"
            )));
        }
        Ok(())
    }

    /// `unit`, loaded, or why not (not found, masked, …).
    fn loaded(&mut self, unit: &str, verb: &str) -> Result<UnitProxy<'static>, String> {
        let fail = |e: zbus::Error| describe(&e, unit, verb);
        let path = self
            .manager()
            .and_then(|m| m.load_unit(unit))
            .map_err(fail)?;
        let proxy = self.unit(path).map_err(fail)?;
        match proxy.load_state().map_err(fail)?.as_str() {
            "loaded" => Ok(proxy),
            "not-found" => Err(format!("unit {unit} not found")),
            "masked" => Err(format!("unit {unit} is masked")),
            other => Err(format!(
                "unit {unit} is {other} (see `systemctl status {unit}`)"
            )),
        }
    }

    fn try_probe(&mut self, unit: &str, action: Action) -> Result<String, String> {
        let verb = action.as_str();
        let fail = |e: zbus::Error| describe(&e, unit, verb);
        let proxy = self.loaded(unit, verb)?;
        let can_reload = proxy.can_reload().map_err(fail)?;
        let can_start = proxy.can_start().map_err(fail)?;
        let state = proxy.active_state().map_err(fail)?;
        let sub = proxy.sub_state().unwrap_or_default();
        let verdict = probe_verdict(unit, action, &state, &sub, can_reload, can_start)?;
        if !matches!(action, Action::Restart | Action::TryRestart) {
            return Ok(verdict);
        }
        let handover = self.handover(&proxy).map_err(fail)?;
        Ok(format!("{verdict}; {}", handover_verdict(unit, &handover)?))
    }

    /// The socket units that trigger the service behind `proxy`.
    fn handover(&self, proxy: &UnitProxy<'static>) -> zbus::Result<Vec<Handover>> {
        let requires = proxy.requires()?;
        let mut found = Vec::new();
        for socket in proxy.triggered_by()? {
            if !socket.ends_with(".socket") {
                continue;
            }
            let path = self.manager()?.load_unit(&socket)?;
            let s = SocketProxy::builder(&self.conn)
                .path(path)?
                .cache_properties(CacheProperties::No)
                .build()?;
            found.push(Handover {
                required: requires.contains(&socket),
                accept: s.accept()?,
                backlog: s.backlog()?,
                socket,
            });
        }
        Ok(found)
    }
}

/// What `check` says of a loaded unit, from its state and abilities: the
/// state as it is (a failed unit is a problem even though the first
/// activation would try to start it), and what the activation will do.
pub fn probe_verdict(
    unit: &str,
    action: Action,
    state: &str,
    sub: &str,
    can_reload: bool,
    can_start: bool,
) -> Result<String, String> {
    let verb = action.as_str();
    let running = is_active(state) || state == "reloading";
    if state == "failed" {
        return Err(format!(
            "{unit} is failed ({sub}); see `systemctl status {unit}`, fix it and `systemctl reset-failed {unit}`"
        ));
    }
    match action {
        Action::Reload if running && !can_reload => Err(no_reload(unit)),
        Action::TryRestart if !running => Ok(format!(
            "{state}: try-restart leaves it stopped (nothing serves the release)"
        )),
        _ if !running && !can_start => Err(format!(
            "{unit} is {state} and cannot be started (RefuseManualStart=?)"
        )),
        _ if !running => Ok(format!("{state}: will be started on the first activation")),
        Action::Reload | Action::ReloadOrRestart if can_reload || can_start => {
            Ok(format!("{state} ({sub}), can {verb}"))
        }
        _ if can_start => Ok(format!("{state} ({sub}), can {verb}")),
        _ => Err(format!("{unit} cannot be restarted (RefuseManualStart=?)")),
    }
}

/// A blue/green instance runs the release's own code: as root only when
/// its unit says so (`User=root`), never for want of a `User=` or
/// `DynamicUser=` (a release never carries root's rights by accident).
pub fn runs_as_verdict(unit: &str, user: &str, dynamic: bool) -> Result<(), String> {
    if user.is_empty() && !dynamic {
        return Err(format!(
            "{unit} runs the release as root: it has no User= or DynamicUser=yes \
             (say User=root if that is meant)"
        ));
    }
    Ok(())
}

/// What `check` says of a blue/green instance in `state`: the fronted one
/// must run (the front sends every request to it); the idle one may be in
/// any state, failed too (the last release it was given did not start):
/// the next activation restarts it.
pub fn instance_verdict(
    unit: &str,
    fronted: bool,
    state: &str,
    sub: &str,
) -> Result<String, String> {
    let running = is_active(state) || state == "reloading";
    match (fronted, running) {
        (true, true) => Ok(format!("{state} ({sub}), fronted: it serves")),
        (true, false) => Err(format!(
            "{unit} is fronted but {state}: the front sends requests to a stopped instance; \
             run `releasectl recover` for the app"
        )),
        (false, true) => Ok(format!(
            "{state} ({sub}), idle: the next activation restarts it, `releasectl recover` stops it"
        )),
        (false, false) if state == "failed" => Ok(format!(
            "failed ({sub}), idle: the last release it was given did not start \
             (`journalctl -u {unit}`); the next activation restarts it"
        )),
        (false, false) => Ok(format!("{state}, idle: the next activation starts it")),
    }
}

impl ServiceManager for Systemd {
    fn probe_instance(&mut self, unit: &str, fronted: bool) -> anyhow::Result<String> {
        let fail = |e: zbus::Error| anyhow::anyhow!(describe(&e, unit, "probe"));
        let proxy = self.loaded(unit, "probe").map_err(anyhow::Error::msg)?;
        let service = ServiceProxy::builder(&self.conn)
            .path(proxy.inner().path().to_owned())
            .and_then(|b| b.build())
            .map_err(fail)?;
        let user = service.user().map_err(fail)?;
        let dynamic = service.dynamic_user().map_err(fail)?;
        runs_as_verdict(unit, &user, dynamic).map_err(anyhow::Error::msg)?;
        let state = proxy.active_state().map_err(fail)?;
        let sub = proxy.sub_state().unwrap_or_default();
        instance_verdict(unit, fronted, &state, &sub).map_err(anyhow::Error::msg)
    }

    fn apply(
        &mut self,
        unit: &str,
        action: Action,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<()> {
        self.try_apply(unit, action, timeout, cancel)
            .map_err(anyhow::Error::msg)
    }

    fn probe(&mut self, unit: &str, action: Action) -> anyhow::Result<String> {
        self.try_probe(unit, action).map_err(anyhow::Error::msg)
    }

    /// One start or stop job, waited for; not retried over a new
    /// connection (a blue/green instance left running is stopped by the
    /// next `recover`).
    fn start_stop(
        &mut self,
        unit: &str,
        start: bool,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<()> {
        let verb = if start { "start" } else { "stop" };
        let fail = |e: zbus::Error| anyhow::anyhow!(describe(&e, unit, verb));
        let started = Instant::now();
        let manager = self.manager().map_err(fail)?;
        let jobs = self.job_signals().map_err(fail)?;
        while jobs.try_recv().is_ok() {}
        let job = if start {
            manager.start_unit(unit, "replace")
        } else {
            manager.stop_unit(unit, "replace")
        }
        .map_err(fail)?;
        let result = wait_for_job(jobs, job.as_str(), started, timeout, cancel)
            .map_err(|f| anyhow::anyhow!("{verb} of {unit}: {}", f.line))?;
        if result != "done" {
            anyhow::bail!(job_failed(unit, verb, &result));
        }
        Ok(())
    }
}

/// How often the wait looks at the cancel token: SIGTERM from `systemctl
/// stop` must start the rollback promptly even while a job hangs.
const POLL: Duration = Duration::from_millis(100);

/// Wait for the `JobRemoved` of `job` and return its result, giving up
/// `timeout` after `started` or as soon as `cancel` fires. Other jobs'
/// signals are skipped.
pub fn wait_for_job(
    jobs: &Receiver<FinishedJob>,
    job: &str,
    started: Instant,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<String, Fault> {
    let deadline = started + timeout;
    loop {
        cancel.check().map_err(|i| Fault::answer(i.into()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fault::answer(format!(
                "job {job} not finished after {}",
                humantime::format_duration(timeout)
            )));
        }
        match jobs.recv_timeout(left.min(POLL)) {
            Ok(done) if done.job == job => return Ok(done.result),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            // The forwarding thread ends when the signal stream does, which
            // is when the connection is gone.
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Fault {
                    kind: FaultKind::Connection,
                    line: "lost the connection to systemd while waiting".into(),
                })
            }
        }
    }
}

/// Sleep for `pause`, in steps short enough to answer `cancel` promptly.
fn sleep(pause: Duration, cancel: &Cancel) -> Result<(), String> {
    let until = Instant::now() + pause;
    loop {
        cancel.check()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(POLL));
    }
}

/// What a failed step of a job says about asking again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The connection is dead (closed by the bus, an I/O error, the job
    /// signals stopped): a fresh connection may well succeed.
    Connection,
    /// systemd has no name on the bus. Right after a bus restart it is on
    /// its way back; otherwise systemd is not PID 1 here.
    SystemdAbsent,
    /// systemd's answer, or anything else a retry would only repeat.
    Answer,
}

/// A failed step of a job: what kind of fault, and one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub line: String,
}

impl Fault {
    pub fn dbus(e: &zbus::Error, unit: &str, verb: &str) -> Fault {
        Fault {
            kind: fault_kind(e),
            line: describe(e, unit, verb),
        }
    }

    fn answer(line: String) -> Fault {
        Fault {
            kind: FaultKind::Answer,
            line,
        }
    }

    fn context(self, what: &str) -> Fault {
        Fault {
            line: format!("{what}: {}", self.line),
            ..self
        }
    }
}

/// Sort a D-Bus error by whether a new connection could help.
pub fn fault_kind(e: &zbus::Error) -> FaultKind {
    match e {
        // Refused by the socket's permissions: a new connection is refused too.
        zbus::Error::InputOutput(io) | zbus::Error::Connection(io, _)
            if io.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            FaultKind::Answer
        }
        // Broken pipe, reset, EOF ("socket closed"), and while the bus
        // restarts, no socket to connect to; or it went away mid-handshake.
        zbus::Error::InputOutput(_) | zbus::Error::Connection(..) | zbus::Error::Handshake(_) => {
            FaultKind::Connection
        }
        zbus::Error::MethodError(name, ..) => fault_kind_of_name(name.as_str()),
        zbus::Error::FDO(f) => {
            use zbus::DBusError;
            fault_kind_of_name(f.name().as_str())
        }
        _ => FaultKind::Answer,
    }
}

/// The bus daemon's errors for a destination that is not there.
fn fault_kind_of_name(name: &str) -> FaultKind {
    match name.rsplit('.').next().unwrap_or(name) {
        "ServiceUnknown" | "NameHasNoOwner" => FaultKind::SystemdAbsent,
        _ => FaultKind::Answer,
    }
}

fn is_active(state: &str) -> bool {
    state == "active"
}

/// States a unit passes through on its way somewhere else.
fn is_transient(state: &str) -> bool {
    matches!(
        state,
        "reloading" | "activating" | "deactivating" | "refreshing"
    )
}

/// The unit's state once it has settled, waiting within the job's time.
/// Apps that share a unit (many sites behind one nginx) activate in
/// parallel: when our job ends, another app's reload may be running on the
/// unit (systemd also merges concurrent reloads into one job), so
/// "reloading" right after our job is not a failure. Only where the unit
/// settles decides; a unit still in transit at the deadline is reported as
/// it is.
fn settle(
    proxy: &UnitProxy<'_>,
    started: Instant,
    timeout: Duration,
    cancel: &Cancel,
) -> zbus::Result<String> {
    loop {
        let state = proxy.active_state()?;
        if !is_transient(&state) || started.elapsed() >= timeout || cancel.check().is_err() {
            return Ok(state);
        }
        std::thread::sleep(SETTLE_POLL);
    }
}

/// How often a unit in transit is looked at again.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// The one line for a job that ended with anything but "done"
/// (results as documented in org.freedesktop.systemd1(5)).
pub fn job_failed(unit: &str, verb: &str, result: &str) -> String {
    let why = match result {
        "failed" => "failed",
        "canceled" => "was canceled (another job replaced it)",
        "timeout" => "timed out (the unit's own timeout)",
        "dependency" => "failed because a dependency failed",
        "skipped" => "was skipped (the unit was not active)",
        "invalid" | "unsupported" => "is not applicable to this unit",
        "assert" | "condition" => "was refused: an Assert/Condition of the unit failed",
        other => return format!("{verb} of {unit} ended with result \"{other}\""),
    };
    format!("{verb} of {unit} {why}; see `journalctl -u {unit}`")
}

fn no_reload(unit: &str) -> String {
    format!("{unit} cannot reload (it has no ExecReload=); use action = \"restart\" or \"reload-or-restart\"")
}

/// One clear line for a D-Bus error, naming the unit and what was tried.
pub fn describe(e: &zbus::Error, unit: &str, verb: &str) -> String {
    use zbus::DBusError;
    let (name, detail) = match e {
        zbus::Error::MethodError(name, detail, _) => (name.to_string(), detail.clone()),
        zbus::Error::FDO(f) => (f.name().to_string(), f.description().map(str::to_string)),
        zbus::Error::InputOutput(io) | zbus::Error::Connection(io, _) => {
            return match io.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    format!("no system bus (is D-Bus running? /run/dbus/system_bus_socket: {io})")
                }
                std::io::ErrorKind::PermissionDenied => {
                    format!("access to the system bus denied ({io})")
                }
                _ => format!("cannot {verb} {unit}: D-Bus I/O error: {io}"),
            }
        }
        other => return format!("cannot {verb} {unit}: D-Bus error: {other}"),
    };
    describe_method_error(&name, detail.as_deref().unwrap_or(""), unit, verb)
}

/// The mapping itself, on the error name and text so it is testable.
pub fn describe_method_error(name: &str, detail: &str, unit: &str, verb: &str) -> String {
    // systemd's texts are sentences; ours go on after them.
    let detail = detail.trim_end_matches('.');
    match name.rsplit('.').next().unwrap_or(name) {
        "NoSuchUnit" => format!("unit {unit} not found"),
        "LoadFailed" => format!("unit {unit} failed to load: {detail}"),
        "UnitMasked" => format!("unit {unit} is masked"),
        "JobTypeNotApplicable" if verb == "reload" => no_reload(unit),
        "JobTypeNotApplicable" => format!("{unit} cannot {verb}: {detail}"),
        "OnlyByDependency" => format!("{unit} may not be started or stopped directly"),
        "TransactionIsDestructive" | "TransactionJobsConflicting" => {
            format!("systemd refused to {verb} {unit}: {detail}")
        }
        "AccessDenied" | "InteractiveAuthorizationRequired" => format!(
            "not allowed to {verb} {unit} (run as root, or grant org.freedesktop.systemd1.manage-units): {detail}"
        ),
        "ServiceUnknown" | "NameHasNoOwner" => {
            format!("systemd is not on the bus (is it PID 1?): {detail}")
        }
        "NoReply" | "Timeout" | "TimedOut" => {
            format!("systemd did not answer the {verb} of {unit}: {detail}")
        }
        _ => format!("cannot {verb} {unit}: {name}: {detail}"),
    }
}

/// systemd over D-Bus when there are units to act on; nothing otherwise, so
/// `--root` mode never needs a bus.
pub fn service_manager(
    app: &crate::config::app::App,
    skip: bool,
) -> crate::error::Result<Box<dyn ServiceManager>> {
    if skip || (app.config.services.units.is_empty() && app.config.bluegreen.is_none()) {
        return Ok(Box::new(crate::host::services::NoServices));
    }
    Ok(Box::new(Systemd::connect()?))
}

#[cfg(test)]
mod tests;
