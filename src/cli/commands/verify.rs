//! `verify`: a release against its staging record.

use crate::cli;
use crate::cli::output::Output;
use crate::config::app::Source;
use crate::error::{usage, Error, Result};
use crate::release_id;
use crate::state::record::verify::Difference;
use serde::Serialize;

/// Whether `raw` (no `:`) is the name of an app configured in the config
/// directory: then it is that app, not a release id.
fn names_an_app(source: &Source, raw: &std::ffi::OsStr) -> Result<bool> {
    let Some(word) = raw.to_str().filter(|w| !w.contains(':')) else {
        return Ok(false);
    };
    Ok(source.allows_app() && source.all_apps()?.iter().any(|a| a == word))
}

/// `verify`'s report (schema `verify`): every difference, in path order
/// (as many as the check keeps).
#[derive(Serialize)]
pub(super) struct Verified<'a> {
    pub(super) app: Option<&'a str>,
    pub(super) release: &'a str,
    pub(super) matches: bool,
    pub(super) differences: &'a [Difference],
}

/// `verify [APP | [APP:]RELEASE]`: the release against its manifest; exit 14 when
/// anything differs, with every difference in the report.
pub(super) fn run(source: &Source, v: cli::VerifyArgs, out: &Output) -> Result<()> {
    // `verify shop`, like `status shop`: a bare word naming a configured
    // app means that app's current release.
    let (release, app_name) = match v.release {
        Some(raw) if names_an_app(source, &raw)? => (None, raw.to_str().map(str::to_string)),
        release => (release, v.app),
    };
    let (app, id) = match &release {
        Some(raw) => {
            let r = release_id::parse_request(raw, source.allows_app())?;
            (source.open(r.app.as_deref())?, r.release)
        }
        None => {
            let app = source.open(app_name.as_deref())?;
            let Some(id) = app.root.current()? else {
                return Err(usage(format!(
                    "{}: no current release; name the release to verify",
                    app.label()
                )));
            };
            (app, id)
        }
    };
    out.about(&app, Some(&id));
    let release = app.root.open_release(&id)?;
    let releases = app
        .root
        .releases_dir(false)?
        .expect("the release was opened in it");
    let checked = crate::state::record::verify::check(&releases, &id, &release)?;
    let label = app.label();
    let diffs = &checked.differences;
    let report = Verified {
        app: app.name.as_deref(),
        release: &id,
        matches: checked.matches(),
        differences: diffs,
    };
    out.print(&report, || {
        if checked.matches() {
            return format!("{label}: {id} matches its manifest");
        }
        let mut t = String::new();
        for d in diffs {
            t += &format!("{:<8} {}  ({})\n", d.change, d.path, d.detail);
        }
        if checked.total > diffs.len() {
            t += &format!("… and {} more\n", checked.total - diffs.len());
        }
        t
    });
    if checked.matches() {
        return Ok(());
    }
    Err(Error::VerifyFailed {
        app: Some(app.subject()),
        release: id.to_string(),
        differences: Some(checked.summary()),
        activation: false,
    })
}
