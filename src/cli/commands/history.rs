//! `history`: what happened to an app's releases, a sentence a line.

use super::show_meta;
use crate::cli::output::Output;
use crate::config::app::App;
use crate::error::Result;
use crate::log;
use crate::state::history::{self, Event};
use serde::Serialize;

/// One history entry as a sentence that says what happened and what is
/// live after it ("v2 failed, v1 restored"), then who, how and how long.
pub(super) fn describe(e: &history::Entry) -> String {
    let id = |r: &Option<String>| log::clean(r.as_deref().unwrap_or("none")).into_owned();
    let (from, to, live) = (id(&e.from), id(&e.to), id(&e.live));
    let what = match e.event {
        Event::Activated if e.from == e.to => format!("{to} activated again"),
        Event::Activated if e.from.is_none() => format!("{to} activated (the first)"),
        Event::Activated => format!("{to} activated (was {from})"),
        Event::Reverted => format!("rolled back from {from} to {to}; {from} marked bad"),
        Event::RolledBack => format!("{to} failed; {from} restored"),
        Event::Aborted => format!("{to} refused before the swap; {from} stays"),
        Event::RollbackFailed => {
            format!("{to} failed and so did the rollback to {from}; live: {live}")
        }
        Event::Recovered => format!("interrupted activation of {to} undone; {from} restored"),
        Event::MarkedBad => format!("{to} marked bad"),
        Event::MarkedGood => format!("{to} marked good"),
    };
    let mut s = format!("{}  {:<15} {what}", log::clean(&e.time), e.event.as_str());
    if !e.meta.is_empty() {
        s += &format!(" {{{}}}", show_meta(&e.meta));
    }
    if let Some(r) = &e.reason {
        s += &format!(": {}", log::clean(r));
    }
    let mut who: Vec<String> = Vec::new();
    who.extend(e.trigger.as_deref().map(|t| log::clean(t).into_owned()));
    // Who asked, when a request file said so: the root process that acted
    // (`uid 0`) is not who deployed.
    who.extend(match (&e.requester, e.requester_uid) {
        (Some(name), _) => Some(format!("requested by {}", log::clean(name))),
        (None, Some(uid)) => Some(format!("requested by uid {uid}")),
        (None, None) => None,
    });
    who.extend(e.user.as_deref().map(|u| log::clean(u).into_owned()));
    who.extend(
        e.uid
            .filter(|_| e.user.is_none())
            .map(|u| format!("uid {u}")),
    );
    who.extend(
        e.duration_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0)),
    );
    if !who.is_empty() {
        s += &format!(" [{}]", who.join(", "));
    }
    s
}

/// `history`'s report (schema `history`).
#[derive(Serialize)]
pub(super) struct History<'a> {
    pub(super) app: Option<&'a str>,
    pub(super) entries: &'a [history::Entry],
}

pub(super) fn run(app: &App, lines: Option<usize>, out: &Output) -> Result<()> {
    let state = app.state_dir(false)?;
    let shown = match lines {
        Some(n) => history::tail(state.as_ref(), n)?,
        None => history::read(state.as_ref())?,
    };
    let report = History {
        app: app.name.as_deref(),
        entries: &shown,
    };
    out.print(&report, || {
        shown.iter().map(|e| describe(e) + "\n").collect()
    });
    Ok(())
}
