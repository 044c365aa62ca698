//! `releasectl request` and the outcomes root records for requesters,
//! without systemd: the test plays the watch unit by running
//! `activate --request APP` itself. (tests/systemd/scenarios.rs has the
//! same path through the real units, polkit and a non-root user.)

use crate::common;

use common::{Dir, Run, TestCommand};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// An app `web` (v1, v2; the health check fails for v2), with
/// `outside/requests` and a root-only `outside/results`.
fn scene() -> Dir {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        "root = \"{root}\"\n[health]\ncommand = [\"/bin/sh\", \"-c\", \"test \\\"$RELEASECTL_RELEASE\\\" != v2\"]\nretries = 1\n",
    );
    std::fs::create_dir(requests(&d)).unwrap();
    std::fs::create_dir(results(&d)).unwrap();
    std::fs::set_permissions(results(&d), std::fs::Permissions::from_mode(0o750)).unwrap();
    d
}

fn requests(d: &Dir) -> PathBuf {
    d.outside().join("requests")
}

fn results(d: &Dir) -> PathBuf {
    d.outside().join("results")
}

/// `releasectl --config-dir ETC request ARGS --requests-dir …` (the results
/// directory is found beside it).
fn request(d: &Dir, args: &[&str]) -> TestCommand {
    let mut c = d.cmd_config();
    c.arg("request")
        .args(args)
        .arg("--requests-dir")
        .arg(requests(d));
    c
}

/// What deploy-watch@web.service runs.
fn watcher(d: &Dir) -> Run {
    let mut c = d.cmd_config();
    c.args(["activate", "--request", "web", "--requests-dir"])
        .arg(requests(d));
    c.run()
}

/// The recorded outcomes of `web`.
fn outcomes(d: &Dir) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(results(d).join("web")) {
        Ok(text) => serde_json::from_str(&text).expect("results are a JSON array"),
        Err(_) => Vec::new(),
    }
}

/// The request file's second line, `request=TOKEN`.
fn token_in_file(d: &Dir) -> String {
    let text = std::fs::read_to_string(requests(d).join("web")).unwrap();
    text.lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("request="))
        .unwrap_or_else(|| panic!("no token in {text:?}"))
        .to_string()
}

/// Start `request --wait` in the background and wait until its request is
/// in place.
fn waiting(d: &Dir, args: &[&str]) -> Child {
    let _ = std::fs::remove_file(requests(d).join("web"));
    let mut all = vec!["--wait", "--timeout", "30"];
    all.extend_from_slice(args);
    let child = request(d, &all).spawn();
    assert!(
        common::wait_for(&requests(d).join("web"), Duration::from_secs(10)),
        "request file not written"
    );
    child
}

fn finish(child: Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        shown: "releasectl request --wait".into(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn request_writes_the_file_in_one_rename() {
    let d = scene();
    let r = request(&d, &["--json", "web:v2"]).ok().json();
    assert_eq!(r["release"], "v2");
    let token = r["request"].as_str().unwrap();
    let text = std::fs::read_to_string(requests(&d).join("web")).unwrap();
    assert_eq!(text, format!("v2\nrequest={token}\n"));
    let meta = std::fs::metadata(requests(&d).join("web")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    // No temp file left beside it.
    let names: Vec<_> = std::fs::read_dir(requests(&d))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["web"]);
    // The single configured app is the default, as for other commands.
    request(&d, &["v1"]).ok();
    assert!(std::fs::read_to_string(requests(&d).join("web"))
        .unwrap()
        .starts_with("v1\n"));
}

/// Read `file` in a loop until `stop`; the contents that are not one whole
/// request, and how many reads there were.
fn reader(
    file: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut reads, mut torn) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(text) = std::fs::read_to_string(&file) {
                reads += 1;
                let whole = (text.starts_with("v1\nrequest=") || text.starts_with("v2\nrequest="))
                    && text.ends_with('\n')
                    && text.lines().count() == 2;
                if !whole {
                    torn.push(text);
                }
            }
        }
        (reads, torn)
    })
}

#[test]
fn a_reader_never_sees_half_a_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = scene();
    let file = requests(&d).join("web");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let seen = reader(file.clone(), stop.clone());
    for n in 0..40 {
        request(&d, &[if n % 2 == 0 { "web:v1" } else { "web:v2" }]).ok();
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, torn) = seen.join().unwrap();
    assert!(reads > 0, "the reader never saw the file");
    assert!(torn.is_empty(), "torn requests seen: {torn:?}");

    // Control: the same reader does see torn requests from a writer that
    // rewrites the file in place (`echo v2 > web`: truncate, then write).
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let seen = reader(file.clone(), stop.clone());
    let started = Instant::now();
    let mut writes = 0;
    while writes < 2000 && started.elapsed() < Duration::from_secs(5) {
        std::fs::write(&file, format!("v{}\nrequest=x\n", 1 + writes % 2)).unwrap();
        writes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (_, torn) = seen.join().unwrap();
    assert!(
        !torn.is_empty(),
        "the reader saw no torn request in {writes} in-place rewrites: it cannot detect one"
    );
}

#[test]
fn wait_reports_the_outcome_and_exit_status() {
    let d = scene();
    // A good release: exit 0, one line saying what happened.
    let child = waiting(&d, &["web:v1"]);
    watcher(&d);
    let r = finish(child);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.stdout.trim(), "web: v1 activated (previous: none)", "{r}");
    assert_eq!(d.assert_current_complete(), "v1");

    // A failing one: rolled back, and the requester exits 11.
    let child = waiting(&d, &["web:v2"]);
    assert_eq!(watcher(&d).code, Some(11));
    let r = finish(child);
    assert_eq!(r.code, Some(11), "{r}");
    assert!(r.stderr.contains("rolled back to v1"), "{r}");
    assert_eq!(d.assert_current_complete(), "v1");

    // The same again under --json: one document, the recorded outcome.
    let child = waiting(&d, &["--json", "web:v2"]);
    watcher(&d);
    let r = finish(child);
    assert_eq!(r.code, Some(11), "{r}");
    let doc = r.json();
    assert_eq!(doc["outcome"], "rolled_back");
    assert_eq!(doc["exit_code"], 11);
    assert_eq!(doc["release"], "v2");

    // Already active is a success.
    let child = waiting(&d, &["web:v1"]);
    watcher(&d);
    let r = finish(child);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.stdout.trim(), "web: v1 already active");
}

#[test]
fn a_request_root_refuses_reports_exit_2() {
    let d = scene();
    d.release("v3");
    let child = waiting(&d, &["web:v3"]);
    // Gone by the time root looks: bad input, nothing changed.
    std::fs::remove_dir_all(d.path("releases/v3")).unwrap();
    assert_eq!(watcher(&d).code, Some(2));
    let r = finish(child);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("does not exist"), "{r}");
    assert_eq!(d.current(), None);
}

#[test]
fn an_invalid_request_file_leaves_a_trace() {
    let d = scene();
    std::fs::write(requests(&d).join("web"), "../etc\n").unwrap();
    let r = watcher(&d);
    assert_eq!(r.code, Some(2), "{r}");
    let last = outcomes(&d).pop().expect("an outcome is recorded");
    assert_eq!(last["outcome"], "invalid");
    assert_eq!(last["exit_code"], 2);
    assert!(last["message"].as_str().unwrap().contains("request file"));
    assert_eq!(d.current(), None);
}

#[test]
fn each_request_is_matched_to_its_own_outcome() {
    let d = scene();
    request(&d, &["web:v1"]).ok();
    let first = token_in_file(&d);
    watcher(&d);
    request(&d, &["web:v2"]).ok();
    let second = token_in_file(&d);
    watcher(&d);
    let got: Vec<_> = outcomes(&d)
        .iter()
        .map(|o| {
            format!(
                "{} {} {} {}",
                o["seq"], o["release"], o["outcome"], o["exit_code"]
            )
        })
        .collect();
    assert_eq!(
        got,
        ["1 \"v1\" \"activated\" 0", "2 \"v2\" \"rolled_back\" 11"]
    );
    let tokens: Vec<_> = outcomes(&d)
        .iter()
        .map(|o| o["request"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tokens, [first, second]);
}

#[test]
fn a_request_replaced_before_it_was_read_is_reported_as_such() {
    let d = scene();
    let child = waiting(&d, &["web:v2"]);
    // Another deployer's request replaces it before the watcher runs.
    request(&d, &["web:v1"]).ok();
    watcher(&d);
    let r = finish(child);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("replaced by a newer one"), "{r}");
    assert_eq!(d.assert_current_complete(), "v1");
}

#[test]
fn wait_gives_up_after_the_timeout() {
    let d = scene();
    let started = Instant::now();
    let r = request(&d, &["web:v1", "--wait", "--timeout", "1"]).expect(1);
    // After the "waiting" line, one error line.
    assert!(
        r.stderr.lines().last().unwrap().contains("no outcome"),
        "{r}"
    );
    assert!(r.stderr.contains("deploy-watch@web.path"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn refused_requests_write_nothing() {
    let d = scene();
    let before = d.tree();
    // Unknown app, missing release, --root (no app), a bad id: exit 2.
    for (args, needle) in [
        (&["api:v1"][..], "unknown app"),
        (&["web:v9"][..], "does not exist"),
        (&["web:../v1"][..], "invalid"),
    ] {
        let r = request(&d, args).expect(2);
        assert!(r.one_line_error().contains(needle), "{r}");
    }
    let mut c = d.cmd();
    c.args(["request", "v1", "--requests-dir"])
        .arg(requests(&d));
    let r = c.expect(2);
    assert!(r.one_line_error().contains("--root"), "{r}");
    // --wait without a results directory would wait for nothing.
    std::fs::remove_dir(results(&d)).unwrap();
    let r = request(&d, &["web:v1", "--wait"]).expect(1);
    assert!(r.one_line_error().contains("results"), "{r}");
    std::fs::create_dir(results(&d)).unwrap();
    std::fs::set_permissions(results(&d), std::fs::Permissions::from_mode(0o750)).unwrap();
    before.assert_same(&d.tree(), "refused requests");
}

#[test]
fn results_dir_can_be_named() {
    let d = scene();
    let elsewhere = d.outside().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let mut c = request(&d, &["web:v1", "--wait", "--timeout", "30"]);
    c.arg("--results-dir").arg(&elsewhere);
    let child = c.spawn();
    assert!(common::wait_for(
        &requests(&d).join("web"),
        Duration::from_secs(10)
    ));
    let mut w = d.cmd_config();
    w.args(["activate", "--request", "web", "--requests-dir"])
        .arg(requests(&d))
        .arg("--results-dir")
        .arg(&elsewhere);
    w.ok();
    assert_eq!(finish(child).code, Some(0));
    assert!(outcomes(&d).is_empty());
    assert!(elsewhere.join("web").exists());
}
