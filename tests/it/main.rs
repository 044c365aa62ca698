//! The integration tests, in one binary (`autotests = false`): each module
//! drives the real `releasectl` binary (and, for `systemd` and
//! `packaging`, a real systemd booted in a container) the way an operator
//! or an attacker would. `common` holds the shared helpers and the one
//! rule for a missing prerequisite: the test fails, naming it. Tests that
//! need root or a container are `#[ignore = "why"]`: a plain `cargo test`
//! counts them as ignored, `-- --include-ignored` runs them.
//!
//! Run one module with `cargo test --test it MODULE::`, e.g.
//! `cargo test --test it attack:: -- --include-ignored` (as root).

mod common;

mod activate;
mod attack;
mod bad_input;
mod bounds;
mod completion;
mod crash;
mod dedup;
mod demo;
mod fleet;
mod hook_output;
mod inputs;
mod journey;
mod json_schema;
mod locking;
mod man;
mod owner_attacks;
mod packaging;
mod privilege;
mod prune;
mod race;
mod request;
mod shared;
mod stage;
mod systemd;
mod verify;
