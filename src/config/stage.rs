//! The `[stage]` table's values, which `stage`'s flags can also give: how
//! unchanged files are shared with the current release, and which keys
//! must have signed an archive.

use serde::Deserialize;
use std::path::PathBuf;

/// `[stage] dedup` and `--dedup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DedupMode {
    /// Reflink where the file system can (XFS with reflink, btrfs), else copy.
    #[default]
    Auto,
    /// Reflink, and refuse to stage where the file system cannot.
    Reflink,
    /// Hard links to the current release's files (see the in-place-write caveat).
    Hardlink,
    /// Always copy.
    Off,
}

impl DedupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DedupMode::Auto => "auto",
            DedupMode::Reflink => "reflink",
            DedupMode::Hardlink => "hardlink",
            DedupMode::Off => "off",
        }
    }
}

/// The app's `[stage]` signing keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub allowed_signers: Option<PathBuf>,
    pub identity: Option<String>,
    /// Refuse to stage anything but a signed archive.
    pub required: bool,
}
