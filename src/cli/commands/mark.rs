//! `mark-bad` and `mark-good`.

use crate::cli;
use crate::cli::output::Output;
use crate::config::app::Source;
use crate::error::{usage, Result};
use crate::release_id;
use crate::state::history::Event;
use crate::state::store;
use serde_json::json;
use std::time::Duration;

/// `mark-bad` / `mark-good`.
pub(super) fn run(
    source: &Source,
    m: cli::MarkArgs,
    event: Event,
    wait: Duration,
    out: &Output,
) -> Result<()> {
    let request = release_id::parse_request(&m.release, source.allows_app())?;
    let reason = m.reason.unwrap_or_else(|| "by hand".into());
    if reason.len() > 512 || reason.chars().any(char::is_control) {
        return Err(usage("--reason: at most 512 bytes, no control characters"));
    }
    let app = source.open(request.app.as_deref())?;
    let id = request.release;
    out.about(&app, Some(&id));
    store::mark(&app, &id, event, &reason, wait)?;
    let word = if event == Event::MarkedBad {
        "bad"
    } else {
        "good"
    };
    let label = app.label();
    out.print(
        json!({"app": app.name, "release": id, "marked": word}),
        || format!("{label}: {id} marked {word}"),
    );
    Ok(())
}
