//! `stage`: turn a directory or an archive into a release.

use crate::cli;
use crate::cli::output::Output;
use crate::config::app::{App, Source};
use crate::config::shared;
use crate::error::Result;
use crate::staging::{input, stage};
use serde_json::json;

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
    out.print(
        json!({"app": app.name, "release": staged.id, "unchanged": staged.unchanged}),
        || staged.id.clone(),
    );
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
    out.print(
        json!({"app": app.name, "release": id, "outcome": outcome,
               "source": s.source}),
        || match outcome {
            "unchanged" => format!(
                "{label}: release {} is already staged with this content",
                id.unwrap_or_default()
            ),
            _ => format!(
                "{label}: would stage {} as {}",
                s.source.display(),
                id.unwrap_or("a new release")
            ),
        },
    );
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
