//! sd_notify(3) messages. Outside systemd (no `$NOTIFY_SOCKET`) these are
//! no-ops; a failure to notify is logged and never fails an activation.

use std::time::Duration;

/// Publish a one-line status (`systemctl status` shows it).
pub fn status(text: &str) {
    send(&[sd_notify::NotifyState::Status(text)]);
}

/// Ask systemd for `d` more time before the start timeout fires.
pub fn extend_timeout(d: Duration) {
    let usec = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
    send(&[sd_notify::NotifyState::ExtendTimeoutUsec(usec)]);
}

fn send(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, state) {
        crate::log::warn(&format!("sd_notify failed: {e}"));
    }
}
