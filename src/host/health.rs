//! The post-swap health check: a command and/or an HTTP URL, tried
//! `interval` apart until it passes (`consecutive` times in a row) or
//! `timeout` has passed since the gate began; `retries`, when set, also caps
//! the attempts. The timeout is a time budget on purpose: a gate that gives
//! up after N quick attempts rolls back a good release on a host whose
//! reload happens to be slow today.

use crate::config::Health;
use crate::host::cancel::Cancel;
use anyhow::{anyhow, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the attempts so far came to.
#[derive(Default)]
struct Tally {
    attempts: u32,
    failed: u32,
    /// Attempts counted against `retries` (not those failed in the start
    /// period).
    counted: u32,
    failed_in_grace: u32,
    streak: u32,
}

/// `Ok` once `consecutive` attempts in a row pass every configured check;
/// otherwise the reason of the last failed attempt, with how many failed in
/// how long. `release` is the release being checked (for `expect`'s
/// `{release}`).
pub fn wait_healthy(
    h: &Health,
    release: &str,
    cwd: &Path,
    env: &[(&str, String)],
    cancel: &Cancel,
) -> Result<()> {
    let started = Instant::now();
    // Bounded at load; saturate rather than panic all the same.
    let deadline = started
        .checked_add(h.timeout)
        .unwrap_or_else(|| started + Duration::from_secs(86_400));
    let expect: Vec<String> = h
        .expect
        .iter()
        .map(|e| e.replace("{release}", release))
        .collect();
    // Within the start period a failed attempt is not counted against
    // `retries`: an app that takes a while to come up is not failed for it.
    let grace_ends = started + h.start_period;
    let mut last = anyhow!("no attempt made");
    let mut log = FailureLog::default();
    let mut t = Tally::default();
    loop {
        cancel.check()?;
        t.attempts += 1;
        match attempt_once(h, &expect, cwd, env, deadline, cancel) {
            Ok(()) => {
                t.streak += 1;
                t.counted += 1;
                crate::log::debug(&format!(
                    "health check passed on attempt {} ({} of {} in a row)",
                    t.attempts, t.streak, h.consecutive
                ));
                if t.streak >= h.consecutive {
                    return Ok(());
                }
            }
            Err(why) => {
                t.streak = 0;
                t.failed += 1;
                if Instant::now() < grace_ends {
                    t.failed_in_grace += 1;
                    let _ = log.note(|| format!("health check (start period): {why:#}"));
                } else {
                    t.counted += 1;
                    let cap = h.retries.map_or(String::new(), |r| format!("/{r}"));
                    let n = t.attempts;
                    let _ = log.note(|| format!("health check attempt {n}{cap}: {why:#}"));
                }
                last = why;
            }
        }
        if h.retries.is_some_and(|r| t.counted >= r) {
            break;
        }
        // No point waiting for an attempt that could not start in time.
        let next = Instant::now() + h.interval;
        if next >= deadline {
            break;
        }
        sleep_until(next, cancel)?;
    }
    cancel.check()?;
    Err(gave_up(h, &t, started.elapsed(), last))
}

/// The gate's failure: how many attempts failed in how long, then why the
/// last one did.
fn gave_up(h: &Health, t: &Tally, took: Duration, last: anyhow::Error) -> anyhow::Error {
    let took = format!("{:.1}s", took.as_secs_f64());
    if t.streak > 0 {
        return anyhow!(
            "health check passed only {} of {} times in a row: {} attempts in {took}",
            t.streak,
            h.consecutive,
            t.attempts
        );
    }
    let mut what = format!("health check failed {} times in {took}", t.failed);
    if !h.start_period.is_zero() {
        let after = t.failed - t.failed_in_grace;
        what += &format!(", {after} of them after the start period");
    }
    last.context(what)
}

/// Failed attempts as log lines: the first few, then at most one a second.
/// A short `interval` over a long `timeout` can be hundreds of attempts;
/// the journal gets a line a second and a count of the rest, not a line per
/// try.
#[derive(Default)]
struct FailureLog {
    shown: u32,
    hidden: u32,
    last: Option<Instant>,
}

impl FailureLog {
    const FIRST: u32 = 3;
    const EVERY: Duration = Duration::from_secs(1);

    /// Log `line` if it is due; what was logged, for the tests.
    fn note(&mut self, line: impl FnOnce() -> String) -> Option<String> {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t) >= Self::EVERY);
        if self.shown >= Self::FIRST && !due {
            self.hidden += 1;
            return None;
        }
        let mut text = line();
        if self.hidden > 0 {
            text += &format!(" ({} failed attempts since the last line)", self.hidden);
            self.hidden = 0;
        }
        crate::log::info(&text);
        self.shown += 1;
        self.last = Some(now);
        Some(text)
    }
}

fn attempt_once(
    h: &Health,
    expect: &[String],
    cwd: &Path,
    env: &[(&str, String)],
    deadline: Instant,
    cancel: &Cancel,
) -> Result<()> {
    // Each attempt is bounded by what is left of the gate's time.
    if let Some(argv) = &h.command {
        crate::host::process::run(argv, cwd, env, Some(deadline), cancel)?;
    }
    if let Some(url) = &h.url {
        http_ok(
            url,
            expect,
            deadline.saturating_duration_since(Instant::now()),
        )?;
    }
    Ok(())
}

/// How much of an answer's body `expect` is looked for in.
const MAX_BODY: u64 = 1 << 20;

/// GET `url`; only a 2xx answer within `timeout` counts, and with `expect`
/// only one that contains every marker, each in the body (first MiB) or in
/// a header value: a header set by the server's configuration and a body
/// printed by the code are checked by one request.
pub fn http_ok(url: &str, expect: &[String], timeout: Duration) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout.max(Duration::from_millis(1)))
        .redirects(0)
        .build();
    let resp = match agent.get(url).call() {
        Ok(resp) if (200..300).contains(&resp.status()) => resp,
        Ok(resp) => return Err(anyhow!("GET {url} answered {}", resp.status())),
        Err(ureq::Error::Status(code, _)) => return Err(anyhow!("GET {url} answered {code}")),
        Err(e) => return Err(anyhow!("GET {url}: {e}")),
    };
    let headers: Vec<String> = resp
        .headers_names()
        .iter()
        .flat_map(|n| resp.all(n).into_iter().map(str::to_string))
        .collect();
    let in_headers = |m: &String| headers.iter().any(|v| v.contains(m.as_str()));
    let mut missing: Vec<&String> = expect.iter().filter(|m| !in_headers(m)).collect();
    if !missing.is_empty() {
        let mut body = Vec::new();
        let reader: Box<dyn std::io::Read + Send + Sync> = resp.into_reader();
        std::io::Read::read_to_end(&mut std::io::Read::take(reader, MAX_BODY), &mut body)
            .map_err(|e| anyhow!("GET {url}: reading the answer: {e}"))?;
        let body = String::from_utf8_lossy(&body);
        missing.retain(|m| !body.contains(m.as_str()));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let found: Vec<&String> = expect.iter().filter(|m| !missing.contains(m)).collect();
    let had = if found.is_empty() {
        String::new()
    } else {
        format!(", only with {}", quoted(&found))
    };
    Err(anyhow!(
        "GET {url} answered, but not with {}{had} (an old worker or the old release?)",
        quoted(&missing)
    ))
}

/// `"a"` or `"a", "b"`.
fn quoted(markers: &[&String]) -> String {
    let q: Vec<String> = markers.iter().map(|m| format!("{m:?}")).collect();
    q.join(", ")
}

/// Sleep in short steps so a signal is noticed promptly.
fn sleep_until(until: Instant, cancel: &Cancel) -> Result<()> {
    while Instant::now() < until {
        cancel.check()?;
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    Ok(cancel.check()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_are_logged_first_few_then_once_a_second() {
        let mut log = FailureLog::default();
        let shown: Vec<_> = (1..=50)
            .filter_map(|n| log.note(|| format!("attempt {n}")))
            .collect();
        assert_eq!(shown, ["attempt 1", "attempt 2", "attempt 3"]);
        // A second later the next one is shown, with the count of the rest.
        log.last = log.last.map(|t| t - FailureLog::EVERY);
        assert_eq!(
            log.note(|| "attempt 51".into()).as_deref(),
            Some("attempt 51 (47 failed attempts since the last line)")
        );
        assert_eq!(log.note(|| "attempt 52".into()), None);
    }

    fn health(cmd: &[&str], retries: u32) -> Health {
        Health {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            url: None,
            retries: Some(retries),
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(10),
            expect: Vec::new(),
            consecutive: 1,
            start_period: Duration::ZERO,
        }
    }

    /// An HTTP server on loopback answering each request with the next of
    /// `answers` (status, header line, body); returns its URL.
    fn serve(answers: Vec<(u16, &'static str, &'static str)>) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for (status, header, body) in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    fn gate(url: String, retries: u32, consecutive: u32) -> Health {
        Health {
            command: None,
            url: Some(url),
            retries: Some(retries),
            interval: Duration::from_millis(1),
            timeout: Duration::from_secs(10),
            expect: vec!["release {release}".into()],
            consecutive,
            start_period: Duration::ZERO,
        }
    }

    #[test]
    fn expect_waits_for_the_new_release_to_answer() {
        // Old workers answer first; a 2xx alone would pass the old release.
        let answers = vec![
            (200, "", "release v1"),
            (200, "", "release v1"),
            (200, "", "release v2"),
        ];
        let h = gate(serve(answers), 3, 1);
        wait_healthy(&h, "v2", Path::new("/"), &[], &Cancel::never()).unwrap();

        let answers = vec![(200, "", "release v1"); 3];
        let e = wait_healthy(
            &gate(serve(answers), 3, 1),
            "v2",
            Path::new("/"),
            &[],
            &Cancel::never(),
        )
        .map_err(|e| format!("{e:#}"))
        .unwrap_err();
        assert!(e.contains("not with \"release v2\""), "{e}");

        // A header carries it too (`add_header X-Release ...`).
        let answers = vec![(200, "X-Release: release v2\r\n", "ok")];
        wait_healthy(
            &gate(serve(answers), 1, 1),
            "v2",
            Path::new("/"),
            &[],
            &Cancel::never(),
        )
        .unwrap();
    }

    #[test]
    fn every_expected_marker_must_appear_in_the_body_or_a_header() {
        // nginx + php-fpm: the configuration's header and the code's body.
        let mut h = gate(String::new(), 1, 1);
        h.expect = vec!["X-Config {release}".into(), "code {release}".into()];
        let check = |h: &mut Health, answer| {
            h.url = Some(serve(vec![answer]));
            wait_healthy(h, "v2", Path::new("/"), &[], &Cancel::never())
                .map_err(|e| format!("{e:#}"))
        };
        // Old nginx workers serve the new code: only the body marker.
        let e = check(&mut h, (200, "X-Release: X-Config v1\r\n", "code v2")).unwrap_err();
        assert!(
            e.contains("not with \"X-Config v2\", only with \"code v2\""),
            "{e}"
        );
        // The new configuration in front of a broken code path.
        let e = check(&mut h, (200, "X-Release: X-Config v2\r\n", "error")).unwrap_err();
        assert!(
            e.contains("not with \"code v2\", only with \"X-Config v2\""),
            "{e}"
        );
        check(&mut h, (200, "X-Release: X-Config v2\r\n", "code v2")).unwrap();
        // Both in the body do as well.
        check(&mut h, (200, "", "X-Config v2 code v2")).unwrap();
    }

    #[test]
    fn without_retries_attempts_go_on_until_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // Passes once 1.5 s have gone by since the first attempt.
        let script = "now=$(date +%s%3N); [ -e t0 ] || echo $now > t0; \
                      [ $((now - $(cat t0))) -ge 1500 ]";
        let mut h = health(&["/bin/sh", "-c", script], 1);
        h.retries = None;
        h.interval = Duration::from_millis(100);
        h.timeout = Duration::from_secs(5);
        wait_healthy(&h, "v1", dir.path(), &[], &Cancel::never()).unwrap();

        let mut h = health(&["/bin/false"], 1);
        h.retries = None;
        h.interval = Duration::from_millis(100);
        h.timeout = Duration::from_secs(1);
        let e = wait_healthy(&h, "v1", Path::new("/"), &[], &Cancel::never())
            .map_err(|e| format!("{e:#}"))
            .unwrap_err();
        let n: u32 = e
            .strip_prefix("health check failed ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {e:?}"));
        assert!(n > 1, "{e}");
        // How long it took is said too (not asserted: the host may be slow).
        assert!(
            e.contains(" times in ") && e.contains("s: `/bin/false` failed"),
            "{e}"
        );
    }

    #[test]
    fn consecutive_successes_are_needed_in_a_row() {
        let answers = vec![
            (200, "", "release v2"),
            (500, "", "release v2"),
            (200, "", "release v2"),
            (200, "", "release v2"),
        ];
        let h = gate(serve(answers.clone()), 4, 2);
        wait_healthy(&h, "v2", Path::new("/"), &[], &Cancel::never()).unwrap();
        let h = gate(serve(answers), 3, 2);
        let e = wait_healthy(&h, "v2", Path::new("/"), &[], &Cancel::never())
            .map_err(|e| format!("{e:#}"))
            .unwrap_err();
        assert!(e.contains("only 1 of 2 times in a row"), "{e}");
    }

    #[test]
    fn passing_command_is_healthy() {
        let h = health(&["/bin/true"], 3);
        wait_healthy(&h, "v1", Path::new("/"), &[], &Cancel::never()).unwrap();
    }

    #[test]
    fn retries_until_pass() {
        let dir = tempfile::tempdir().unwrap();
        // Fails twice, then passes: counts attempts in a file.
        let script =
            "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]";
        let h = health(&["/bin/sh", "-c", script], 3);
        wait_healthy(&h, "v1", dir.path(), &[], &Cancel::never()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("count"))
                .unwrap()
                .trim(),
            "3"
        );
    }

    #[test]
    fn failures_within_the_start_period_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        // Fails four times (all within the start period), then passes; with
        // retries = 1 only the start period lets it through.
        let script =
            "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 5 ]";
        let mut h = health(&["/bin/sh", "-c", script], 1);
        h.start_period = Duration::from_secs(5);
        wait_healthy(&h, "v1", dir.path(), &[], &Cancel::never()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("count"))
                .unwrap()
                .trim(),
            "5"
        );
        // Without it the first failure is the last.
        std::fs::remove_file(dir.path().join("count")).unwrap();
        h.start_period = Duration::ZERO;
        let e = wait_healthy(&h, "v1", dir.path(), &[], &Cancel::never())
            .map_err(|e| format!("{e:#}"))
            .unwrap_err();
        assert!(e.contains("failed 1 times"), "{e}");
    }

    #[test]
    fn a_start_period_still_ends_in_failure() {
        let mut h = health(&["/bin/false"], 2);
        h.start_period = Duration::from_millis(100);
        h.timeout = Duration::from_secs(5);
        let e = wait_healthy(&h, "v1", Path::new("/"), &[], &Cancel::never())
            .map_err(|e| format!("{e:#}"))
            .unwrap_err();
        assert!(e.contains(", 2 of them after the start period"), "{e}");
    }

    #[test]
    fn gives_up_after_retries() {
        let h = health(&["/bin/false"], 2);
        let e = wait_healthy(&h, "v1", Path::new("/"), &[], &Cancel::never())
            .map_err(|e| format!("{e:#}"))
            .unwrap_err();
        assert!(e.contains("failed 2 times"), "{e}");
    }

    #[test]
    fn overall_timeout_kills_a_hanging_check() {
        let mut h = health(&["/bin/sleep", "30"], 5);
        h.timeout = Duration::from_millis(200);
        let t = Instant::now();
        let e = wait_healthy(&h, "v1", Path::new("/"), &[], &Cancel::never())
            .map_err(|e| format!("{e:#}"))
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn cancel_stops_the_check() {
        let h = health(&["/bin/false"], 100);
        let cancel = Cancel::never();
        cancel.trigger();
        let e = wait_healthy(&h, "v1", Path::new("/"), &[], &cancel)
            .map_err(|e| format!("{e:#}"))
            .unwrap_err();
        assert!(e.contains("SIGTERM"), "{e}");
    }
}
