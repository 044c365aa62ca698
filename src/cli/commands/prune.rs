//! `prune`: remove old releases, keeping the newest good ones and every
//! release activation may still need.

use crate::cli;
use crate::cli::output::Output;
use crate::config::app::{App, Source};
use crate::error::{Error, Result};
use crate::state::{lock, store};
use serde::Serialize;
use std::time::Duration;

/// `prune`'s report (schema `prune`).
#[derive(Serialize)]
pub(super) struct Pruned<'a> {
    pub(super) dry_run: bool,
    pub(super) plan: &'a store::PrunePlan,
    /// The temp trees of killed runs removed; absent from a dry run's
    /// report, which removes none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) leftovers_removed: Option<&'a [String]>,
}

/// `prune [--keep N] [--dry-run]`.
pub(super) fn run(source: &Source, p: cli::PruneArgs, wait: Duration, out: &Output) -> Result<()> {
    let app = source.open(p.app.as_deref())?;
    out.about(&app, None);
    prune(&app, p, wait, out)
}

fn prune(app: &App, p: cli::PruneArgs, wait: Duration, out: &Output) -> Result<()> {
    let keep = p.keep.unwrap_or(app.config.keep);
    if p.dry_run {
        // Refused as the real run would be (a member in root's layout may
        // not take the lock), not a plan it then cannot carry out.
        let state = app.state_dir(false)?;
        lock::check_can_take(&app.root, state.as_ref()).map_err(|e| {
            Error::operational(format_args!(
                "{}: prune would be refused: {}",
                app.label(),
                e.one_line()
            ))
        })?;
        let plan = store::plan_prune(&store::inventory(app)?, keep);
        let report = Pruned {
            dry_run: true,
            plan: &plan,
            leftovers_removed: None,
        };
        out.print(&report, || describe_plan(&plan, "would remove"));
        return Ok(());
    }
    let done = store::prune(app, keep, wait)?;
    let report = Pruned {
        dry_run: false,
        plan: &done.plan,
        leftovers_removed: Some(&done.leftovers),
    };
    out.print(&report, || describe_plan(&done.plan, "removed"));
    Ok(())
}

fn describe_plan(plan: &store::PrunePlan, verb: &str) -> String {
    let mut t = String::new();
    for id in &plan.keep {
        t += &format!("keep       {id}\n");
    }
    for id in &plan.protected {
        t += &format!("protected  {id} (current, previous, pending or last good)\n");
    }
    for id in &plan.remove {
        t += &format!("{verb} {id}\n");
    }
    if plan.remove.is_empty() {
        t += "nothing to remove\n";
    }
    t
}
