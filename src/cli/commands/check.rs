//! `releasectl check`: is this app ready to be activated? Config (already
//! parsed strictly by the time we get here), layout, and the units.

use crate::cli::output::Output;
use crate::config::app::App;
use crate::error::{Error, Result};
use crate::state::{lock, pending};
use serde::Serialize;

/// One line of the report: what was checked, and what was found (Err:
/// a problem that would make an activation fail).
type Check = (String, Result<String, String>);

/// Every check in order, then one report; exit 1 if any failed.
pub(super) fn run(app: &App, out: &Output) -> Result<()> {
    let mut results: Vec<Check> = Vec::new();
    let mut add = |what: &str, r: Result<String, String>| results.push((what.to_string(), r));
    layout(app, &mut add);
    state(app, &mut add);
    shared(app, &mut add);
    programs(app, &mut add);
    units(app, &mut add);
    report(app, &results, out)
}

/// The config, ROOT, `releases/` and `current`.
fn layout(app: &App, add: &mut impl FnMut(&str, Result<String, String>)) {
    add(
        "config",
        Ok(app
            .name
            .as_ref()
            .map_or("ad hoc (--root)".into(), |n| format!("{n}.toml parsed"))),
    );
    add("root", Ok(app.root.path().display().to_string()));
    add(
        "releases/",
        match app.root.releases_dir(false) {
            Ok(Some(_)) => Ok("directory".into()),
            // A fresh host set up per the README: nothing staged yet is
            // what a pre-flight expects, not a problem.
            Ok(None) => Ok("not created yet: no release is staged yet".into()),
            Err(e) => Err(e.one_line()),
        },
    );
    let current = app.root.current();
    add(
        "current",
        match &current {
            Ok(Some(id)) => app
                .root
                .check_release(id)
                .map(|_| id.clone())
                .map_err(|e| e.one_line()),
            Ok(None) => Ok("none yet".into()),
            Err(e) => Err(e.one_line()),
        },
    );
}

/// `.releasectl/`: the lock and an interrupted activation.
fn state(app: &App, add: &mut impl FnMut(&str, Result<String, String>)) {
    match app.state_dir(false) {
        Ok(Some(state)) => {
            add(
                "lock",
                lock::current_holder(&app.root, Some(&state))
                    .map(|h| h.map_or("free".into(), |h| format!("held by {h}")))
                    .map_err(|e| e.one_line()),
            );
            add(
                "pending",
                match pending::read(Some(&state)) {
                    Ok(None) => Ok("none".into()),
                    Ok(Some(p)) => Err(format!(
                        "interrupted activation to {} (run `releasectl recover`)",
                        p.to
                    )),
                    Err(e) => Err(e.one_line()),
                },
            );
        }
        Ok(None) => add(crate::fs::root::STATE_DIR, Ok("not created yet".into())),
        Err(e) => add(crate::fs::root::STATE_DIR, Err(e.one_line())),
    }
}

/// Each `[shared]` path: present, seeded by the first stage, or missing
/// where members stage but cannot create it.
fn shared(app: &App, add: &mut impl FnMut(&str, Result<String, String>)) {
    for (what, r) in crate::staging::shared::preflight(&app.root, &app.config.shared) {
        add(&what, r);
    }
}

/// Hooks and the health command run as root without $PATH: a program
/// that is missing or not executable fails every activation.
fn programs(app: &App, add: &mut impl FnMut(&str, Result<String, String>)) {
    let hooks = &app.config.hooks;
    let programs = [
        ("pre_activate", &hooks.pre_activate),
        ("post_swap", &hooks.post_swap),
        ("post_activate", &hooks.post_activate),
        ("on_failure", &hooks.on_failure),
    ]
    .into_iter()
    .flat_map(|(phase, list)| list.iter().map(move |argv| (phase, argv)))
    .chain(
        app.config
            .health
            .command
            .iter()
            .map(|argv| ("health", argv)),
    );
    for (phase, argv) in programs {
        let program = &argv[0];
        let r = rustix::fs::access(program.as_str(), rustix::fs::Access::EXEC_OK)
            .map(|()| "executable".to_string())
            .map_err(|e| format!("{program}: {}", std::io::Error::from(e)));
        add(&format!("{phase} {program}"), r);
    }
}

/// The units, probed over D-Bus (skipped when systemd is not reachable);
/// for a blue/green app also the front and both slots' instances.
fn units(app: &App, add: &mut impl FnMut(&str, Result<String, String>)) {
    let svc = &app.config.services;
    let mut fronted = None;
    if let Some(bg) = &app.config.bluegreen {
        let front = match crate::activation::serving(app) {
            Ok(Some(s)) => {
                fronted = Some(s.slot.clone());
                Ok(format!("names {} (port {})", s.slot, s.port))
            }
            Ok(None) => Err(format!(
                "{} names no slot: before the first activation write one, e.g. \
                 `{}`",
                bg.front.display(),
                bg.front_text(&bg.slots[0].0).trim_end()
            )),
            Err(e) => Err(e.one_line()),
        };
        add("bluegreen front", front);
    }
    if !svc.units.is_empty() || app.config.bluegreen.is_some() {
        match crate::host::systemd::service_manager(app, false) {
            Ok(mut mgr) => {
                for unit in &svc.units {
                    let r = mgr.probe(unit, svc.action).map_err(|e| format!("{e:#}"));
                    add(&format!("unit {unit}"), r);
                }
                for (slot, _) in app.config.bluegreen.iter().flat_map(|bg| &bg.slots) {
                    let bg = app.config.bluegreen.as_ref().expect("iterated");
                    let unit = bg.instance(slot);
                    let r = mgr
                        .probe_instance(&unit, fronted.as_ref() == Some(slot))
                        .map_err(|e| format!("{e:#}"));
                    add(&format!("unit {unit}"), r);
                }
            }
            Err(e) => add(
                "systemd",
                Ok(format!(
                    "not reachable, units not checked ({})",
                    e.one_line()
                )),
            ),
        }
    }
}

/// `check`'s report (schema `check`).
#[derive(Serialize)]
pub(super) struct Checked<'a> {
    pub(super) app: Option<&'a str>,
    /// No check failed.
    pub(super) ok: bool,
    pub(super) checks: Vec<CheckLine<'a>>,
}

#[derive(Serialize)]
pub(super) struct CheckLine<'a> {
    pub(super) check: &'a str,
    pub(super) ok: bool,
    pub(super) detail: &'a str,
}

impl CheckLine<'_> {
    fn of((check, found): &Check) -> CheckLine<'_> {
        let (ok, detail) = match found {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        CheckLine { check, ok, detail }
    }
}

/// The report, as text or JSON; an error naming how many checks failed.
fn report(app: &App, results: &[Check], out: &Output) -> Result<()> {
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    let report = Checked {
        app: app.name.as_deref(),
        ok: failed == 0,
        checks: results.iter().map(CheckLine::of).collect(),
    };
    out.print(&report, || {
        results
            .iter()
            .map(|(w, r)| match r {
                Ok(d) => format!("ok    {w}: {d}\n"),
                Err(d) => format!("FAIL  {w}: {d}\n"),
            })
            .collect()
    });
    if failed > 0 {
        return Err(Error::operational(format_args!(
            "{}: {failed} check(s) failed",
            app.label()
        )));
    }
    Ok(())
}
