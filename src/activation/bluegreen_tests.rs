//! Blue/green without a system: a temp-dir root with slot links and a
//! front file, and a fake service manager that keeps which instances run
//! and records what it was asked, with what the front named at that moment.

use super::*;
use crate::config::app::App;
use crate::config::{Action, BlueGreen};
use crate::error::Kind;
use crate::host::cancel::Cancel;
use crate::host::services::ServiceManager;
use crate::state::pending::{self, Pending};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Instances that run, and every job: (what, unit, slot the front named).
struct FakeInstances {
    front: PathBuf,
    running: BTreeSet<String>,
    jobs: Vec<(&'static str, String, String)>,
    /// A restart of this unit fails (its new release cannot start).
    failing: Option<&'static str>,
}

impl FakeInstances {
    fn fronted(&self) -> String {
        let text = std::fs::read_to_string(&self.front).unwrap_or_default();
        match text.trim() {
            "server 127.0.0.1:1;" => "blue".into(),
            "server 127.0.0.1:2;" => "green".into(),
            other => format!("?{other}"),
        }
    }

    fn job(&mut self, what: &'static str, unit: &str) {
        let front = self.fronted();
        self.jobs.push((what, unit.to_string(), front));
    }
}

impl ServiceManager for FakeInstances {
    fn apply(&mut self, unit: &str, action: Action, _: Duration, _: &Cancel) -> anyhow::Result<()> {
        let what = match action {
            Action::Reload => "reload",
            _ => "restart",
        };
        self.job(what, unit);
        if what == "restart" {
            if self.failing == Some(unit) {
                self.running.remove(unit);
                anyhow::bail!("{unit} failed (Result: exit-code)");
            }
            self.running.insert(unit.to_string());
        }
        Ok(())
    }

    fn probe(&mut self, _: &str, _: Action) -> anyhow::Result<String> {
        Ok("active".into())
    }

    fn start_stop(
        &mut self,
        unit: &str,
        start: bool,
        _: Duration,
        _: &Cancel,
    ) -> anyhow::Result<()> {
        self.job(if start { "start" } else { "stop" }, unit);
        if start {
            self.running.insert(unit.to_string());
        } else {
            self.running.remove(unit);
        }
        Ok(())
    }
}

/// v1 live in slot blue (running, fronted); v2 staged, healthy unless
/// `v2_sick`. Slot ports 1 and 2: nothing connects to them, so a drain
/// ends at once.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    front: PathBuf,
    app: App,
}

/// The transaction tests' root (v1 live, v2 staged, health = a `healthy`
/// file), with v1 in slot blue, a front naming blue, and no other unit.
fn fixture(v2_sick: bool) -> Fixture {
    let super::tests::Fixture {
        _dir: dir,
        root,
        mut app,
    } = super::tests::fixture(v2_sick);
    app.config.services.units.clear();
    std::fs::create_dir(root.join("slots")).unwrap();
    std::os::unix::fs::symlink("../releases/v1", root.join("slots/blue")).unwrap();
    let fronts = dir.path().join("fronts");
    std::fs::create_dir(&fronts).unwrap();
    let front = fronts.join("app.conf");
    std::fs::write(&front, "server 127.0.0.1:1;\n").unwrap();
    app.config.bluegreen = Some(BlueGreen {
        unit: "app@.service".into(),
        slots: [("blue".into(), 1), ("green".into(), 2)],
        front: front.clone(),
        front_line: "server 127.0.0.1:{port};".into(),
        front_units: vec!["nginx.service".into()],
        drain: Duration::ZERO,
    });
    Fixture {
        _dir: dir,
        root,
        front,
        app,
    }
}

impl Fixture {
    fn instances(&self) -> FakeInstances {
        FakeInstances {
            front: self.front.clone(),
            running: BTreeSet::from(["app@blue.service".to_string()]),
            jobs: Vec::new(),
            failing: None,
        }
    }

    fn activate(&self, units: &mut FakeInstances) -> crate::error::Result<Outcome> {
        activate(
            &self.app,
            &Target::Release("v2".into()),
            &Options::default(),
            units,
            &Cancel::never(),
        )
    }

    fn link(&self, path: &str) -> String {
        let target = std::fs::read_link(self.root.join(path)).unwrap();
        target.file_name().unwrap().to_string_lossy().into_owned()
    }
}

/// A refused switch: exit 11, v1 live again, blue the only instance.
#[track_caller]
fn assert_blue_still_serves(f: &Fixture, units: &FakeInstances, err: &crate::error::Error) {
    assert_eq!(err.kind(), Kind::ActivationFailed, "{err}");
    assert_eq!(units.running, running(&["app@blue.service"]));
    assert_eq!(f.link("current"), "v1");
}

fn jobs(list: &[(&'static str, &str, &str)]) -> Vec<(&'static str, String, String)> {
    list.iter()
        .map(|(w, u, f)| (*w, u.to_string(), f.to_string()))
        .collect()
}

fn running(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|u| u.to_string()).collect()
}

#[test]
fn the_new_instance_is_fronted_only_after_its_gate_and_the_old_stops_last() {
    let f = fixture(false);
    let mut units = f.instances();
    f.activate(&mut units).unwrap();
    assert_eq!(
        units.jobs,
        jobs(&[
            ("restart", "app@green.service", "blue"),
            ("reload", "nginx.service", "green"),
            ("stop", "app@blue.service", "green"),
        ])
    );
    assert_eq!(units.running, running(&["app@green.service"]));
    assert_eq!(
        (f.link("current"), f.link("slots/green")),
        ("v2".into(), "v2".into())
    );
    assert_eq!(f.link("slots/blue"), "v1", "the old slot keeps its release");
}

#[test]
fn a_new_instance_that_fails_its_gate_is_never_fronted_and_the_old_never_stops() {
    let f = fixture(true);
    let mut units = f.instances();
    let err = f.activate(&mut units).unwrap_err();
    assert_blue_still_serves(&f, &units, &err);
    assert_eq!(
        units.jobs,
        jobs(&[
            ("restart", "app@green.service", "blue"),
            ("stop", "app@green.service", "blue"),
        ])
    );
}

#[test]
fn a_new_instance_that_cannot_start_is_stopped_and_never_fronted() {
    let f = fixture(false);
    let mut units = f.instances();
    units.failing = Some("app@green.service");
    let err = f.activate(&mut units).unwrap_err();
    assert_blue_still_serves(&f, &units, &err);
    assert!(
        units.jobs.iter().all(|(_, _, front)| front == "blue"),
        "{:?}",
        units.jobs
    );
}

#[test]
fn a_failed_post_activate_hook_puts_the_front_back_before_the_new_instance_stops() {
    let mut f = fixture(false);
    f.app.config.hooks.post_activate = vec![vec!["/bin/false".into()]];
    let mut units = f.instances();
    let err = f.activate(&mut units).unwrap_err();
    assert_blue_still_serves(&f, &units, &err);
    assert_eq!(
        units.jobs,
        jobs(&[
            ("restart", "app@green.service", "blue"),
            ("reload", "nginx.service", "green"),
            ("reload", "nginx.service", "blue"),
            ("stop", "app@green.service", "blue"),
        ])
    );
}

#[test]
fn a_front_write_killed_before_its_rename_does_not_block_the_next_switch() {
    let f = fixture(false);
    let leftover = f.front.with_file_name(".app.conf.releasectl-tmp");
    std::fs::write(&leftover, "half a fr").unwrap();
    let mut units = f.instances();
    f.activate(&mut units).unwrap();
    assert_eq!(units.fronted(), "green");
    assert!(!leftover.exists());
}

/// A kill after the front named green (v2) and before the commit, then a
/// power cut: the boot unit's `recover --no-reload` puts `current` back on
/// v1 and the front back on blue, which runs v1, without any unit job.
#[test]
fn recovery_at_boot_fronts_the_slot_that_runs_the_restored_release() {
    let f = fixture(false);
    let state = f.app.state_dir(true).unwrap().unwrap();
    pending::write(
        &state,
        &Pending {
            from: Some("v1".into()),
            to: "v2".into(),
            pid: 999_999,
            started: "2026-12-06T00:00:00Z".into(),
            history_offset: 0,
        },
    )
    .unwrap();
    replace_link(&f.root.join("current"), "releases/v2");
    std::os::unix::fs::symlink("../releases/v2", f.root.join("slots/green")).unwrap();
    std::fs::write(&f.front, "server 127.0.0.1:2;\n").unwrap();

    let recovered = recover(&f.app, true, Duration::from_secs(1), |_| {
        panic!("no unit job at boot")
    })
    .unwrap();
    assert!(recovered);
    assert_eq!(f.link("current"), "v1");
    assert_eq!(f.instances().fronted(), "blue");

    // Already right: the file is left as it is.
    let before = std::fs::metadata(&f.front).unwrap().modified().unwrap();
    recover(&f.app, true, Duration::from_secs(1), |_| {
        panic!("no unit job")
    })
    .unwrap();
    assert_eq!(
        std::fs::metadata(&f.front).unwrap().modified().unwrap(),
        before
    );
}

fn replace_link(link: &Path, target: &str) {
    let tmp = link.with_extension("tmp");
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// `activate --force` of the live release (v1, in blue) whose new instance
/// fails its gate, or whose post_activate hook fails once it is fronted:
/// as for any other release, the front ends on blue, which was never
/// stopped, and the new instance is stopped; v1 stays live.
#[test]
fn a_failed_forced_activation_undoes_its_switch_of_instances() {
    for hook_fails in [false, true] {
        let mut f = fixture(false);
        if hook_fails {
            f.app.config.hooks.post_activate = vec![vec!["/bin/false".into()]];
        } else {
            std::fs::remove_file(f.root.join("releases/v1/healthy")).unwrap();
        }
        let mut units = f.instances();
        let forced = Options {
            force: true,
            ..Options::default()
        };
        let err = activate(
            &f.app,
            &Target::Release("v1".into()),
            &forced,
            &mut units,
            &Cancel::never(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), Kind::ActivationFailed, "{err}");
        assert_eq!(
            units.running,
            running(&["app@blue.service"]),
            "hook fails: {hook_fails}: {:?}",
            units.jobs
        );
        assert_eq!(units.fronted(), "blue", "hook fails: {hook_fails}");
        assert_eq!(f.link("current"), "v1");
    }
}

/// After `activate --force` of the live release, both slots run v1 and the
/// front names the new one (green). `recover`, and the boot unit, leave the
/// front on green: no switch back to blue, whose instance was stopped.
#[test]
fn recovery_keeps_the_fronted_slot_when_both_run_the_live_release() {
    let f = fixture(false);
    let mut units = f.instances();
    let forced = Options {
        force: true,
        ..Options::default()
    };
    activate(
        &f.app,
        &Target::Release("v1".into()),
        &forced,
        &mut units,
        &Cancel::never(),
    )
    .unwrap();
    assert_eq!(
        (f.link("slots/blue"), f.link("slots/green")),
        ("v1".into(), "v1".into())
    );
    assert_eq!(units.fronted(), "green");
    assert_eq!(units.running, running(&["app@green.service"]));

    recover(&f.app, true, Duration::from_secs(1), |_| {
        panic!("no unit job at boot")
    })
    .unwrap();
    assert_eq!(units.fronted(), "green", "the boot unit moved the front");
    let mut services = Some(Box::new(units) as Box<dyn ServiceManager>);
    recover(&f.app, false, Duration::from_secs(1), |_| {
        Ok(services.take().unwrap())
    })
    .unwrap();
    assert_eq!(f.instances().fronted(), "green", "recover moved the front");
}

/// A manager that must not be asked for any job.
struct NoJobs;

impl ServiceManager for NoJobs {
    fn apply(&mut self, unit: &str, _: Action, _: Duration, _: &Cancel) -> anyhow::Result<()> {
        panic!("asked to act on {unit}");
    }

    fn probe(&mut self, _: &str, _: Action) -> anyhow::Result<String> {
        Ok("active".into())
    }

    fn start_stop(
        &mut self,
        unit: &str,
        start: bool,
        _: Duration,
        _: &Cancel,
    ) -> anyhow::Result<()> {
        panic!("asked to {} {unit}", if start { "start" } else { "stop" });
    }
}

/// `activate --no-reload` moves `current` to a release no slot runs: a
/// later `recover` must not stop the instance that serves (it stopped
/// both, leaving nothing serving).
#[test]
fn recover_stops_nothing_when_no_slot_runs_current() {
    let f = fixture(false);
    let mut units = f.instances();
    let no_reload = Options {
        no_reload: true,
        ..Options::default()
    };
    activate(
        &f.app,
        &Target::Release("v2".into()),
        &no_reload,
        &mut units,
        &Cancel::never(),
    )
    .unwrap();
    assert!(units.jobs.is_empty(), "{:?}", units.jobs);
    assert_eq!(f.link("current"), "v2");
    recover(&f.app, false, Duration::from_secs(1), |_| {
        Ok(Box::new(NoJobs))
    })
    .unwrap();
    assert_eq!(f.instances().fronted(), "blue");
}
