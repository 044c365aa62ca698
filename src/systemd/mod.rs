//! systemd's service manager over D-Bus (the real [`ServiceManager`]).
//!
//! One job per unit: enqueue it with mode "replace", wait for its
//! `JobRemoved` signal, accept only the result "done", then check the unit
//! is active (and, after a restart, that it is a new invocation).

use crate::cancel::Cancel;
use crate::config::Action;
use crate::error::{Error, Result};
use crate::services::ServiceManager;
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
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_or_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

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
}

/// A finished job, as announced by `JobRemoved`.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedJob {
    pub job: String,
    pub unit: String,
    pub result: String,
}

pub struct Systemd {
    conn: Connection,
    /// Set up on the first `apply`: `check` only reads properties and needs
    /// no subscription.
    jobs: Option<Receiver<FinishedJob>>,
}

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
            Error::Operational(anyhow::anyhow!(
                "cannot reach systemd: no system bus (is D-Bus running?): {why}"
            ))
        })?;
        Ok(Systemd::on(conn))
    }

    /// Use an existing connection (tests hand in a peer-to-peer one).
    pub fn on(conn: Connection) -> Systemd {
        Systemd { conn, jobs: None }
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

    fn try_apply(
        &mut self,
        unit: &str,
        action: Action,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<(), String> {
        let verb = action.as_str();
        let fail = |e: zbus::Error| describe(&e, unit, verb);
        let manager = self.manager().map_err(fail)?;
        let path = manager.load_unit(unit).map_err(fail)?;
        let proxy = self.unit(path).map_err(fail)?;
        let was_active = is_active(&proxy.active_state().map_err(fail)?);
        let before = proxy.invocation_id().map_err(fail)?;

        let jobs = self.job_signals().map_err(fail)?;
        // Signals of jobs that ended before ours was enqueued are not ours.
        while jobs.try_recv().is_ok() {}
        let job = match action {
            Action::Reload => manager.reload_unit(unit, "replace"),
            Action::Restart => manager.restart_unit(unit, "replace"),
            Action::TryRestart => manager.try_restart_unit(unit, "replace"),
            Action::ReloadOrRestart => manager.reload_or_restart_unit(unit, "replace"),
        }
        .map_err(fail)?;
        let result = wait_for_job(jobs, job.as_str(), timeout, cancel)
            .map_err(|why| format!("{verb} of {unit}: {why}"))?;
        if result != "done" {
            if result == "invalid" && !was_active {
                // systemd's answer to reloading a stopped unit.
                return Err(format!(
                    "{unit} is not running: nothing to {verb}; start it, or use action = \"reload-or-restart\""
                ));
            }
            return Err(job_failed(unit, verb, &result));
        }

        let state = proxy.active_state().map_err(fail)?;
        if action == Action::TryRestart && !was_active {
            // try-restart leaves a stopped unit alone, by definition.
            return Ok(());
        }
        if !is_active(&state) {
            let sub = proxy.sub_state().unwrap_or_default();
            return Err(format!(
                "{unit} is {state} ({sub}) after {verb}, not active; see `journalctl -u {unit}`"
            ));
        }
        let after = proxy.invocation_id().map_err(fail)?;
        if matches!(action, Action::Restart | Action::TryRestart) && after == before {
            return Err(format!(
                "{unit} was not restarted (same invocation id after {verb})"
            ));
        }
        Ok(())
    }

    fn try_probe(&mut self, unit: &str, action: Action) -> Result<(), String> {
        let verb = action.as_str();
        let fail = |e: zbus::Error| describe(&e, unit, verb);
        let path = self
            .manager()
            .and_then(|m| m.load_unit(unit))
            .map_err(fail)?;
        let proxy = self.unit(path).map_err(fail)?;
        match proxy.load_state().map_err(fail)?.as_str() {
            "loaded" => {}
            "not-found" => return Err(format!("unit {unit} not found")),
            "masked" => return Err(format!("unit {unit} is masked")),
            other => {
                return Err(format!(
                    "unit {unit} is {other} (see `systemctl status {unit}`)"
                ))
            }
        }
        let can_reload = proxy.can_reload().map_err(fail)?;
        let can_start = proxy.can_start().map_err(fail)?;
        match action {
            Action::Reload if !can_reload => Err(no_reload(unit)),
            Action::Reload => Ok(()),
            Action::ReloadOrRestart if can_reload || can_start => Ok(()),
            _ if can_start => Ok(()),
            _ => Err(format!("{unit} cannot be restarted (RefuseManualStart=?)")),
        }
    }
}

impl ServiceManager for Systemd {
    fn apply(
        &mut self,
        unit: &str,
        action: Action,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<(), String> {
        self.try_apply(unit, action, timeout, cancel)
    }

    fn probe(&mut self, unit: &str, action: Action) -> Result<(), String> {
        self.try_probe(unit, action)
    }
}

/// How often the wait looks at the cancel token: SIGTERM from `systemctl
/// stop` must start the rollback promptly even while a job hangs.
const POLL: Duration = Duration::from_millis(100);

/// Wait for the `JobRemoved` of `job` and return its result, giving up
/// after `timeout` or as soon as `cancel` fires. Other jobs' signals are
/// skipped.
pub fn wait_for_job(
    jobs: &Receiver<FinishedJob>,
    job: &str,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        cancel.check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "job {job} not finished after {}",
                humantime::format_duration(timeout)
            ));
        }
        match jobs.recv_timeout(left.min(POLL)) {
            Ok(done) if done.job == job => return Ok(done.result),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err("lost the connection to systemd while waiting".into())
            }
        }
    }
}

fn is_active(state: &str) -> bool {
    state == "active"
}

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
        zbus::Error::InputOutput(io) => {
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

#[cfg(test)]
mod tests;
