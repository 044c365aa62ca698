//! The service manager seen by the activation transaction. The real one is
//! systemd over D-Bus ([`crate::host::systemd`]); tests hand in fakes.

use crate::config::Action;
use crate::host::cancel::Cancel;
use std::time::Duration;

pub trait ServiceManager {
    /// Enqueue `action` on `unit` (mode "replace"), wait until the job is
    /// finished, and check the unit is active. `Err` says why not.
    fn apply(
        &mut self,
        unit: &str,
        action: Action,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<()>;

    /// Whether `unit` exists and can do `action` (for `releasectl check`):
    /// its state and what an activation will do to it, or why it cannot.
    fn probe(&mut self, unit: &str, action: Action) -> anyhow::Result<String>;

    /// What `check` says of a blue/green instance: the fronted one must
    /// run; the idle one may be in any state (the next activation restarts
    /// it). Managers that cannot say so.
    fn probe_instance(&mut self, unit: &str, _fronted: bool) -> anyhow::Result<String> {
        anyhow::bail!("this service manager cannot probe {unit}")
    }

    /// Start (`start: true`, a no-op for a running unit) or stop `unit`,
    /// waiting until the job is finished (blue/green instances). Managers
    /// that cannot say so.
    fn start_stop(
        &mut self,
        unit: &str,
        start: bool,
        _timeout: Duration,
        _cancel: &Cancel,
    ) -> anyhow::Result<()> {
        let verb = if start { "start" } else { "stop" };
        anyhow::bail!("this service manager cannot {verb} {unit}")
    }
}

/// Used when no units are configured or `--no-reload` is given.
pub struct NoServices;

impl ServiceManager for NoServices {
    fn apply(&mut self, unit: &str, _: Action, _: Duration, _: &Cancel) -> anyhow::Result<()> {
        anyhow::bail!("no service manager available to act on {unit}")
    }

    fn probe(&mut self, unit: &str, _: Action) -> anyhow::Result<String> {
        anyhow::bail!("no service manager available to check {unit}")
    }
}
