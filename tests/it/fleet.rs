//! Real Ansible against three real systemd hosts: the collection in
//! `ansible/ansible_collections/releasectl/fleet`, built and installed the
//! way a user installs it, rolls releases out over SSH to three
//! systemd-nspawn containers (sshd, nginx and the releasectl .deb in each),
//! and every scenario is judged by the hosts — where `current` points, what
//! `releasectl status` says, what nginx serves — not by Ansible's exit code
//! alone.
//!
//! Every scenario is a test of its own (`cargo test --test it --
//! --include-ignored fleet::happy_path_without_a_failed_request`), but they
//! share one fleet, booted by the first of them that runs, and take turns
//! on it (a mutex); each starts from a state of its own (a host a failed
//! scenario left powered off is booted again first), so the order does not
//! matter and a failing one does not stop the others. The fleet is never
//! dropped; its containers die with the test process (see
//! `systemd/nspawn.rs`).
//!
//! `collection_passes_ansible_test_sanity` runs ansible-test's sanity tests
//! on the collection, beside the scenarios (it needs no host).
//!
//! Needs root, systemd-nspawn, openssh-server, nginx, the built .deb
//! (`packaging/build.sh`) and the Ansible venv (`target/ansible-venv`, or
//! `RELEASECTL_ANSIBLE_VENV`; `.ci/run` makes it): `#[ignore]`d, so a plain
//! `cargo test` lists them as ignored; with `--include-ignored` a missing
//! prerequisite fails them.

mod ansible;
mod apps;
mod bench;
mod fixture;
mod scenarios;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// Each scenario a test on the shared fleet.
macro_rules! fleet_scenarios {
    ($($name:ident)*) => {$(
        #[test]
        #[ignore = "needs root, systemd-nspawn, the built .deb and the Ansible venv (run with --include-ignored, as .ci/run does)"]
        fn $name() {
            on_the_shared_fleet(scenarios::$name);
        }
    )*};
}

fleet_scenarios! {
    happy_path_without_a_failed_request
    stage_fails_on_one_host_nothing_switches
    health_fails_on_the_last_host_all_roll_back
    host_lost_mid_run_others_roll_back_it_recovers
    check_mode_changes_nothing_and_rerun_is_unchanged
    two_rollouts_at_once_one_wins
    bluegreen_rollout_without_a_failed_request
    bluegreen_health_fails_on_the_last_host_all_roll_back
    socket_handover_rollout_without_a_failed_request
}

/// The first rollout wants hosts that never had a release. When the
/// scenarios ran in a fixed order it came first; now any may run before
/// it, so the app root of every host is emptied again (as `after_boot`
/// left it) before it runs.
#[test]
#[ignore = "needs root, systemd-nspawn, the built .deb and the Ansible venv (run with --include-ignored, as .ci/run does)"]
fn first_rollout_to_hosts_without_a_release() {
    on_the_shared_fleet(|fleet, ans| {
        fleet.empty_app_roots();
        scenarios::first_rollout_to_hosts_without_a_release(fleet, ans)
    });
}

/// The fleet and the Ansible set up for it, booted by the first scenario
/// that runs; the lock is also the scenarios' turn. A scenario that panics
/// poisons it; the next one takes its turn all the same.
static SHARED: Mutex<Option<(fixture::Fleet, ansible::Ansible)>> = Mutex::new(None);

/// Set once the fleet was tried, so that a boot that failed is reported by
/// every scenario at once instead of retried by each.
static BOOT_TRIED: AtomicBool = AtomicBool::new(false);

fn on_the_shared_fleet(scenario: fn(&mut fixture::Fleet, &ansible::Ansible)) {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if shared.is_none() {
        assert!(
            !BOOT_TRIED.swap(true, Ordering::SeqCst),
            "the shared fleet failed to boot (see the first scenario that ran)"
        );
        let venv = ansible::venv_checked();
        let fleet = fixture::Fleet::boot_checked();
        let ans = ansible::Ansible::setup(&venv, &fleet);
        *shared = Some((fleet, ans));
    }
    let (fleet, ans) = shared.as_mut().expect("booted above");
    fleet.revive();
    scenario(fleet, ans);
}

/// `ansible-test sanity` passes for the collection. A test of its own: it
/// needs no host, so it runs beside the scenarios.
#[test]
#[ignore = "needs the Ansible venv (run with --include-ignored, as .ci/run does)"]
fn collection_passes_ansible_test_sanity() {
    ansible::sanity(&ansible::venv_checked());
}
