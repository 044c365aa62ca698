//! `bench/fleet-bench.py` against a booted fleet: an ignored test, run on
//! purpose with `cargo test --test it fleet::bench -- --ignored
//! --nocapture`. It prints numbers and asserts nothing about time.

use super::{ansible, fixture};
use std::process::Command;

/// Boots the fleet and hands it to `bench/fleet-bench.py` (rounds from
/// `FLEET_BENCH_ROUNDS`, default 5).
#[test]
#[ignore = "a benchmark: cargo test --test it fleet::bench -- --ignored --nocapture"]
fn run() {
    let venv = ansible::venv_checked();
    let fleet = fixture::Fleet::boot_checked();
    let ans = ansible::Ansible::setup(&venv, &fleet);
    let rounds = std::env::var("FLEET_BENCH_ROUNDS").unwrap_or_else(|_| "5".into());
    let status = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/fleet-bench.py"))
        .arg("--venv")
        .arg(&ans.venv)
        .arg("--config")
        .arg(ans.path("ansible.cfg"))
        .args(["--app", fixture::APP, "--rounds", &rounds])
        .arg("--hosts")
        .arg(fleet.hosts.len().to_string())
        .status()
        .expect("run bench/fleet-bench.py");
    assert!(status.success(), "fleet-bench.py failed: {status}");
}
