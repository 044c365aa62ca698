//! `stage`: turn a directory or an archive into a release.

use crate::cli;
use crate::cli::output::Output;
use crate::config::app::{App, Source};
use crate::config::shared;
use crate::error::Result;
use crate::staging::{input, stage};
use serde::Serialize;
use std::path::Path;

/// `stage`'s report (schema `staged`).
#[derive(Serialize)]
pub(super) struct Staged<'a> {
    pub(super) app: Option<&'a str>,
    pub(super) release: &'a str,
    /// The id was staged already with exactly this content: nothing written.
    pub(super) unchanged: bool,
}

/// `stage --dry-run`'s report (schema `staged` too).
#[derive(Serialize)]
pub(super) struct WouldStage<'a> {
    pub(super) app: Option<&'a str>,
    /// `None` without `--id`: the id is made when staging.
    pub(super) release: Option<&'a str>,
    pub(super) outcome: stage::Plan,
    pub(super) source: &'a Path,
}

/// `stage [--dry-run]`: the release's id on stdout; with `--dry-run`,
/// whether it would be staged.
pub(super) fn run(source: &Source, cmd: cli::StageCmd, out: &Output) -> Result<()> {
    let s = &cmd.stage;
    let mut app = source.open(s.app.as_deref())?;
    app.config.dedup = s.dedup.unwrap_or(app.config.dedup);
    out.about(&app, s.id.as_deref());
    let shared = shared::combine(&app.config.shared, &s.shared_dirs, &s.shared_files)?;
    let inputs = inputs(&app, s)?;
    let id = s.id.as_deref();
    if cmd.dry_run {
        return dry_run(&app, s, &shared, &inputs, out);
    }
    let staged = stage::stage(&app, &s.source, id, &shared, &inputs)?;
    let report = Staged {
        app: app.name.as_deref(),
        release: &staged.id,
        unchanged: staged.unchanged,
    };
    out.print(&report, || staged.id.clone());
    Ok(())
}

/// `stage --dry-run`: what staging would do, nothing written.
fn dry_run(
    app: &App,
    s: &cli::StageArgs,
    shared: &[shared::SharedPath],
    inputs: &input::Inputs,
    out: &Output,
) -> Result<()> {
    let id = s.id.as_deref();
    let outcome = stage::plan(app, &s.source, id, shared, inputs)?;
    let label = app.label();
    let report = WouldStage {
        app: app.name.as_deref(),
        release: id,
        outcome,
        source: &s.source,
    };
    out.print(&report, || match outcome {
        stage::Plan::Unchanged => format!(
            "{label}: release {} is already staged with this content",
            id.unwrap_or_default()
        ),
        stage::Plan::WouldStage => format!(
            "{label}: would stage {} as {}",
            s.source.display(),
            id.unwrap_or("a new release")
        ),
    });
    Ok(())
}

/// `stage`'s and `deploy`'s input flags, validated with the app's
/// signing policy.
pub(super) fn inputs(app: &App, s: &cli::StageArgs) -> Result<input::Inputs> {
    input::Inputs::new(
        input::Flags {
            sha256: s.sha256.as_deref(),
            checksums: s.checksums.as_deref(),
            signature: s.signature.as_deref(),
            allowed_signers: s.allowed_signers.as_deref(),
            signer_identity: s.signer_identity.as_deref(),
            strip_components: s.strip_components,
            meta: &s.meta,
        },
        &app.config.signing,
    )
}
