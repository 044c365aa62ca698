//! The host around an app: its service manager (systemd over D-Bus, or
//! none), health checks, the commands it runs, sd_notify, and SIGINT/SIGTERM.
//!
//! May import: config, fs and the base modules; never state, staging,
//! activation or cli.

pub mod cancel;
pub mod connections;
pub mod health;
pub mod notify;
pub mod process;
pub mod services;
pub mod systemd;
