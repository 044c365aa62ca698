//! releasectl under a real systemd: PID 1 in systemd-nspawn, the real units
//! from `units/`, real D-Bus jobs, real nginx, a real path unit, real signals.
//!
//! One container is booted and the scenarios run in it one after another,
//! each with its own app, root, units and ports (booting one container per
//! scenario would multiply the run time on a two-core machine). A failing
//! scenario does not stop the others; the test fails at the end naming every
//! failed scenario. `RELEASECTL_SCENARIOS=a_,e_` runs only scenarios whose
//! names start with one of the given prefixes.
//!
//! Needs root and systemd-nspawn: skipped with a message otherwise, and a
//! failure under `CI=true`.

mod fixture;
pub mod nspawn;
mod scenarios;

#[test]
fn releasectl_under_real_systemd() {
    let Some(mut c) = nspawn::Container::create_or_skip("rctl-sys", nspawn::Options::default())
    else {
        return;
    };
    fixture::install(&c);
    scenarios::prepare(&c);
    c.boot();
    fixture::activate_installed(&c);

    crate::common::run_scenarios("RELEASECTL_SCENARIOS", scenarios::ALL, |scenario| {
        scenario(&mut c)
    });
}
