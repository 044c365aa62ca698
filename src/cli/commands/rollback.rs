//! `rollback`: back to the previous good release, or the one named.

use super::activate::{check_flags, run_activation, Leaving};
use crate::activation::Target;
use crate::cli;
use crate::cli::output::Output;
use crate::config::app::Source;
use crate::error::Result;
use crate::release_id;
use std::time::Duration;

/// `rollback [--to ID]`: activate the previous good release (or `--to`);
/// the release left behind is marked bad once the rollback commits.
pub(super) fn run(
    source: &Source,
    r: cli::RollbackArgs,
    wait: Duration,
    out: &Output,
) -> Result<()> {
    let app = source.open(r.app.as_deref())?;
    out.about(&app, r.to.as_deref());
    check_flags(&r.flags)?;
    let target = match r.to {
        Some(id) => {
            release_id::validate(&id)?;
            Target::Release(id)
        }
        None => Target::PreviousGood,
    };
    run_activation(&app, &target, &r.flags, wait, Leaving::MarkBad, out).map(drop)
}
