//! `deploy`: stage, then activate what was staged.

use super::activate::{check_flags, expect_current, run_activation, Leaving};
use super::stage::inputs;
use crate::activation::Target;
use crate::cli;
use crate::cli::output::Output;
use crate::config::app::{App, Source};
use crate::config::shared;
use crate::error::Result;
use crate::staging::{input, stage};
use serde_json::json;
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
    out.print(
        json!({"app": app.name, "root": app.root.path(), "outcome": "would_deploy",
               "stage": staging, "source": source, "release": id, "previous": current}),
        || {
            format!(
                "{label}: would stage {} as {} and activate it (current: {})",
                source.display(),
                id.unwrap_or("a new release"),
                current.as_deref().unwrap_or("none")
            )
        },
    );
    Ok(())
}
