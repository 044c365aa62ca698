//! Step 4's `verify = true`: the release as opened against its staging
//! record, before anything changes.

use crate::config::app::App;
use crate::error::{Error, Result};
use crate::fs::dir::Dir;
use crate::host::notify;
use crate::log;
use crate::state::history::{self, Entry, Event};
use crate::state::journal;

/// The release as opened must match the manifest recorded when it was
/// staged. A mismatch changes nothing but the history: the attempt is
/// recorded as aborted (so `to` counts as bad) and the exit status is 14.
pub(super) fn verify(
    app: &App,
    state: &Dir,
    from: &Option<String>,
    to: &str,
    release: &Dir,
) -> Result<()> {
    notify::status(&format!("{}: verifying {to}", app.label()));
    let releases = app
        .root
        .releases_dir(false)?
        .expect("the release was opened in it");
    let differences = match crate::state::record::verify::check(&releases, to, release) {
        Ok(diffs) if diffs.matches() => {
            log::info(&format!("{}: {to} matches its manifest", app.label()));
            return Ok(());
        }
        Ok(diffs) => Some(diffs.summary()),
        Err(Error::VerifyFailed { differences, .. }) => differences,
        Err(e) => return Err(e),
    };
    let why = crate::error::mismatch(to, differences.as_deref());
    let mut e = Entry::new(
        Event::Aborted,
        app.name.as_deref(),
        from.as_deref(),
        Some(to),
    )
    .with_reason(why.clone());
    e.live = from.clone();
    history::append(state, &e)?;
    journal::record(&e);
    Err(Error::VerifyFailed {
        app: Some(app.subject()),
        release: to.to_string(),
        differences,
        activation: true,
    })
}
