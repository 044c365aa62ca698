//! The per-app flock: many activations at once run one at a time, and a busy
//! lock with `--lock-timeout 0` exits 10 naming the holder.

use crate::common;

use common::{wait_for, Dir};
use std::process::Command;
use std::time::Duration;

const CONTENDERS: usize = 32;

/// A pre_activate hook that notices a second holder: it makes a marker
/// directory for its stay in the critical section, and exits 99 if the
/// marker is already there.
fn detector(sleep: &str) -> String {
    format!(
        "mkdir \"$RELEASECTL_ROOT/inside\" || exit 99; sleep {sleep}; rmdir \"$RELEASECTL_ROOT/inside\""
    )
}

#[test]
fn the_detector_fires_when_two_run_at_once() {
    // Proof that the detector used below can fail: two copies without a lock.
    let d = Dir::new();
    let run = |sleep: &str| {
        Command::new("/bin/sh")
            .args(["-c", &detector(sleep)])
            .env("RELEASECTL_ROOT", d.root())
            .spawn()
            .unwrap()
    };
    let mut first = run("5");
    assert!(wait_for(&d.path("inside"), Duration::from_secs(30)));
    let second = run("0").wait().unwrap();
    assert_eq!(second.code(), Some(99), "the detector did not fire");
    common::signal(&first, rustix::process::Signal::KILL);
    first.wait().unwrap();
}

#[test]
fn concurrent_activations_never_overlap() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[hooks]\npre_activate = [[\"/bin/sh\", \"-c\", '{}']]\n",
            detector("0.02")
        ),
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();

    // --force: an activation of the release that is already current still
    // takes the lock, runs the hook and records a line, so every contender
    // goes through the critical section.
    let children: Vec<_> = (0..CONTENDERS)
        .map(|i| {
            let target = if i % 2 == 0 { "web:v2" } else { "web:v1" };
            d.cmd_config()
                .args(["activate", target, "--force", "--lock-timeout", "600"])
                .spawn()
        })
        .collect();
    let mut failures = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "failed activations:\n{failures:#?}");
    let history = d.history();
    assert_eq!(history.len(), 1 + CONTENDERS, "one history line each");
    assert!(
        history.iter().all(|e| e["event"] == "activated"),
        "{history:#?}"
    );
    assert!(!d.path("inside").exists(), "a hook was left inside");
    assert!(d.pending().is_none());
    d.assert_current_complete();
    println!("{CONTENDERS} concurrent activations, all serialized");
}

#[test]
fn busy_lock_exits_10_naming_the_holder() {
    let d = Dir::new();
    d.releases(&["v1", "v2", "v3"]);
    // The hook holds the lock until the test creates outside/go (bounded to 30 s).
    d.config(
        "web",
        "root = \"{root}\"\n[hooks]\npre_activate = [[\"/bin/sh\", \"-c\", '\
         touch {base}/outside/holding; i=0; \
         while [ ! -e {base}/outside/go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done']]\n",
    );
    std::fs::write(d.outside().join("go"), "").unwrap();
    d.cmd_config().args(["activate", "web:v1"]).ok();
    std::fs::remove_file(d.outside().join("go")).unwrap();
    std::fs::remove_file(d.outside().join("holding")).unwrap();

    let holder = d.cmd_config().args(["activate", "web:v2"]).spawn();
    assert!(
        wait_for(&d.outside().join("holding"), Duration::from_secs(30)),
        "the holder never reached its hook"
    );
    let pid = holder.id();

    let busy = d
        .cmd_config()
        .args(["activate", "web:v3", "--lock-timeout", "0"])
        .expect(10);
    let line = busy.one_line_error();
    assert!(
        line.contains(&format!("pid {pid}")),
        "holder's pid missing\n{busy}"
    );
    assert!(line.contains("v2"), "holder's release missing\n{busy}");

    let status = d.cmd_config().args(["--json", "status"]).ok().json();
    assert_eq!(status["lock_holder"]["pid"], pid, "{status:#}");

    // Every command that takes the lock honours --lock-timeout, given
    // before or after the subcommand, and changes nothing when busy.
    let before = d.tree();
    for args in [
        &["prune", "web", "--keep", "0", "--lock-timeout", "0"][..],
        &["--lock-timeout", "0", "recover", "web"],
        &["mark-bad", "web:v1", "--lock-timeout", "0"],
        &["rollback", "web", "--to", "v1", "--lock-timeout", "0"],
    ] {
        let busy = d.cmd_config().args(args).expect(10);
        assert!(
            busy.one_line_error().contains(&format!("pid {pid}")),
            "{busy}"
        );
        before.assert_same(&d.tree(), &format!("{args:?}"));
    }

    // A contender with a timeout waits for the holder instead.
    let waiter = d
        .cmd_config()
        .args(["activate", "web:v3", "--lock-timeout", "60"])
        .spawn();
    // After a second it says whom it waits for.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(d.outside().join("go"), "").unwrap();
    let out = holder.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "waiting for the lock held by pid {pid} activating v2"
        )),
        "{said}"
    );

    let events: Vec<_> = d
        .history()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(events, ["activated v1", "activated v2", "activated v3"]);
    assert_eq!(d.assert_current_complete(), "v3");
}
