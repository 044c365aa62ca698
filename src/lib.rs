//! releasectl: atomic, locked, reversible release activation for systemd hosts.
//!
//! The activation transaction lives in [`activation`]; the on-disk pieces it
//! composes each have their own module.
#![forbid(unsafe_code)]

pub mod activation;
pub mod app;
pub mod cancel;
pub mod check;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod error;
pub mod health;
pub mod history;
pub mod journal;
pub mod lock;
pub mod log;
pub mod notify;
pub mod pending;
pub mod process;
pub mod release_id;
pub mod request;
pub mod root;
pub mod services;
pub mod stage;
pub mod store;
pub mod systemd;
