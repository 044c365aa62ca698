//! `releasectl request` and the outcomes root records for requesters,
//! without systemd: the test plays the watch unit by running
//! `activate --request APP` itself. (tests/systemd/scenarios.rs has the
//! same path through the real units, polkit and a non-root user.)

use crate::common;

use common::{Dir, Run, TestCommand};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    // The token is the requester's secret: nobody else may read it.
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
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

/// A relayed status keeps the kind it documents: an activation refused by
/// verification (exit 14) is "verify_failed" in the requester's JSON error
/// document, as the schema says, not "operational"; the recorded outcome,
/// whose names have none of their own for it, is "failed".
#[test]
fn a_relayed_verification_failure_is_named_verify_failed() {
    let d = scene();
    // v1 was made by hand: it has no manifest to verify against.
    d.config("web", "root = \"{root}\"\nverify = true\n");
    let child = waiting(&d, &["--json", "web:v1"]);
    assert_eq!(watcher(&d).code, Some(14));
    let r = finish(child);
    assert_eq!(r.code, Some(14), "{r}");
    let doc = r.envelope();
    assert_eq!(doc["error"]["kind"], "verify_failed", "{doc:#}");
    assert_eq!(doc["error"]["app"], "web", "{doc:#}");
    assert_eq!(doc["error"]["release"], "v1", "{doc:#}");
    assert_eq!(doc["result"]["outcome"], "failed", "{doc:#}");
    assert_eq!(doc["result"]["exit_code"], 14, "{doc:#}");
    assert_eq!(d.current(), None);
}

/// A watcher stopped (SIGTERM) while it waits for the lock another
/// activation holds changed nothing: its recorded outcome is "aborted",
/// exit 11, not "rolled_back" as it was.
#[test]
fn a_request_stopped_while_waiting_for_the_lock_is_aborted_not_rolled_back() {
    let d = scene();
    // A pre_activate hook holds the lock until the test creates outside/go.
    d.config(
        "web",
        "root = \"{root}\"\n[hooks]\npre_activate = [[\"/bin/sh\", \"-c\", '\
         touch {base}/outside/holding; i=0; \
         while [ ! -e {base}/outside/go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done']]\n",
    );
    let holder = d.cmd_config().args(["activate", "web:v1"]).spawn();
    assert!(
        common::wait_for(&d.outside().join("holding"), Duration::from_secs(30)),
        "the holder never reached its hook"
    );
    request(&d, &["web:v1"]).ok();
    let mut c = d.cmd_config();
    let watch = c
        .args([
            "activate",
            "--request",
            "web",
            "--lock-timeout",
            "60",
            "--requests-dir",
        ])
        .arg(requests(&d))
        .spawn();
    // It says so once it has waited a second: it is in the wait.
    std::thread::sleep(Duration::from_millis(1500));
    common::signal(&watch, rustix::process::Signal::TERM);
    let out = watch.wait_with_output().unwrap();
    std::fs::write(d.outside().join("go"), "").unwrap();
    assert!(holder.wait_with_output().unwrap().status.success());

    assert_eq!(out.status.code(), Some(11), "{out:?}");
    let last = outcomes(&d).pop().expect("an outcome recorded");
    assert_eq!(last["outcome"], "aborted", "{last:#}");
    assert_eq!(last["exit_code"], 11, "{last:#}");
    let message = last["message"].as_str().unwrap();
    assert!(message.contains("while waiting for the lock"), "{last:#}");
    assert_eq!(
        d.assert_current_complete(),
        "v1",
        "the holder's activation stands"
    );
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
    // Recorded as digests, never as the tokens themselves.
    let digests: Vec<_> = outcomes(&d)
        .iter()
        .map(|o| o["request_sha256"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digests, [sha256(&first), sha256(&second)]);
    let text = std::fs::read_to_string(results(&d).join("web")).unwrap();
    assert!(!text.contains(&first) && !text.contains(&second), "{text}");
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

fn sha256(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// Two members of group releasectl: the victim and the attacker (distinct
// uids, one shared group, as `usermod -aG releasectl` makes them).
const VICTIM: u32 = 64100;
const ATTACKER: u32 = 65534;
const GROUP: u32 = 64101;

/// `setpriv` as `uid`, in group GROUP alone.
fn member(uid: u32, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args([
        format!("--reuid={uid}"),
        format!("--regid={GROUP}"),
        "--clear-groups".into(),
        program.into(),
    ]);
    c
}

/// The scene with the modes of the packaged directories: the requests
/// directory 2775 root:GROUP, results 0750 root:GROUP; the rest readable.
fn shared_scene() -> Dir {
    common::require_root("members of a shared group");
    common::require_tool("setpriv");
    let d = Dir::new();
    d.releases(&["v1", "v2", "v3"]);
    d.config("web", "root = \"{root}\"\n");
    for dir in [d.base().to_path_buf(), d.root(), d.etc(), d.outside()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (dir, mode) in [(requests(&d), 0o2775), (results(&d), 0o750)] {
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(0), Some(GROUP)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    d
}

/// The victim's `request web:ID --wait`, started as VICTIM; returns once
/// its request file is in place.
fn victim_waits(d: &Dir, id: &str) -> Child {
    let _ = std::fs::remove_file(requests(d).join("web"));
    let child = member(VICTIM, common::BIN)
        .arg("--config-dir")
        .arg(d.etc())
        .args(["request", &format!("web:{id}"), "--wait", "--timeout", "5"])
        .arg("--requests-dir")
        .arg(requests(d))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        common::wait_for(&requests(d).join("web"), Duration::from_secs(10)),
        "the victim's request file was not written"
    );
    child
}

/// The attacker, as ATTACKER: read the victim's token from the request
/// file (or use `leaked`), and put a request for v3 under it in place.
/// Exit 0 if it planted one.
fn attacker_plants(d: &Dir, leaked: Option<&str>) -> std::process::Output {
    let script = "cd \"$1\" || exit 2; end=$(($(date +%s) + 2)); \
        while [ $(date +%s) -lt $end ]; do \
          t=${2:-$(sed -n 's/^request=//p' web 2>/dev/null)}; \
          if [ -n \"$t\" ]; then printf 'v3\\nrequest=%s\\n' \"$t\" > .atk && mv -f .atk web && exit 0; fi; \
        done; exit 1";
    member(ATTACKER, "sh")
        .args(["-c", script, "attacker"])
        .arg(requests(d))
        .arg(leaked.unwrap_or(""))
        .output()
        .unwrap()
}

/// A member copies another member's token and asks for another release
/// under it. Whatever it manages, the victim's `--wait` never reports an
/// outcome for a release it did not ask for: the token cannot be read
/// (the request file is 0600), and a token that leaked anyway does not
/// make the outcome of another member's file the victim's (the outcome
/// carries the file's owner and release). Before the fix: "v3 activated",
/// exit 0, for a request of v1/v2, in every round.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_member_cannot_answer_another_members_request() {
    let d = shared_scene();
    let rounds = 20;
    let (mut planted, mut spoofed, mut own) = (0, Vec::new(), 0);
    for round in 0..rounds {
        // Half the rounds: the attacker races to read the token; the other
        // half it has it already (leaked some other way).
        let leak = round % 2 == 1;
        let id = if round % 4 < 2 { "v1" } else { "v2" };
        let victim = victim_waits(&d, id);
        let leaked = leak.then(|| token_in_file(&d));
        if attacker_plants(&d, leaked.as_deref()).status.success() {
            planted += 1;
        }
        watcher(&d);
        let r = finish(victim);
        let ours = r.stdout.starts_with(&format!("web: {id} "));
        if r.code == Some(0) && ours {
            own += 1;
        }
        // Any outcome reported (stdout) must be of the victim's own release.
        if !r.stdout.is_empty() && !ours {
            spoofed.push(format!("round {round} (asked {id}, leak {leak}): {r}"));
        }
    }
    eprintln!(
        "{rounds} rounds: attacker planted {planted}, victim reported its own outcome {own}, another's {}",
        spoofed.len()
    );
    // The leaked-token rounds prove the attacker did plant requests; the
    // others, that it could not read the token.
    assert!(
        planted >= rounds / 2,
        "the attacker never planted a request: the test proves nothing"
    );
    assert!(spoofed.is_empty(), "{}", spoofed.join("\n"));
}

/// Run the watcher in the background; its result, or None if it did not
/// end within `max` (then it is killed).
fn watcher_within(d: &Dir, max: Duration, during: impl FnOnce(&Child)) -> Option<Run> {
    let mut c = d.cmd_config();
    c.args(["activate", "--request", "web", "--requests-dir"])
        .arg(requests(d));
    let mut child = c.spawn();
    during(&child);
    let started = Instant::now();
    while started.elapsed() < max {
        if child.try_wait().unwrap().is_some() {
            return Some(finish(child));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A member holds `flock` on everything of the requests and results
/// directories it can open (the directories, the request file, the
/// outcomes file). Root's watcher still activates and records the outcome:
/// the only lock it waits on is /run/releasectl/results.lock, which no
/// member can open. Before the fix it waited on the results directory for
/// ever (killed here after 20 s, 0 outcomes recorded).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_members_flock_does_not_block_the_watcher() {
    let d = shared_scene();
    if !common::have("flock") {
        return;
    }
    // An outcome file to lock, and a request.
    request(&d, &["web:v1"]).ok();
    watcher(&d);
    let before = outcomes(&d).len();
    request(&d, &["web:v2"]).ok();
    let mut holders = Vec::new();
    for path in [
        d.outside(),
        requests(&d),
        requests(&d).join("web"),
        results(&d),
        results(&d).join("web"),
    ] {
        let mut h = member(ATTACKER, "flock")
            .arg("-x")
            .arg(&path)
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(_)) = h.try_wait() {
            continue; // could not open it: nothing held
        }
        holders.push(h);
    }
    assert!(
        holders.len() >= 3,
        "the member held too few locks to test anything"
    );
    let r = watcher_within(&d, Duration::from_secs(20), |_| {});
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    let r = r.expect("the watcher did not finish within 20 s while a member held flocks");
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(d.assert_current_complete(), "v2");
    let after = outcomes(&d);
    assert_eq!(after.len(), before + 1, "the outcome was not recorded: {r}");
    assert_eq!(after.last().unwrap()["release"], "v2");
}

/// SIGTERM while the watcher waits to record an outcome (root's results
/// lock held by another writer; on the old code, the results directory
/// flocked by a member): the process ends promptly, with the activation's
/// own status (0), the outcome not recorded and a line saying why; it does
/// not read the request again. Before the fix it hung until killed.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn sigterm_ends_the_wait_for_the_results_lock() {
    let d = shared_scene();
    if !common::have("flock") {
        return;
    }
    request(&d, &["web:v1"]).ok();
    // Root's lock, held as another root writer would hold it (created 0600
    // as releasectl makes it, in case this is the first use).
    let run = std::path::Path::new("/run/releasectl");
    let _ = std::fs::create_dir(run);
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(run.join("results.lock"))
        .unwrap();
    // What the old code waited on.
    let mut member_lock = member(ATTACKER, "flock")
        .arg("-x")
        .arg(results(&d))
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let mut signalled = None;
    let r = watcher_within(&d, Duration::from_secs(20), |child| {
        // The activation is done once `current` moved; then it waits.
        let started = Instant::now();
        while d.current().as_deref() != Some("v1") && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        common::signal(child, rustix::process::Signal::TERM);
        signalled = Some(Instant::now());
    });
    drop(held);
    let _ = member_lock.kill();
    let _ = member_lock.wait();
    let r = r.expect("SIGTERM did not end the watcher within 20 s");
    let took = signalled.unwrap().elapsed();
    assert!(
        took < Duration::from_secs(3),
        "ended {took:?} after SIGTERM"
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("SIGTERM"), "{r}");
    assert!(r.stderr.contains("not recorded"), "{r}");
    assert!(outcomes(&d).is_empty(), "recorded anyway");
}

/// History says who asked: the request file's owner, by uid and by name
/// (`uid`, `user` stay those of the root process that acted).
#[test]
fn history_records_the_requester() {
    let d = scene();
    let file = requests(&d).join("web");
    std::fs::write(&file, "v2\n").unwrap();
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    watcher(&d);
    let last = d.history().pop().expect("an entry");
    assert_eq!(last["event"], "rolled_back", "{last}");
    assert_eq!(last["requester_uid"], 65534, "{last}");
    let name = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.split(':').nth(2) == Some("65534"))
        .map(|l| l.split(':').next().unwrap().to_string());
    assert_eq!(last["requester"].as_str(), name.as_deref(), "{last}");
    assert_eq!(last["trigger"], "path", "{last}");
    // A direct activation names no requester.
    d.cmd_config().args(["activate", "web:v1", "--force"]).ok();
    assert!(d.history().pop().unwrap().get("requester_uid").is_none());
}
