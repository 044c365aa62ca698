//! The transaction without a system: a temp-dir root, a fake service
//! manager that records what it was asked and fails where told, and health
//! checks that are commands looking at the release they run in.

use super::recover::{recover_pending, Recovery};
use super::*;
use crate::config::app::App;
use crate::config::app::Source;
use crate::config::Action;
use crate::error::Result;
use crate::fs::dir::Dir;
use crate::host::cancel::Cancel;
use crate::host::services::ServiceManager;
use crate::state::history;
use crate::state::history::{Entry, Event};
use crate::state::pending;
use crate::state::pending::Pending;
use std::path::Path;
use std::time::Duration;

/// What the fake was asked: (unit, release `current` named at that moment).
type Calls = Vec<(String, String)>;

struct FakeUnits {
    root: std::path::PathBuf,
    calls: Calls,
    /// Fail a job while `current` names this release.
    fail_for: Option<&'static str>,
    /// Trigger this token during the job (a signal arriving mid-reload).
    cancel_during: Option<Cancel>,
}

impl FakeUnits {
    fn new(root: &Path) -> FakeUnits {
        FakeUnits {
            root: root.to_path_buf(),
            calls: Vec::new(),
            fail_for: None,
            cancel_during: None,
        }
    }

    fn current(&self) -> String {
        let link = std::fs::read_link(self.root.join("current")).unwrap();
        link.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl ServiceManager for FakeUnits {
    fn apply(&mut self, unit: &str, _: Action, _: Duration, _: &Cancel) -> anyhow::Result<()> {
        let serving = self.current();
        self.calls.push((unit.to_string(), serving.clone()));
        if let Some(c) = self.cancel_during.take() {
            c.trigger();
        }
        if self.fail_for == Some(serving.as_str()) {
            anyhow::bail!("{unit} failed (Result: exit-code)");
        }
        Ok(())
    }

    fn probe(&mut self, _: &str, _: Action) -> anyhow::Result<String> {
        Ok("active".into())
    }
}

/// A root with releases v1 (healthy), v2 (healthy unless `sick`), v1 live.
pub(super) struct Fixture {
    pub(super) _dir: tempfile::TempDir,
    pub(super) root: std::path::PathBuf,
    pub(super) app: App,
}

pub(super) fn fixture(v2_sick: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("app");
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(root.join("releases").join(v)).unwrap();
        if !(v == "v2" && v2_sick) {
            std::fs::write(root.join("releases").join(v).join("healthy"), "").unwrap();
        }
    }
    std::os::unix::fs::symlink("releases/v1", root.join("current")).unwrap();
    let mut app = Source::Root(root.clone()).open(None).unwrap();
    app.config.services.units = vec!["web.service".into()];
    app.config.health.command = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "test -e healthy".into(),
    ]);
    app.config.health.retries = Some(1);
    Fixture {
        _dir: dir,
        root,
        app,
    }
}

impl Fixture {
    fn current(&self) -> String {
        let link = std::fs::read_link(self.root.join("current")).unwrap();
        link.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn pending(&self) -> bool {
        self.root.join(".releasectl/pending.json").exists()
    }

    fn events(&self) -> Vec<(Event, Option<String>)> {
        let state = self.app.state_dir(false).unwrap();
        history::read(state.as_ref())
            .unwrap()
            .into_iter()
            .map(|e| (e.event, e.live))
            .collect()
    }

    fn activate(&self, units: &mut FakeUnits, cancel: &Cancel) -> Result<Outcome> {
        activate(
            &self.app,
            &Target::Release("v2".into()),
            &Options::default(),
            units,
            cancel,
        )
    }
}

/// The rollback's mark: the units acted for v2, then again for v1; v1 is
/// live and no intent is left.
fn assert_units_redone_and_v1_back(f: &Fixture, units: &FakeUnits) {
    assert_eq!(
        units.calls,
        calls(&[("web.service", "v2"), ("web.service", "v1")])
    );
    assert_eq!(f.current(), "v1");
    assert!(!f.pending());
}

fn calls(list: &[(&str, &str)]) -> Calls {
    list.iter()
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect()
}

#[test]
fn commit_reloads_once_for_the_new_release() {
    let f = fixture(false);
    let mut units = FakeUnits::new(&f.root);
    let out = f.activate(&mut units, &Cancel::never()).unwrap();
    assert_eq!(
        out,
        Outcome::Activated {
            from: Some("v1".into()),
            to: "v2".into()
        }
    );
    assert_eq!(units.calls, calls(&[("web.service", "v2")]));
    assert_eq!(f.current(), "v2");
    assert!(!f.pending());
    assert_eq!(f.events(), vec![(Event::Activated, Some("v2".into()))]);
}

#[test]
fn failed_unit_job_rolls_back_and_redoes_the_units() {
    let f = fixture(false);
    let mut units = FakeUnits::new(&f.root);
    units.fail_for = Some("v2");
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert_units_redone_and_v1_back(&f, &units);
    assert_eq!(f.events(), vec![(Event::RolledBack, Some("v1".into()))]);
}

#[test]
fn failed_health_rolls_back_and_the_old_release_is_checked_again() {
    let f = fixture(true);
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert!(e.to_string().contains("health check failed"), "{e}");
    assert_eq!(f.current(), "v1");
    assert_eq!(f.events(), vec![(Event::RolledBack, Some("v1".into()))]);
}

#[test]
fn a_restored_release_that_fails_the_gate_is_a_failed_rollback() {
    // Both sick: the rollback's own check of v1 fails too, so v1 is not
    // known to serve. Manual attention, and the intent stays for recover.
    let f = fixture(true);
    std::fs::remove_file(f.root.join("releases/v1/healthy")).unwrap();
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ROLLBACK_FAILED, "{e}");
    assert!(e.to_string().contains("v1 after the rollback"), "{e}");
    assert_eq!(f.current(), "v1");
    assert!(f.pending(), "the intent is kept for `recover`");
    assert_eq!(f.events(), vec![(Event::RollbackFailed, Some("v1".into()))]);
}

#[test]
fn failed_rollback_job_keeps_the_intent() {
    let f = fixture(true);
    let mut units = FakeUnits::new(&f.root);
    units.fail_for = Some("v1");
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ROLLBACK_FAILED, "{e}");
    assert!(f.pending());
    // The next activation recovers first: `recovered`, then its own outcome.
    let mut units = FakeUnits::new(&f.root);
    std::fs::write(f.root.join("releases/v2/healthy"), "").unwrap();
    f.activate(&mut units, &Cancel::never()).unwrap();
    let events: Vec<Event> = f.events().into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        events,
        vec![Event::RollbackFailed, Event::Recovered, Event::Activated]
    );
    assert_eq!(f.current(), "v2");
}

#[test]
fn a_signal_during_the_unit_job_rolls_back() {
    let f = fixture(false);
    let cancel = Cancel::never();
    let mut units = FakeUnits::new(&f.root);
    units.cancel_during = Some(cancel.clone());
    let e = f.activate(&mut units, &cancel).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert_units_redone_and_v1_back(&f, &units);
}

#[test]
fn a_failed_post_swap_hook_reloads_nothing() {
    let mut f = fixture(false);
    f.app.config.hooks.post_swap = vec![vec!["/bin/false".into()]];
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert!(units.calls.is_empty(), "{:?}", units.calls);
    assert_eq!(f.current(), "v1");
}

#[test]
fn a_failed_pre_activate_hook_changes_nothing() {
    let mut f = fixture(false);
    f.app.config.hooks.pre_activate = vec![vec!["/bin/false".into()]];
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert!(units.calls.is_empty());
    assert_eq!(f.current(), "v1");
    assert!(!f.pending());
    assert_eq!(f.events(), vec![(Event::Aborted, Some("v1".into()))]);
}

// Named fault points (see crate::fault): where the disk fails decides
// whether anything changed, and the outcome says so.

fn reasons(f: &Fixture) -> Vec<String> {
    let state = f.app.state_dir(false).unwrap();
    history::read(state.as_ref())
        .unwrap()
        .into_iter()
        .map(|e| e.reason.unwrap_or_default())
        .collect()
}

#[test]
fn failing_to_write_the_intent_changes_nothing() {
    let f = fixture(false);
    let mut units = FakeUnits::new(&f.root);
    crate::fault::arm(crate::fault::point::PENDING_WRITE);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::OPERATIONAL, "{e}");
    assert!(e.one_line().contains("pending.json.tmp"), "{e}");
    assert_eq!(f.current(), "v1");
    assert!(!f.pending());
    assert!(units.calls.is_empty());
    assert!(f.events().is_empty());
}

#[test]
fn a_failed_fsync_after_the_swap_rolls_back() {
    let f = fixture(false);
    let mut units = FakeUnits::new(&f.root);
    crate::fault::arm(crate::fault::point::SWAP_SYNC);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert_eq!(f.current(), "v1");
    assert!(!f.pending());
    assert!(units.calls.is_empty(), "the units never acted for v2");
    assert_eq!(f.events(), vec![(Event::RolledBack, Some("v1".into()))]);
    assert!(reasons(&f)[0].contains("fsync"), "{:?}", reasons(&f));
}

#[test]
fn a_commit_that_cannot_be_recorded_is_undone() {
    let f = fixture(false);
    let mut units = FakeUnits::new(&f.root);
    crate::fault::arm(crate::fault::point::HISTORY_APPEND);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert_units_redone_and_v1_back(&f, &units);
    assert_eq!(f.events(), vec![(Event::RolledBack, Some("v1".into()))]);
    assert!(reasons(&f)[0].contains("recording the outcome failed"));
}

#[test]
fn a_rollback_that_cannot_be_recorded_keeps_the_intent() {
    // Both the commit record and the rollback's record fail: v1 is live
    // and its units redone, and pending.json stays so that the next run
    // records what happened.
    let f = fixture(false);
    let mut units = FakeUnits::new(&f.root);
    crate::fault::arm(crate::fault::point::HISTORY_APPEND);
    crate::fault::arm(crate::fault::point::HISTORY_APPEND);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert!(e.to_string().contains("pending.json kept"), "{e}");
    assert_eq!(f.current(), "v1");
    assert!(f.pending());
    assert!(f.events().is_empty());

    let state = f.app.state_dir(false).unwrap().unwrap();
    let p = pending::read(Some(&state)).unwrap().unwrap();
    let found = recover_pending(&f.app, &state, &p).unwrap();
    assert_eq!(found, Recovery::Restored { moved: false });
    assert!(!f.pending());
    assert_eq!(f.events(), vec![(Event::Recovered, Some("v1".into()))]);
}

/// What a kill of pid 999999 right after its swap to v2 leaves: the
/// intent record and `current` on v2.
fn killed_after_the_swap(f: &Fixture) -> (Dir, Pending) {
    let state = f.app.state_dir(true).unwrap().unwrap();
    let p = Pending {
        from: Some("v1".into()),
        to: "v2".into(),
        pid: 999_999,
        started: "2026-01-01T00:00:00Z".into(),
        history_offset: 0,
    };
    pending::write(&state, &p).unwrap();
    f.app.root.swap_current("v2").unwrap();
    (state, p)
}

#[test]
fn recovery_of_a_kill_after_the_swap_moves_current_back() {
    let f = fixture(false);
    let (state, p) = killed_after_the_swap(&f);
    assert_eq!(
        recover_pending(&f.app, &state, &p).unwrap(),
        Recovery::Restored { moved: true }
    );
    assert_eq!(f.current(), "v1");
    assert!(!f.pending());
}

#[test]
fn recovery_of_a_kill_after_the_commit_record_keeps_the_outcome() {
    // Killed between appending "activated" and removing the intent: the
    // outcome stands, only the stale intent goes.
    let f = fixture(false);
    let (state, p) = killed_after_the_swap(&f);
    let mut e = Entry::new(Event::Activated, None, Some("v1"), Some("v2"));
    e.pid = 999_999;
    history::append(&state, &e).unwrap();
    assert_eq!(
        recover_pending(&f.app, &state, &p).unwrap(),
        Recovery::AlreadyRecorded
    );
    assert_eq!(f.current(), "v2");
    assert!(!f.pending());
}

/// Trigger `cancel` once `marker` exists in the release (the phase began).
fn cancel_when(dir: &Path, marker: &str, cancel: &Cancel) -> std::thread::JoinHandle<()> {
    let path = dir.join(marker);
    let cancel = cancel.clone();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while !path.exists() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        cancel.trigger();
    })
}

#[test]
fn a_signal_during_the_health_check_rolls_back() {
    // v2 hangs in its check; v1 passes the rollback's re-check.
    let mut f = fixture(true);
    f.app.config.health.command = Some(
        [
            "/bin/sh",
            "-c",
            "test -e healthy || { touch checking; exec sleep 30; }",
        ]
        .map(String::from)
        .to_vec(),
    );
    let cancel = Cancel::never();
    let waiter = cancel_when(&f.root.join("releases/v2"), "checking", &cancel);
    let started = std::time::Instant::now();
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &cancel).unwrap_err();
    waiter.join().unwrap();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert!(e.to_string().contains("SIGTERM"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the check was not stopped"
    );
    assert_units_redone_and_v1_back(&f, &units);
}

#[test]
fn a_signal_during_a_post_activate_hook_rolls_back() {
    let mut f = fixture(false);
    f.app.config.health.command = None;
    f.app.config.hooks.post_activate = vec![["/bin/sh", "-c", "touch hooked; exec sleep 30"]
        .map(String::from)
        .to_vec()];
    let cancel = Cancel::never();
    let waiter = cancel_when(&f.root.join("releases/v2"), "hooked", &cancel);
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &cancel).unwrap_err();
    waiter.join().unwrap();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert!(e.to_string().contains("SIGTERM"), "{e}");
    assert_eq!(f.current(), "v1");
    assert_eq!(f.events(), vec![(Event::RolledBack, Some("v1".into()))]);
}

#[test]
fn a_signal_during_a_pre_activate_hook_changes_nothing() {
    let mut f = fixture(false);
    f.app.config.hooks.pre_activate = vec![["/bin/sh", "-c", "touch hooked; exec sleep 30"]
        .map(String::from)
        .to_vec()];
    let cancel = Cancel::never();
    let waiter = cancel_when(&f.root.join("releases/v2"), "hooked", &cancel);
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &cancel).unwrap_err();
    waiter.join().unwrap();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert!(e.to_string().contains("nothing changed"), "{e}");
    assert!(units.calls.is_empty());
    assert_eq!(f.current(), "v1");
    assert!(!f.pending());
}

/// A hook that appends `WORDS` (shell words, expanded) to `log`.
fn logging_hook(log: &Path, words: &str) -> Vec<String> {
    let script = format!("echo \"{words}\" >> '{}'", log.display());
    ["/bin/sh", "-c", &script].map(String::from).to_vec()
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn hooks_and_checks_know_why_they_run() {
    // v2 fails its check: rolled back, v1 re-checked, on_failure told why.
    let mut f = fixture(true);
    let log = f._dir.path().join("log");
    let why = "$RELEASECTL_PHASE $RELEASECTL_ACTION $RELEASECTL_RELEASE $RELEASECTL_PREVIOUS";
    f.app.config.hooks.pre_activate = vec![logging_hook(&log, why)];
    let check = format!(
        "echo \"health $RELEASECTL_ACTION $RELEASECTL_RELEASE\" >> '{}'; test -e healthy",
        log.display()
    );
    f.app.config.health.command = Some(["/bin/sh", "-c", &check].map(String::from).to_vec());
    f.app.config.hooks.on_failure = vec![
        vec!["/bin/false".to_string()],
        logging_hook(
            &log,
            &format!("{why} $RELEASECTL_EXIT $RELEASECTL_LIVE $RELEASECTL_FAILURE"),
        ),
    ];
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &Cancel::never()).unwrap_err();
    // A failing on_failure hook changes nothing: still 11, rolled back.
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert_units_redone_and_v1_back(&f, &units);
    let lines = log_lines(&log);
    assert_eq!(lines[0], "pre_activate activate v2 v1");
    assert!(
        lines.contains(&"health activate v2".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"health rollback-of-failed v1".to_string()),
        "{lines:?}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("on_failure activate v2 v1 11 v1 "),
        "{last}"
    );
    assert!(last.contains("rolled back to v1"), "{last}");
    // The hook's record is gone once it ended.
    assert!(!f.root.join(".releasectl").join(pending::HOOK_FILE).exists());
}

#[test]
fn a_rollback_tells_its_hooks_so() {
    let mut f = fixture(false);
    let log = f._dir.path().join("log");
    f.app.config.hooks.post_activate = vec![logging_hook(
        &log,
        "$RELEASECTL_ACTION $RELEASECTL_RELEASE $RELEASECTL_PREVIOUS",
    )];
    let mut units = FakeUnits::new(&f.root);
    // v1 is live but has no history yet: record it, then v2 and back.
    activate(
        &f.app,
        &Target::Release("v1".into()),
        &Options {
            force: true,
            ..Options::default()
        },
        &mut units,
        &Cancel::never(),
    )
    .unwrap();
    f.activate(&mut units, &Cancel::never()).unwrap();
    let back = Options {
        mark_from_bad: true,
        ..Options::default()
    };
    activate(
        &f.app,
        &Target::PreviousGood,
        &back,
        &mut units,
        &Cancel::never(),
    )
    .unwrap();
    assert_eq!(f.current(), "v1");
    assert_eq!(
        log_lines(&log),
        ["activate v1 v1", "activate v2 v1", "rollback v1 v2"]
    );
}

#[test]
fn an_interrupted_activation_is_recorded_as_such_and_not_bad() {
    let mut f = fixture(false);
    let log = f._dir.path().join("log");
    f.app.config.health.command = None;
    f.app.config.hooks.post_activate = vec![["/bin/sh", "-c", "touch hooked; exec sleep 30"]
        .map(String::from)
        .to_vec()];
    f.app.config.hooks.on_failure = vec![logging_hook(&log, "on_failure ran")];
    let cancel = Cancel::never();
    let waiter = cancel_when(&f.root.join("releases/v2"), "hooked", &cancel);
    let mut units = FakeUnits::new(&f.root);
    let e = f.activate(&mut units, &cancel).unwrap_err();
    waiter.join().unwrap();
    assert_eq!(e.exit_code(), crate::error::exit::ACTIVATION_FAILED, "{e}");
    assert_eq!(f.current(), "v1");
    let state = f.app.state_dir(false).unwrap();
    let last = history::read(state.as_ref()).unwrap().pop().unwrap();
    assert_eq!(last.event, Event::RolledBack);
    assert_eq!(last.interrupted.as_deref(), Some("SIGTERM"));
    assert!(history::summary(state.as_ref()).unwrap().bad.is_empty());
    assert!(
        log_lines(&log).is_empty(),
        "on_failure ran after an interruption"
    );
    // --refuse-bad does not refuse it.
    let again = Options {
        refuse_bad: true,
        ..Options::default()
    };
    f.app.config.hooks.post_activate.clear();
    activate(
        &f.app,
        &Target::Release("v2".into()),
        &again,
        &mut units,
        &Cancel::never(),
    )
    .unwrap();
    assert_eq!(f.current(), "v2");
}
