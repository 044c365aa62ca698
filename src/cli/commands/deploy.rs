//! `deploy`: stage, then activate what was staged.

use super::activate::{check_flags, expect_current, run_activation, Did, Leaving};
use super::stage::inputs;
use crate::activation::Target;
use crate::cli;
use crate::cli::output::Output;
use crate::config::app::{App, Source};
use crate::config::shared;
use crate::error::Result;
use crate::staging::{input, stage};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// `deploy [--dry-run]`: stage the source, then activate it as
/// `activate` does. What activation would refuse is refused before
/// anything is staged.
pub(super) fn run(source: &Source, d: cli::DeployArgs, wait: Duration, out: &Output) -> Result<()> {
    let mut app = source.open(d.stage.app.as_deref())?;
    app.config.dedup = d.stage.dedup.unwrap_or(app.config.dedup);
    out.about(&app, d.stage.id.as_deref());
    check_flags(&d.flags)?;
    let shared = shared::combine(
        &app.config.shared,
        &d.stage.shared_dirs,
        &d.stage.shared_files,
    )?;
    let inputs = inputs(&app, &d.stage)?;
    if d.flags.dry_run {
        return dry_run(&app, &d, &shared, &inputs, out);
    }
    // Refuse before staging: a refused deploy must leave no release behind.
    expect_current(&app, &d.flags)?;
    let staged = stage::stage(
        &app,
        &d.stage.source,
        d.stage.id.as_deref(),
        &shared,
        &inputs,
    )?;
    run_activation(
        &app,
        &Target::Release(staged.id),
        &d.flags,
        wait,
        Leaving::Keep,
        out,
    )
    .map(drop)
}

/// `deploy --dry-run`'s report: an `activation` that also says what
/// staging would do and from where.
#[derive(Serialize)]
pub(super) struct WouldDeploy<'a> {
    pub(super) app: Option<&'a str>,
    pub(super) root: &'a Path,
    pub(super) outcome: Did,
    /// What staging would do, as `stage --dry-run` says.
    pub(super) stage: stage::Plan,
    pub(super) source: &'a Path,
    /// `None` without `--id`: the id is made when staging.
    pub(super) release: Option<&'a str>,
    pub(super) previous: Option<&'a str>,
}

/// `deploy --dry-run` must change nothing, so it checks what staging and
/// activation would refuse without staging anything.
fn dry_run(
    app: &App,
    d: &cli::DeployArgs,
    shared: &[shared::SharedPath],
    inputs: &input::Inputs,
    out: &Output,
) -> Result<()> {
    let (source, id) = (&d.stage.source, d.stage.id.as_deref());
    let current = expect_current(app, &d.flags)?;
    let staging = stage::plan(app, source, id, shared, inputs)?;
    let label = app.label();
    let report = WouldDeploy {
        app: app.name.as_deref(),
        root: app.root.path(),
        outcome: Did::WouldDeploy,
        stage: staging,
        source,
        release: id,
        previous: current.as_deref(),
    };
    out.print(&report, || {
        format!(
            "{label}: would stage {} as {} and activate it (current: {})",
            source.display(),
            id.unwrap_or("a new release"),
            current.as_deref().unwrap_or("none")
        )
    });
    Ok(())
}
