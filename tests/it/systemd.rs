//! releasectl under a real systemd: PID 1 in systemd-nspawn, the real units
//! from `units/`, real D-Bus jobs, real nginx, a real path unit, real signals.
//!
//! Every scenario is a test of its own (`cargo test --test it --
//! --include-ignored systemd::nginx_switches_release`), but they share one
//! container, booted by the first of them that runs: booting one per
//! scenario would multiply the run time on a two-core machine. The scenarios
//! take turns in it (a mutex), each with its own app, root, units and ports,
//! so the order they run in does not matter and a failing one does not
//! stop the others. The container is never dropped; it dies with the test
//! process (see `nspawn.rs`). The one scenario that reboots its machine,
//! `power_cut_then_boot_recovers`, boots a container of its own.
//!
//! Needs root and systemd-nspawn: `#[ignore]`d, so a plain `cargo test`
//! lists them as ignored; with `--include-ignored` (as `.ci/run` runs them)
//! a missing prerequisite fails them.
//!
//! A new scenario: a `pub(super) fn x_name(c: &mut Container)` in
//! `scenarios.rs` and one `name = x_name;` line below.

mod fixture;
pub mod nspawn;
mod scenarios;

use nspawn::Container;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// The scenarios that share the container: test name = scenario function.
macro_rules! shared_container_scenarios {
    ($($test:ident = $scenario:ident;)*) => {$(
        #[test]
        #[ignore = "needs root and systemd-nspawn (run with --include-ignored, as .ci/run does)"]
        fn $test() {
            in_the_shared_container(scenarios::$scenario);
        }
    )*};
}

shared_container_scenarios! {
    nginx_switches_release = a_nginx_switches_release;
    journal_fields = a2_journal_fields;
    failing_reload_rolls_back = b_failing_reload_rolls_back;
    failing_health_reloads_old_release = c_failing_health_reloads_old_release;
    stop_during_health_check_rolls_back = d_stop_during_health_check_rolls_back;
    path_unit_activates_requests = e_path_unit_activates_requests;
    simultaneous_starts_are_serialised = f_simultaneous_starts_are_serialised;
    restart_of_notify_service = g_restart_of_notify_service;
    zero_downtime_under_load = h_zero_downtime_under_load;
    killed_activation_is_recovered = i_killed_activation_is_recovered;
    bus_restart_during_reload_rolls_back = k_bus_restart_during_reload_rolls_back;
    bus_restart_during_reload_commits = k_bus_restart_during_reload_commits;
    sixteen_apps_behind_one_nginx_storm = l_sixteen_apps_behind_one_nginx_storm;
    health_gate_sees_the_new_nginx_config = m_health_gate_sees_the_new_nginx_config;
    nginx_t_post_swap_under_the_unit = n_nginx_t_post_swap_under_the_unit;
    unprivileged_member_stages_requests_and_starts = o_unprivileged_member_stages_requests_and_starts;
    nginx_recipe_first_deploy_starts_nginx = p_nginx_recipe_first_deploy_starts_nginx;
    prune_timer_prunes_an_app = q_prune_timer_prunes_an_app;
    privilege_drop_recipe_under_the_units = r_privilege_drop_recipe_under_the_units;
    socket_handover_drops_no_request = s_socket_handover_drops_no_request;
    blue_green_overlap = t_blue_green_overlap;
    blue_green_through_requests_packages_and_boot = u_blue_green_through_requests_packages_and_boot;
    handover_recipes_from_the_readme = v_handover_recipes_from_the_readme;
}

/// The power cut kills every process of the machine and boots it again:
/// the other scenarios must not find their services gone, so it has a
/// container of its own. It still takes its turn with the others.
#[test]
#[ignore = "needs root and systemd-nspawn (run with --include-ignored, as .ci/run does)"]
fn power_cut_then_boot_recovers() {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let mut c = booted("rctl-sysj");
    scenarios::j_power_cut_then_boot_recovers(&mut c);
}

/// The container the scenarios share, booted by the first that runs. Only
/// touched with [`TURN`] held.
static SHARED: Mutex<Option<Container>> = Mutex::new(None);

/// One scenario at a time, in any container of this suite. A scenario that
/// panics poisons it; the next one takes its turn all the same (the
/// scenarios do not share state, only the machine).
static TURN: Mutex<()> = Mutex::new(());

/// Set once the shared container was tried, so that a boot that failed is
/// reported by every scenario at once instead of retried by each.
static BOOT_TRIED: AtomicBool = AtomicBool::new(false);

fn in_the_shared_container(scenario: fn(&mut Container)) {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if shared.is_none() {
        assert!(
            !BOOT_TRIED.swap(true, Ordering::SeqCst),
            "the shared container failed to boot (see the first scenario that ran)"
        );
        *shared = Some(booted("rctl-sys"));
    }
    let c = shared.as_mut().expect("booted above");
    assert!(c.is_booted(), "the shared container is no longer running");
    scenario(c);
}

/// A container with the binary, the units and what the scenarios need,
/// booted and with the units loaded.
fn booted(prefix: &str) -> Container {
    let mut c = Container::create_checked(prefix, nspawn::Options::default());
    fixture::install(&c);
    scenarios::prepare(&c);
    c.boot();
    fixture::activate_installed(&c);
    c
}
