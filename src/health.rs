//! The post-swap health check: a command and/or an HTTP URL, tried up to
//! `retries` times, `interval` apart, within an overall `timeout`.

use crate::cancel::Cancel;
use crate::config::Health;
use std::path::Path;
use std::time::{Duration, Instant};

/// `Ok` once one attempt passes every configured check; otherwise the reason
/// of the last failed attempt.
pub fn wait_healthy(
    h: &Health,
    cwd: &Path,
    env: &[(&str, String)],
    cancel: &Cancel,
) -> Result<(), String> {
    let deadline = Instant::now() + h.timeout;
    let mut last = String::from("no attempt made");
    for attempt in 1..=h.retries {
        cancel.check()?;
        if Instant::now() >= deadline {
            return Err(format!(
                "health check timed out after {}s: {last}",
                h.timeout.as_secs()
            ));
        }
        match attempt_once(h, cwd, env, deadline, cancel) {
            Ok(()) => {
                crate::log::debug(&format!("health check passed on attempt {attempt}"));
                return Ok(());
            }
            Err(why) => {
                crate::log::info(&format!(
                    "health check attempt {attempt}/{}: {why}",
                    h.retries
                ));
                last = why;
            }
        }
        if attempt < h.retries {
            sleep_until(Instant::now() + h.interval, deadline, cancel)?;
        }
    }
    cancel.check()?;
    Err(format!("health check failed {} times: {last}", h.retries))
}

fn attempt_once(
    h: &Health,
    cwd: &Path,
    env: &[(&str, String)],
    deadline: Instant,
    cancel: &Cancel,
) -> Result<(), String> {
    if let Some(argv) = &h.command {
        crate::process::run(argv, cwd, env, Some(deadline), cancel)?;
    }
    if let Some(url) = &h.url {
        http_ok(url, deadline.saturating_duration_since(Instant::now()))?;
    }
    Ok(())
}

/// GET `url`; only a 2xx answer within `timeout` counts.
pub fn http_ok(url: &str, timeout: Duration) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout.max(Duration::from_millis(1)))
        .redirects(0)
        .build();
    match agent.get(url).call() {
        Ok(resp) if (200..300).contains(&resp.status()) => Ok(()),
        Ok(resp) => Err(format!("GET {url} answered {}", resp.status())),
        Err(ureq::Error::Status(code, _)) => Err(format!("GET {url} answered {code}")),
        Err(e) => Err(format!("GET {url}: {e}")),
    }
}

/// Sleep in short steps so a signal is noticed promptly.
fn sleep_until(until: Instant, deadline: Instant, cancel: &Cancel) -> Result<(), String> {
    let until = until.min(deadline);
    while Instant::now() < until {
        cancel.check()?;
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    cancel.check()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(cmd: &[&str], retries: u32) -> Health {
        Health {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            url: None,
            retries,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn passing_command_is_healthy() {
        let h = health(&["/bin/true"], 3);
        wait_healthy(&h, Path::new("/"), &[], &Cancel::never()).unwrap();
    }

    #[test]
    fn retries_until_pass() {
        let dir = tempfile::tempdir().unwrap();
        // Fails twice, then passes: counts attempts in a file.
        let script =
            "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]";
        let h = health(&["/bin/sh", "-c", script], 3);
        wait_healthy(&h, dir.path(), &[], &Cancel::never()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("count"))
                .unwrap()
                .trim(),
            "3"
        );
    }

    #[test]
    fn gives_up_after_retries() {
        let h = health(&["/bin/false"], 2);
        let e = wait_healthy(&h, Path::new("/"), &[], &Cancel::never()).unwrap_err();
        assert!(e.contains("failed 2 times"), "{e}");
    }

    #[test]
    fn overall_timeout_kills_a_hanging_check() {
        let mut h = health(&["/bin/sleep", "30"], 5);
        h.timeout = Duration::from_millis(200);
        let t = Instant::now();
        let e = wait_healthy(&h, Path::new("/"), &[], &Cancel::never()).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn cancel_stops_the_check() {
        let h = health(&["/bin/false"], 100);
        let cancel = Cancel::never();
        cancel.trigger();
        let e = wait_healthy(&h, Path::new("/"), &[], &cancel).unwrap_err();
        assert!(e.contains("SIGTERM"), "{e}");
    }
}
