//! Crashes and signals. A SIGKILL at any instant leaves `current` pointing
//! at a complete release and `pending.json` for the next run (or `recover`)
//! to restore; SIGTERM/SIGINT/SIGHUP during the health check roll back.

use crate::common;

use common::{signal, wait_for, Dir};
use rustix::process::Signal;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Slow hooks and health check, each announcing itself with a marker file
/// in outside/ so a kill can be aimed at a phase.
fn slow_app() -> Dir {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        r#"root = "{root}"
[health]
command = ["/bin/sh", "-c", "touch {base}/outside/health; sleep 0.15"]
retries = 1
timeout = 60
[hooks]
pre_activate = [["/bin/sh", "-c", "touch {base}/outside/pre; sleep 0.15"]]
post_activate = [["/bin/sh", "-c", "touch {base}/outside/post; sleep 0.15"]]
"#,
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    d
}

/// A small deterministic generator: the kill instants differ from one
/// iteration to the next but a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn sigkill_at_many_instants_then_recover() {
    let d = slow_app();
    let mut rng = Lcg(0x5eed);
    // None: a raw delay after start (lock, intent record, swap...);
    // Some(marker): a delay after that phase began.
    let phases = [None, Some("pre"), Some("health"), Some("post")];
    let (mut kills, mut recovered) = (0, 0);
    for i in 0..24 {
        let phase = phases[i % phases.len()];
        let from = d.assert_current_complete();
        let to = if from == "v1" { "v2" } else { "v1" };
        for m in ["pre", "health", "post"] {
            let _ = std::fs::remove_file(d.outside().join(m));
        }
        let mut child = d
            .cmd_config()
            .args(["activate", &format!("web:{to}")])
            .spawn();
        if let Some(marker) = phase {
            assert!(
                wait_for(&d.outside().join(marker), LONG),
                "iteration {i}: phase {marker} never began"
            );
        }
        let delay =
            Duration::from_micros(rng.below(if phase.is_some() { 100_000 } else { 60_000 }));
        std::thread::sleep(delay);
        signal(&child, Signal::KILL);
        let status = child.wait().unwrap();
        kills += 1;
        let at = format!(
            "iteration {i}: killed {delay:?} after {}",
            phase.unwrap_or("start")
        );

        // Whatever the instant, `current` resolves to a complete release.
        let now = d.assert_current_complete();
        assert!(now == from || now == to, "{at}: current is {now}");

        let Some(p) = d.pending() else {
            // No intent record: the swap had not happened (or all finished).
            if status.success() {
                assert_eq!(now, to, "{at}");
            } else {
                assert_eq!(now, from, "{at}: current changed without pending.json");
            }
            println!("{at}: current {now}, nothing pending");
            continue;
        };
        assert_eq!(p["from"], from.as_str(), "{at}: {p}");
        assert_eq!(p["to"], to, "{at}: {p}");

        // Half the time `recover`, half the time the next activation finds it.
        let lines = d.history().len();
        let mut added = 1;
        if i % 2 == 0 {
            d.cmd_config().args(["recover", "web"]).ok();
        } else {
            let r = d
                .cmd_config()
                .args(["activate", &format!("web:{from}")])
                .ok();
            // Whether or not recovery moved `current`, the activation brings
            // `from` up again.
            assert!(!r.stderr.contains("already active"), "{at}\n{r}");
            let redone = d.history().last().unwrap().clone();
            assert_eq!(redone["event"], "activated", "{at}: {redone}");
            assert_eq!(redone["reason"], "redone after recovery", "{at}: {redone}");
            added = 2;
        }
        assert_eq!(d.assert_current_complete(), from, "{at}: from not restored");
        assert!(d.pending().is_none(), "{at}: pending.json left behind");
        let history = d.history();
        assert_eq!(history.len(), lines + added, "{at}: {history:#?}");
        let last = &history[lines];
        assert_eq!(last["event"], "recovered", "{at}: {last}");
        assert_eq!(last["from"], from.as_str(), "{at}: {last}");
        assert_eq!(last["to"], to, "{at}: {last}");
        recovered += 1;
        println!("{at}: current {now}, recovered to {from}");
    }
    println!("{kills} kills, {recovered} interrupted activations recovered");
    // Kills in the health check and post hook (each 150 ms long, killed
    // within 100 ms of its start) land after the swap and before the commit;
    // half of those needing recovery is plenty to prove the path ran.
    assert!(recovered >= 6, "only {recovered} recoveries");
}

/// A health check that runs until the test signals the activation. `exec`:
/// releasectl kills the check's own process, not its children, and a
/// surviving `sleep` would hold our stderr pipe open for 20 s.
fn waiting_app() -> Dir {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        r#"root = "{root}"
[health]
command = ["/bin/sh", "-c", "touch {base}/outside/health; exec sleep 20"]
retries = 1
timeout = 60
"#,
    );
    d.cmd_config()
        .args(["activate", "web:v1", "--no-health"])
        .ok();
    d
}

fn signal_during_health_check(sig: Signal, name: &str) {
    let d = waiting_app();
    let child = d.cmd_config().args(["activate", "web:v2"]).spawn();
    assert!(wait_for(&d.outside().join("health"), LONG));
    assert_eq!(d.current().as_deref(), Some("v2"), "swapped before health");
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains(name), "{stderr}");

    assert_eq!(d.assert_current_complete(), "v1", "previous not restored");
    assert!(d.pending().is_none());
    let last = d.history().pop().unwrap();
    assert_eq!(last["event"], "rolled_back", "{last}");
    assert_eq!(last["to"], "v2", "{last}");
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(name), "history does not say why: {last}");

    let list = d.cmd_config().args(["--json", "list"]).ok().json()["releases"].clone();
    // Stopped, not refused: recorded as interrupted, and not bad.
    assert_eq!(last["interrupted"], name, "{last}");
    let v2 = list.as_array().unwrap().iter().find(|r| r["id"] == "v2");
    assert_eq!(v2.unwrap()["bad"], false, "{list:#}");
    d.cmd_config()
        .args(["activate", "web:v2", "--refuse-bad", "--no-health"])
        .ok();
}

#[test]
fn sigterm_during_health_check_rolls_back() {
    signal_during_health_check(Signal::TERM, "SIGTERM");
}

#[test]
fn sigint_during_health_check_rolls_back() {
    signal_during_health_check(Signal::INT, "SIGINT");
}

#[test]
fn sighup_during_health_check_rolls_back() {
    signal_during_health_check(Signal::HUP, "SIGHUP");
}

/// A SIGKILL during `stage` leaves at most a hidden temp tree, never a
/// release id naming a half-written tree; `prune` removes the leftover.
#[test]
fn sigkill_during_stage_never_publishes_a_partial_tree() {
    let d = Dir::new();
    let src = d.outside().join("big");
    for i in 0..10 {
        let dir = src.join(format!("d{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..20 {
            std::fs::write(dir.join(format!("f{j}")), format!("{i}/{j}\n")).unwrap();
        }
    }
    let want = common::Tree::of(&src);
    let mut rng = Lcg(0xb16);
    let (mut partial, mut complete) = (0, 0);
    for i in 0..8 {
        let id = format!("big{i}");
        let mut child = d.cmd().arg("stage").arg(&src).args(["--id", &id]).spawn();
        // Wait until its temp tree exists, then kill somewhere in the copy
        // (every fsynced file takes a while) or after it.
        let releases = d.path("releases");
        let temp_trees = || {
            std::fs::read_dir(&releases).map_or(0, |r| {
                r.filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().starts_with(".stage-")
                })
                .count()
            })
        };
        let start = std::time::Instant::now();
        while temp_trees() == partial
            && start.elapsed() < LONG
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        let delay = if i == 0 { 0 } else { rng.below(1_000_000) };
        std::thread::sleep(Duration::from_micros(delay));
        signal(&child, Signal::KILL);
        child.wait().unwrap();
        let release = releases.join(&id);
        if release.exists() {
            want.assert_same(&common::Tree::of(&release), &format!("release {id}"));
            complete += 1;
        } else {
            partial += 1;
        }
    }
    println!("stage killed 8 times: {partial} before publishing, {complete} after");
    assert!(partial > 0, "no kill landed during the copy");
    let leftovers = d
        .release_names()
        .into_iter()
        .filter(|n| n.starts_with(".stage-"))
        .count();
    assert_eq!(leftovers, partial, "one temp tree per interrupted stage");
    d.cmd().arg("prune").ok();
    // Only releases and their staging records are left; no record's temp
    // file either.
    let names = d.release_names();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    if let Ok(records) = std::fs::read_dir(d.path("releases/.staged")) {
        for r in records {
            let name = r.unwrap().file_name().into_string().unwrap();
            assert!(names.contains(&name), "record {name} of no release");
        }
    }
}

#[test]
fn recovery_removes_a_temp_link_left_between_symlink_and_rename() {
    // A kill between symlinkat and renameat leaves the temp link and the
    // intent record; the swap never happened.
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.cmd().args(["activate", "v1"]).ok();
    std::os::unix::fs::symlink("releases/v2", d.path(".current.tmp.999999.0")).unwrap();
    d.write(
        "root/.releasectl/pending.json",
        r#"{"from":"v1","to":"v2","pid":999999,"started":"2026-01-01T00:00:00.000Z"}"#,
    );
    d.cmd().args(["recover", "--all"]).ok();
    assert_eq!(d.assert_current_complete(), "v1");
    assert!(d.pending().is_none());
    assert!(std::fs::symlink_metadata(d.path(".current.tmp.999999.0")).is_err());
    assert_eq!(d.history().last().unwrap()["event"], "recovered");
}

#[test]
fn recovery_to_the_requested_release_still_runs_the_transaction() {
    // An activation v1 -> v2 was killed after the swap. Activating v1 now
    // recovers to v1, and must not stop at "already active": whatever the
    // interrupted run did to the services, v1 is brought up again.
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        "root = \"{root}\"\n[hooks]\npost_activate = [[\"/bin/sh\", \"-c\", \"echo $RELEASECTL_RELEASE >> {base}/brought-up\"]]\n",
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    std::fs::remove_file(d.path("current")).unwrap();
    std::os::unix::fs::symlink("releases/v2", d.path("current")).unwrap();
    d.write(
        "root/.releasectl/pending.json",
        r#"{"from":"v1","to":"v2","pid":999999,"started":"2026-01-01T00:00:00.000Z"}"#,
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    assert_eq!(d.assert_current_complete(), "v1");
    let events: Vec<_> = d
        .history()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["activated", "recovered", "activated"]);
    let runs = std::fs::read_to_string(d.base().join("brought-up")).unwrap();
    assert_eq!(runs, "v1\nv1\n");
}

#[test]
fn an_intent_left_by_a_failed_rollback_redoes_the_units() {
    // A rollback whose unit jobs failed (exit 12) leaves `current` back on v1
    // and the intent record: the units may still run v2. Activating v1 must
    // redo them, not answer "already active".
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        "root = \"{root}\"\n[hooks]\npost_activate = [[\"/bin/sh\", \"-c\", \"echo $RELEASECTL_RELEASE >> {base}/brought-up\"]]\n",
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    d.write(
        "root/.releasectl/pending.json",
        r#"{"from":"v1","to":"v2","pid":999999,"started":"2026-01-01T00:00:00.000Z"}"#,
    );
    let r = d.cmd_config().args(["activate", "web:v1"]).ok();
    assert!(!r.stderr.contains("already active"), "{r}");
    assert_eq!(d.assert_current_complete(), "v1");
    assert!(d.pending().is_none());
    let history = d.history();
    let events: Vec<_> = history
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["activated", "recovered", "activated"]);
    assert_eq!(history[2]["reason"], "redone after recovery");
    let runs = std::fs::read_to_string(d.base().join("brought-up")).unwrap();
    assert_eq!(runs, "v1\nv1\n");
}

#[test]
fn a_recorded_outcome_stands_even_if_the_clock_stepped_back() {
    // Killed between appending "activated" and removing pending.json, with
    // the wall clock stepped back meanwhile (the intent looks newer than its
    // outcome). The history offset in the intent still identifies it.
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.cmd().args(["activate", "v1"]).ok();
    let offset = std::fs::metadata(d.path(".releasectl/history.jsonl"))
        .unwrap()
        .len();
    d.cmd().args(["activate", "v2"]).ok();
    let pid = d.history().last().unwrap()["pid"].as_u64().unwrap();
    d.write(
        "root/.releasectl/pending.json",
        &format!(
            r#"{{"from":"v1","to":"v2","pid":{pid},"started":"2999-01-01T00:00:00.000Z","history_offset":{offset}}}"#
        ),
    );
    d.cmd().args(["recover"]).ok();
    assert_eq!(d.assert_current_complete(), "v2");
    assert!(d.pending().is_none());
    assert_eq!(d.history().last().unwrap()["event"], "activated");
}

// A failed fsync of ROOT after the rename (the new link in place) is a
// failure after the swap: see the named fault point `swap.sync` in
// src/activation/tests.rs (a_failed_fsync_after_the_swap_rolls_back).

/// `status` tells a running activation from an interrupted one: while an
/// activation holds the lock its intent record is in flight (exit 0); once
/// it was killed, the same record with the lock free is an interruption:
/// the report says so (one JSON document), stderr says to run `recover`,
/// and the exit status is 13 until `recover` finishes it.
#[test]
fn status_says_when_an_activation_was_interrupted() {
    let d = waiting_app();
    let child = d.cmd_config().args(["activate", "web:v2"]).spawn();
    assert!(wait_for(&d.outside().join("health"), LONG));
    let running = d.cmd_config().args(["--json", "status", "web"]).ok().json();
    assert_eq!(running["interrupted"], false, "{running:#}");
    assert!(running["pending"].is_object(), "{running:#}");
    assert_eq!(running["lock_holder"]["release"], "v2", "{running:#}");

    signal(&child, Signal::KILL);
    let mut child = child;
    child.wait().unwrap();
    let r = d.cmd_config().args(["--json", "status", "web"]).expect(13);
    let doc = r.json();
    assert_eq!(doc["interrupted"], true, "{doc:#}");
    assert_eq!(doc["pending"]["to"], "v2", "{doc:#}");
    let line = r.one_line_error();
    assert!(
        line.contains("v1 → v2") && line.contains("run `releasectl recover web`"),
        "{r}"
    );
    let text = d.cmd_config().args(["status", "web"]).expect(13);
    assert!(text.stdout.contains("pending:   v1 → v2"), "{text}");

    d.cmd_config().args(["recover", "web"]).ok();
    let after = d.cmd_config().args(["--json", "status", "web"]).ok().json();
    assert_eq!(after["interrupted"], false, "{after:#}");
    assert_eq!(after["current"], "v1", "{after:#}");
}

/// Processes whose argv holds `mark` as a whole argument (zombies have none).
fn processes_with_arg(mark: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|argv| argv.split(|&b| b == 0).any(|a| a == mark.as_bytes()))
        })
        .collect()
}

/// `kill -9` of releasectl during a hook (before the swap, with no intent
/// record yet, and after it) leaves the hook's processes running; `recover`
/// kills them and says so, and the lock is not needed by them.
#[test]
fn sigkill_during_a_hook_then_recover_leaves_no_hook_process() {
    for (i, phase) in ["pre_activate", "post_activate"].iter().enumerate() {
        let d = Dir::new();
        d.releases(&["v1", "v2"]);
        // A number GNU sleep adds to its 30 s: a mark in its argv and its shell's.
        let mark = format!("0.{}{i}", std::process::id());
        d.config(
            "web",
            &format!(
                "root = \"{{root}}\"\n[hooks]\n{phase} = [[\"/bin/sh\", \"-c\", \
                 \"test $RELEASECTL_RELEASE = v2 || exit 0; touch {{base}}/outside/hooked; \
                 /bin/sleep 30 $0 & wait\", \"{mark}\"]]\n"
            ),
        );
        d.cmd_config().args(["activate", "web:v1"]).ok();
        let mut child = d.cmd_config().args(["activate", "web:v2"]).spawn();
        assert!(
            wait_for(&d.outside().join("hooked"), LONG),
            "{phase} hook never ran"
        );
        let started = std::time::Instant::now();
        while processes_with_arg(&mark).len() < 2 {
            assert!(started.elapsed() < LONG, "the hook's sleep never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(&child, Signal::KILL);
        let _ = child.wait();
        assert!(
            !processes_with_arg(&mark).is_empty(),
            "the hook died with releasectl by itself; this test proves nothing"
        );
        let run = d.cmd_config().args(["recover", "web"]).ok();
        assert!(
            run.stderr.contains("killed what was left of hook"),
            "{}",
            run.stderr
        );
        let started = std::time::Instant::now();
        while !processes_with_arg(&mark).is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{phase}: hook processes left after recover: {:?}",
                processes_with_arg(&mark)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(d.current().as_deref(), Some("v1"));
    }
}

/// The same for a health command: `kill -9` of releasectl while the health
/// check runs leaves its command running; `recover` kills it.
#[test]
fn sigkill_during_a_health_check_then_recover_leaves_no_process() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    let mark = format!("0.{}9", std::process::id());
    d.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[health]\ncommand = [\"/bin/sh\", \"-c\", \
             \"test $RELEASECTL_RELEASE = v2 || exit 0; touch {{base}}/outside/checking; \
             /bin/sleep 30 $0 & wait\", \"{mark}\"]\ntimeout = 60\n"
        ),
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    let mut child = d.cmd_config().args(["activate", "web:v2"]).spawn();
    assert!(
        wait_for(&d.outside().join("checking"), LONG),
        "the health command never ran"
    );
    let started = std::time::Instant::now();
    while processes_with_arg(&mark).len() < 2 {
        assert!(started.elapsed() < LONG, "the check's sleep never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&child, Signal::KILL);
    let _ = child.wait();
    assert!(
        !processes_with_arg(&mark).is_empty(),
        "the check died with releasectl by itself; this test proves nothing"
    );
    let run = d.cmd_config().args(["recover", "web"]).ok();
    assert!(
        run.stderr
            .contains("killed what was left of hook `health check`"),
        "{}",
        run.stderr
    );
    let started = std::time::Instant::now();
    while !processes_with_arg(&mark).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "health check processes left after recover: {:?}",
            processes_with_arg(&mark)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(d.current().as_deref(), Some("v1"));
}
