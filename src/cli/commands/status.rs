//! `status`: the app's current, previous and last good releases, the
//! lock, and an interrupted activation if there is one.

use super::history::describe;
use super::{describe_dedup, show_meta};
use crate::activation::Serving;
use crate::cli::output::Output;
use crate::config::app::App;
use crate::error::{Error, Result};
use crate::state::history::Entry;
use crate::state::record::DedupRecord;
use crate::state::{lock, pending, store};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// `status`'s report (schema `status`). Every key is printed, `null`
/// when there is nothing to say.
#[derive(Serialize)]
pub(super) struct Status<'a> {
    pub(super) app: Option<&'a str>,
    pub(super) root: &'a Path,
    pub(super) current: Option<&'a str>,
    pub(super) previous: Option<&'a str>,
    pub(super) last_good: Option<&'a str>,
    pub(super) pending: Option<&'a pending::Pending>,
    /// An intent record with nobody holding the lock (exit 13).
    pub(super) interrupted: bool,
    pub(super) lock_holder: Option<&'a lock::Holder>,
    pub(super) last: Option<&'a Entry>,
    /// How many releases there are.
    pub(super) releases: usize,
    /// The current release's `--meta` pairs; `None` without a current release.
    pub(super) meta: Option<&'a BTreeMap<String, String>>,
    pub(super) dedup: Option<&'a DedupRecord>,
    /// Blue/green: the instance the front names (absent for other apps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) serving: Option<&'a Serving>,
}

/// `status`. An intent record with nobody holding the lock is an
/// interrupted activation: the report says so and the exit status is 13,
/// so a monitoring check or a script notices before the next deploy does.
pub(super) fn run(app: &App, out: &Output) -> Result<()> {
    let inv = store::inventory(app)?;
    let state = app.state_dir(false)?;
    // The intent record is read again under the lock's shared side: an
    // activation that finished meanwhile is not mistaken for a crash.
    let (holder, interrupted) = match &state {
        Some(s) => match lock::while_idle(&app.root, Some(s), || pending::read(Some(s)))? {
            Ok(left) => (None, left),
            Err(holder) => (holder, None),
        },
        None => (None, None),
    };
    let s = &inv.summary;
    // The current release's --meta pairs (null without a current release).
    let meta = inv.current.as_ref().map(|c| {
        inv.releases
            .iter()
            .find(|r| &r.id == c)
            .map(|r| r.meta.clone())
            .unwrap_or_default()
    });
    let current_dedup = inv
        .releases
        .iter()
        .find(|r| r.current)
        .and_then(|r| r.dedup.clone());
    // A front that cannot be read is said, not a failed status.
    let serving = crate::activation::serving(app).unwrap_or_else(|e| {
        crate::log::warn(&e.one_line());
        None
    });
    let report = Status {
        app: app.name.as_deref(),
        root: app.root.path(),
        current: inv.current.as_deref(),
        previous: s.previous.as_deref(),
        last_good: s.last_good.as_deref(),
        pending: inv.pending.as_ref(),
        interrupted: interrupted.is_some(),
        lock_holder: holder.as_ref(),
        last: s.last.as_ref(),
        releases: inv.releases.len(),
        meta: meta.as_ref(),
        dedup: current_dedup.as_ref(),
        serving: serving.as_ref(),
    };
    out.print(&report, || {
        text(
            app,
            &inv,
            meta.as_ref(),
            current_dedup.as_ref(),
            holder.as_ref(),
            serving.as_ref(),
        )
    });
    match interrupted {
        Some(p) => Err(Error::NeedsRecovery {
            interrupted: vec![crate::error::Interrupted {
                app: app.subject(),
                from: p.from,
                to: p.to,
                pid: p.pid,
                started: p.started,
            }],
        }),
        None => Ok(()),
    }
}

/// `status` as text, one `name: value` line each.
fn text(
    app: &App,
    inv: &store::Inventory,
    meta: Option<&BTreeMap<String, String>>,
    current_dedup: Option<&DedupRecord>,
    holder: Option<&lock::Holder>,
    serving: Option<&Serving>,
) -> String {
    let s = &inv.summary;
    let none = || "none".to_string();
    let mut t = format!("app:       {}\n", app.label());
    t += &format!("root:      {}\n", app.root.path().display());
    t += &format!("current:   {}\n", inv.current.clone().unwrap_or_else(none));
    if let Some(sv) = serving {
        t += &format!(
            "serving:   {} (port {}, {})\n",
            sv.slot,
            sv.port,
            sv.release.as_deref().unwrap_or("no release")
        );
    }
    if let Some(m) = meta.filter(|m| !m.is_empty()) {
        t += &format!("meta:      {}\n", show_meta(m));
    }
    t += &format!("previous:  {}\n", s.previous.clone().unwrap_or_else(none));
    t += &format!("last good: {}\n", s.last_good.clone().unwrap_or_else(none));
    t += &format!("releases:  {}\n", inv.releases.len());
    if let Some(d) = current_dedup {
        t += &format!("shared:    {}\n", describe_dedup(d));
    }
    t += &format!(
        "pending:   {}\n",
        inv.pending.as_ref().map_or_else(none, |p| format!(
            "{} → {} (pid {}, started {})",
            p.from.as_deref().unwrap_or("none"),
            p.to,
            p.pid,
            p.started
        ))
    );
    t += &format!(
        "lock:      {}\n",
        holder.map_or("free".to_string(), |h| h.to_string())
    );
    t += &format!("last:      {}", s.last.as_ref().map_or_else(none, describe));
    t
}
