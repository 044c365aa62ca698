//! `request`: ask root for an activation, as a member of group
//! `releasectl`, through a request file.

use crate::cli;
use crate::cli::output::Output;
use crate::config::app::Source;
use crate::error::{Error, Result};
use crate::state::request::{self};
use crate::{log, release_id};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// `request`'s report without `--wait` (schema `requested`); with it, the
/// outcome root recorded ([`request::Report`], schema `request_outcome`).
#[derive(Serialize)]
pub(super) struct Requested<'a> {
    pub(super) app: &'a str,
    pub(super) release: &'a str,
    /// The token root's outcome will carry (its SHA-256).
    pub(super) request: &'a str,
    pub(super) file: &'a Path,
}

/// `request [APP:]RELEASE [--wait]`: write the request file as an
/// unprivileged member of group `releasectl`; with `--wait`, report the
/// outcome root recorded and exit with the activation's status.
pub(super) fn run(source: &Source, out: &Output, r: cli::RequestArgs) -> Result<()> {
    let parsed = release_id::parse_request(&r.release, source.allows_app())?;
    let name = source.app_name(parsed.app.as_deref())?;
    let release = parsed.release;
    // Refuse here what root would refuse, where this user can tell (an
    // unknown app, a bad config, a missing release); what it may not read
    // (a config only root reads) is root's to judge.
    let local = source
        .open(Some(&name))
        .and_then(|app| app.root.check_release(&release));
    if let Err(e @ Error::Usage(_)) = local {
        return Err(e);
    }
    let results_path = request::results_dir(&r.dirs.requests_dir, r.dirs.results_dir.as_deref());
    let results = match r.wait {
        true => Some(request::open_results(&results_path)?),
        false => None,
    };
    let sub = request::submit(&r.dirs.requests_dir, &name, &release)?;
    let Some(results) = results else {
        let report = Requested {
            app: &name,
            release: &release,
            request: &sub.token,
            file: &sub.path,
        };
        out.print(&report, || {
            format!("{name}: requested {release} (request {})", sub.token)
        });
        return Ok(());
    };
    log::info(&format!(
        "{name}: requested {release}; waiting for the outcome"
    ));
    let report = request::wait(&sub, &results, Duration::from_secs(r.timeout))?;
    if report.exit_code == 0 {
        out.print(&report, || report.message.clone());
        return Ok(());
    }
    // Text: the message is the error line. JSON: the outcome is the
    // result, the relayed status the error.
    out.print(&report, String::new);
    Err(Error::Relayed {
        code: report.exit_code,
        message: report.message,
        app: report.app,
        release: report.release,
    })
}
