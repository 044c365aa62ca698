//! Command-line definitions. The man page releasectl(1) and the shell
//! completions are generated from these, so help texts are the reference.
//!
//! The `cli` layer, the top one: these definitions, the text and JSON
//! output ([`output`]), completion ([`completion`]), the man page
//! ([`manpage`]) and one file per subcommand ([`commands`]). It may
//! import every other layer (docs/architecture.md).

pub mod commands;
pub mod completion;
mod manpage;
mod output;

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Exit status:
  0  ok (including \"already active\")
  1  operational error
  2  bad usage or input; nothing was changed
  10  lock busy (another activation of the app holds it)
  11  activation failed; the previous release was restored
  12  rollback failed; manual attention needed
  13  (status) an interrupted activation awaits releasectl recover
  14  a release does not match the manifest recorded when it was staged";

/// Atomic, locked, reversible release activation for systemd hosts.
///
/// releasectl points an app's `current` symlink at a release directory with a
/// single rename(2), under an flock(2), reloads the app's systemd units over
/// D-Bus, checks health, and restores the previous release on any failure.
#[derive(Debug, Parser)]
#[command(name = "releasectl", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// Act on an ad hoc app root DIR (no config file; no APP names)
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "config_dir")]
    pub root: Option<PathBuf>,

    /// Read app configs from DIR instead of /etc/releasectl
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    /// Print one JSON document on stdout (logs stay on stderr)
    #[arg(long, global = true)]
    pub json: bool,

    /// Only print errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Seconds to wait for the app's lock, for every command that takes it
    /// (activate, deploy, rollback, prune, recover, mark-bad, mark-good;
    /// 0: fail at once if busy; at most 86400)
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=crate::config::MAX_SECONDS))]
    pub lock_timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Point `current` at a release: lock, swap, reload, health check, commit or roll back
    Activate(ActivateArgs),
    /// Copy a directory or unpack a tar, tar.gz or tar.zst archive (a file, or - for stdin) into a new release
    Stage(StageCmd),
    /// Stage SOURCE, then activate it
    Deploy(DeployArgs),
    /// Go back to the previous good release (or --to ID), with the same transaction
    Rollback(RollbackArgs),
    /// Ask for an activation without root: write APP's request file, picked up by deploy-watch@APP.path
    ///
    /// Members of group releasectl may write requests and read their outcomes; the app's
    /// watcher must be enabled once (systemctl enable --now deploy-watch@APP.path). The request
    /// is written to a new temp file (mode 0600: its token is the requester's secret) and renamed
    /// into place, so the watcher never reads half of one. Root records each request's outcome
    /// in /var/lib/releasectl/results/APP (readable by the group; the journal is not) with the
    /// token's SHA-256, the request file's owner and the release; --wait accepts only the
    /// outcome that matches all three.
    ///
    /// With --wait, the outcome is printed as one line (under --json, the recorded outcome) and
    /// the exit status is the activation's: 0 activated or already active, 2 invalid request
    /// (nothing changed), 10 lock busy, 11 rolled back, 12 rollback failed, 14 the release does
    /// not match its manifest (the app has verify = true); 1 if the request
    /// was replaced by a newer one before the watcher read it, or no outcome came within
    /// --timeout.
    Request(RequestArgs),
    /// Mark a release bad: rollback skips it until it is activated successfully again
    MarkBad(MarkArgs),
    /// Clear a release's bad mark, so that rollback may pick it again
    MarkGood(MarkArgs),
    /// Show current, previous, pending activation, lock holder and last outcome
    Status(AppArg),
    /// List releases, newest staged first, marking current, previous and bad ones
    List(AppArg),
    /// Show the activation log
    History(HistoryArgs),
    /// Remove old releases, never current, previous, pending or last good
    ///
    /// Keeps the N newest good releases: releases marked bad do not count toward N and are
    /// removed unless protected. `[prune] keep = N` in the app's config prunes after every
    /// committed activation; releasectl-prune@APP.timer prunes daily.
    Prune(PruneArgs),
    /// Validate config, layout and (if systemd is reachable) the units: a pre-flight that
    /// a new host passes once set up, before anything is staged
    ///
    /// Each unit's state is reported as it is: an inactive unit is started by the first
    /// activation (also with action = "reload"); a failed unit fails the check. A missing
    /// [shared] path fails it where members stage but cannot create it (a root-owned app
    /// root with a group-writable releases/): root makes it once.
    Check(AppArg),
    /// Check a release against the manifest recorded when it was staged
    Verify(VerifyArgs),
    /// Finish an interrupted activation: restore the previous target
    Recover(RecoverArgs),
    /// Print the completion script for SHELL (it asks releasectl for candidates)
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page releasectl(1) as roff
    #[command(hide = true)]
    Man {
        /// The date on the page (default: today, UTC)
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = date)]
        date: Option<String>,
    },
}

/// The shells whose completion scripts releasectl writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A `YYYY-MM-DD` date, as a man page's `.TH` line carries it.
fn date(s: &str) -> Result<String, String> {
    let shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if shape {
        Ok(s.to_string())
    } else {
        Err("expected YYYY-MM-DD".into())
    }
}

/// The subcommand called `word`, if it is one (for the JSON document of a
/// command line that did not parse).
pub fn command_name(word: &str) -> Option<&'static str> {
    COMMAND_NAMES.into_iter().find(|n| *n == word)
}

const COMMAND_NAMES: [&str; 14] = [
    "activate",
    "stage",
    "deploy",
    "rollback",
    "request",
    "mark-bad",
    "mark-good",
    "status",
    "list",
    "history",
    "prune",
    "check",
    "verify",
    "recover",
];

impl Command {
    /// The subcommand's name, as the JSON document's `command` says it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Activate(_) => "activate",
            Command::Stage(_) => "stage",
            Command::Deploy(_) => "deploy",
            Command::Rollback(_) => "rollback",
            Command::Request(_) => "request",
            Command::MarkBad(_) => "mark-bad",
            Command::MarkGood(_) => "mark-good",
            Command::Status(_) => "status",
            Command::List(_) => "list",
            Command::History(_) => "history",
            Command::Prune(_) => "prune",
            Command::Check(_) => "check",
            Command::Verify(_) => "verify",
            Command::Recover(_) => "recover",
            Command::Completions { .. } => "completions",
            Command::Man { .. } => "man",
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct ActivateFlags {
    /// Do not act on the configured units
    #[arg(long)]
    pub no_reload: bool,
    /// Skip the health check
    #[arg(long)]
    pub no_health: bool,
    /// Reload and check even if the release is already active
    #[arg(long)]
    pub force: bool,
    /// Only activate if `current` is ID right now (compare-and-swap; '' means: only if there is
    /// no current)
    #[arg(long, value_name = "ID")]
    pub expect_current: Option<String>,
    /// Validate and say what would happen; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse a release whose latest attempt failed (exit 2, nothing changed)
    #[arg(long)]
    pub refuse_bad: bool,
    /// Check the release against the manifest recorded when it was staged,
    /// before anything changes (as `verify = true` in the config does)
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The release, as [APP:]RELEASE (the instance string of deploy@APP:RELEASE.service)
    #[arg(value_name = "[APP:]RELEASE", required_unless_present = "request")]
    pub release: Option<OsString>,
    /// Read the release id from the request file of APP and record the outcome for the requester (used by deploy-watch@.service)
    #[arg(long, value_name = "APP", conflicts_with = "release")]
    pub request: Option<String>,
    #[command(flatten)]
    pub dirs: RequestDirs,
    #[command(flatten)]
    pub flags: ActivateFlags,
}

#[derive(Debug, Args)]
pub struct RequestDirs {
    /// Directory holding request files
    #[arg(long, value_name = "DIR", default_value = crate::state::request::DEFAULT_REQUESTS_DIR)]
    pub requests_dir: PathBuf,
    /// Directory of the outcomes root records for requesters [default: `results` beside the requests directory]
    #[arg(long, value_name = "DIR")]
    pub results_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The release, as [APP:]RELEASE
    #[arg(value_name = "[APP:]RELEASE")]
    pub release: OsString,
    /// Wait for the outcome; print it and exit with the activation's status
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait with --wait (at most 86400)
    #[arg(long, value_name = "SECS", default_value_t = 1200, requires = "wait",
          value_parser = clap::value_parser!(u64).range(1..=crate::config::MAX_SECONDS))]
    pub timeout: u64,
    #[command(flatten)]
    pub dirs: RequestDirs,
}

#[derive(Debug, Args)]
pub struct StageArgs {
    /// The app (default: the single configured app)
    #[arg(long)]
    pub app: Option<String>,
    /// A directory, a tar archive (plain, gzip or zstd; told by its first bytes), or - to read
    /// the archive from stdin
    pub source: PathBuf,
    /// Release id (default: UTC time YYYYmmddTHHMMSSZ, with -2, -3... if taken)
    #[arg(long)]
    pub id: Option<String>,
    /// Refuse the archive unless its SHA-256 is HEX (checked on the bytes as they are unpacked;
    /// a mismatch leaves nothing behind)
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Refuse the archive unless its SHA-256 is the one FILE lists for its file name
    /// (SHA256SUMS format: `HEX  NAME` or `HEX *NAME` lines; not for stdin)
    #[arg(long, value_name = "FILE")]
    pub checksums: Option<PathBuf>,
    /// Refuse the archive unless FILE is a good OpenSSH signature of it in namespace
    /// "releasectl" (ssh-keygen -Y sign -f KEY -n releasectl ARCHIVE) by a key in the allowed
    /// signers file
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// The allowed signers file (ssh-keygen(1)) for --signature [default: the config's
    /// stage.allowed_signers]
    #[arg(long, value_name = "FILE", requires = "signature")]
    pub allowed_signers: Option<PathBuf>,
    /// The principal the signature must be from [default: the config's stage.signer_identity,
    /// else whoever the allowed signers file names for the signing key]
    #[arg(long, value_name = "ID", requires = "signature")]
    pub signer_identity: Option<String>,
    /// Drop the first N components of every entry name (and hard link target), as tar does;
    /// entries with no more than N are skipped
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub strip_components: usize,
    /// Record KEY=VALUE with the release (repeatable; shown by list and status): keys 1-64 of
    /// [a-z0-9_.-], values at most 1024 bytes without control characters
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Link the directory PATH of the release into ROOT/shared/PATH (repeatable; adds to the config's [shared] dirs)
    #[arg(long = "shared-dir", value_name = "PATH")]
    pub shared_dirs: Vec<String>,
    /// Link the file PATH of the release into ROOT/shared/PATH (repeatable; adds to the config's [shared] files)
    #[arg(long = "shared-file", value_name = "PATH")]
    pub shared_files: Vec<String>,
    /// Share files identical to the current release's: auto (reflink where the file system can, else copy), reflink, hardlink, off (default: the config's [stage] dedup, else auto)
    #[arg(long, value_name = "MODE", value_enum, hide_possible_values = true)]
    pub dedup: Option<crate::config::stage::DedupMode>,
}

#[derive(Debug, Args)]
pub struct StageCmd {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Check the source and say whether it would be staged or is staged already with this
    /// content (`unchanged`); leave nothing behind
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub flags: ActivateFlags,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The app (default: the single configured app)
    pub app: Option<String>,
    /// Roll back to this release instead of the previous good one
    #[arg(long, value_name = "ID")]
    pub to: Option<String>,
    #[command(flatten)]
    pub flags: ActivateFlags,
}

#[derive(Debug, Args)]
pub struct MarkArgs {
    /// The release, as [APP:]RELEASE
    #[arg(value_name = "[APP:]RELEASE")]
    pub release: OsString,
    /// Why, recorded in the history (at most 512 bytes)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An app (its current release), or a release as [APP:]RELEASE (default:
    /// the current release). A bare word that names a configured app is that
    /// app; write APP:RELEASE for a release id that is also an app's name
    #[arg(value_name = "APP | [APP:]RELEASE")]
    pub release: Option<OsString>,
    /// With several apps configured: the app whose current release to verify
    #[arg(long, conflicts_with = "release")]
    pub app: Option<String>,
}

#[derive(Debug, Args)]
pub struct AppArg {
    /// The app (default: the single configured app)
    pub app: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The app (default: the single configured app)
    pub app: Option<String>,
    /// Show only the last N entries
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The app (default: the single configured app)
    pub app: Option<String>,
    /// How many of the newest good releases to keep; bad ones do not count (default: the
    /// config's `keep`, else 5)
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Say what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The app (default: the single configured app)
    #[arg(conflicts_with = "all")]
    pub app: Option<String>,
    /// Recover every configured app
    #[arg(long)]
    pub all: bool,
    /// Do not act on the units after restoring (used at boot, before they start)
    #[arg(long)]
    pub no_reload: bool,
}
