//! releasectl: atomic, locked, reversible release activation for systemd hosts.
//!
//! The code is layered (docs/architecture.md has the map and the rule for
//! each layer); a module imports only from its own layer and those below:
//!
//! - [`cli`]: the command line, one file per subcommand (top);
//! - [`activation`]: the transaction, recovery and verification;
//! - [`staging`]: turning a directory or an archive into a release;
//! - [`state`]: what releasectl keeps on disk about an app;
//! - [`host`]: the host's service manager, processes and signals;
//! - [`config`]: an app's configuration and which app a command acts on;
//! - [`fs`]: directory handles, the app-root layout, acting as an owner;
//! - the base modules at this level: errors, logging, clock, release ids,
//!   fault points, the user database, the progress line; they import
//!   nothing but each other.
#![forbid(unsafe_code)]

mod activation;
pub mod cli;
pub mod clock;
mod config;
pub mod error;
mod fault;
mod fs;
mod host;
#[cfg(test)]
mod layers;
pub mod log;
mod passwd;
mod progress;
mod release_id;
mod staging;
mod state;
