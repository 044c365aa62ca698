//! `mark-bad` and `mark-good`.

use crate::cli;
use crate::cli::output::Output;
use crate::config::app::Source;
use crate::error::{usage, Result};
use crate::release_id;
use crate::state::history::Event;
use crate::state::store;
use serde::Serialize;
use std::time::Duration;

/// `mark-bad`'s and `mark-good`'s report (schema `marked`).
#[derive(Serialize)]
pub(super) struct Marked<'a> {
    pub(super) app: Option<&'a str>,
    pub(super) release: &'a str,
    pub(super) marked: Marking,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Marking {
    Bad,
    Good,
}

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
    let marked = if event == Event::MarkedBad {
        Marking::Bad
    } else {
        Marking::Good
    };
    let label = app.label();
    let report = Marked {
        app: app.name.as_deref(),
        release: &id,
        marked,
    };
    out.print(&report, || {
        let word = match marked {
            Marking::Bad => "bad",
            Marking::Good => "good",
        };
        format!("{label}: {id} marked {word}")
    });
    Ok(())
}
