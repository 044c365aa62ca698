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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

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

    let only: Vec<String> = std::env::var("RELEASECTL_SCENARIOS")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, scenario) in scenarios::ALL {
        if !only.is_empty() && !only.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        ran += 1;
        eprintln!("=== {name}");
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(&mut c)));
        let took = started.elapsed();
        match outcome {
            Ok(()) => eprintln!("=== {name}: ok ({took:.1?})"),
            Err(_) => {
                eprintln!("=== {name}: FAILED ({took:.1?})");
                failed.push(*name);
            }
        }
    }
    assert!(ran > 0, "RELEASECTL_SCENARIOS={only:?} matches no scenario");
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
}
