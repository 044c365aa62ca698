//! `stage`: turning a directory or an archive into a release: its inputs
//! and their checks (checksums, signature, tar bounds), the copy or the
//! unpack, dedup against the current release, and shared paths.
//!
//! May import: state, host, config, fs and the base modules; never
//! activation or cli.

pub mod copy;
pub mod dedup;
pub mod input;
pub mod shared;
pub mod signature;
pub mod stage;
pub mod tar_bounds;
pub mod unpack;
