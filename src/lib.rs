//! releasectl: atomic, locked, reversible release activation for systemd hosts.
//!
//! The activation transaction lives in [`activation`]; the on-disk pieces it
//! composes each have their own module.
#![forbid(unsafe_code)]

mod activation;
mod app;
mod cancel;
mod check;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod completion;
mod config;
mod creds;
mod dedup;
pub mod error;
mod fault;
mod health;
mod history;
mod input;
mod journal;
mod lock;
pub mod log;
mod manifest;
mod manpage;
mod notify;
mod output;
mod passwd;
mod pending;
mod process;
mod progress;
mod release_id;
mod request;
mod root;
mod services;
mod shared;
mod signature;
mod stage;
mod staged;
mod store;
mod systemd;
mod tar_bounds;
