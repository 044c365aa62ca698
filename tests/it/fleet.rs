//! Real Ansible against three real systemd hosts: the collection in
//! `ansible/ansible_collections/releasectl/fleet`, built and installed the
//! way a user installs it, rolls releases out over SSH to three
//! systemd-nspawn containers (sshd, nginx and the releasectl .deb in each),
//! and every scenario is judged by the hosts — where `current` points, what
//! `releasectl status` says, what nginx serves — not by Ansible's exit code
//! alone.
//!
//! One fleet is booted and the scenarios run on it one after another, each
//! from a starting state of its own; a failing scenario does not stop the
//! others, and the test fails at the end naming every failed one.
//! `RELEASECTL_FLEET_SCENARIOS=happy,check` runs only scenarios whose names
//! start with one of the given prefixes.
//!
//! `collection_passes_ansible_test_sanity` runs ansible-test's sanity tests
//! on the collection, beside the scenarios (it needs no host).
//!
//! Needs root, systemd-nspawn, openssh-server, nginx, the built .deb
//! (`packaging/build.sh`) and the Ansible venv (`target/ansible-venv`, or
//! `RELEASECTL_ANSIBLE_VENV`; `.ci/run` makes it): skipped with a message
//! otherwise, and a failure under `CI=true`.

mod ansible;
mod bench;
mod fixture;
mod scenarios;

use std::time::Instant;

#[test]
fn rollouts_across_three_real_hosts() {
    let Some(venv) = ansible::venv_or_skip() else {
        return;
    };
    let Some(mut fleet) = fixture::Fleet::boot_or_skip() else {
        return;
    };
    let ans = ansible::Ansible::setup(&venv, &fleet);

    let started = Instant::now();
    crate::common::run_scenarios("RELEASECTL_FLEET_SCENARIOS", scenarios::ALL, |scenario| {
        fleet.revive();
        scenario(&mut fleet, &ans)
    });
    eprintln!("fleet: scenarios took {:.1?}", started.elapsed());
}

/// `ansible-test sanity` passes for the collection. A test of its own: it
/// needs no host, so it runs beside the scenarios.
#[test]
fn collection_passes_ansible_test_sanity() {
    let Some(venv) = ansible::venv_or_skip() else {
        return;
    };
    ansible::sanity(&venv);
}
