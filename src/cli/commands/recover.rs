//! `recover`: finish or undo an activation that was interrupted.

use crate::activation::{self};
use crate::cli;
use crate::cli::output::Output;
use crate::config::app::Source;
use crate::error::{Error, Result};
use crate::host::systemd::service_manager;
use crate::log;
use serde::Serialize;
use std::time::Duration;

/// `recover`'s report (schema `recover`): one entry per app, in order.
#[derive(Serialize)]
pub(super) struct Recovered<'a> {
    pub(super) apps: &'a [AppRecovery],
}

/// What recovering one app came to: whether there was an interrupted
/// activation to recover, or why it could not be.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum AppRecovery {
    Done {
        app: Option<String>,
        recovered: bool,
    },
    Failed {
        app: Option<String>,
        error: String,
    },
}

pub(super) fn run(
    source: &Source,
    r: cli::RecoverArgs,
    wait: Duration,
    out: &Output,
) -> Result<()> {
    let apps: Vec<Option<String>> = if r.all && source.allows_app() {
        source.all_apps()?.into_iter().map(Some).collect()
    } else {
        vec![r.app.clone()]
    };
    let mut report = Vec::new();
    let mut failed = Vec::new();
    let several = apps.len() > 1;
    for name in apps {
        let done = source.open(name.as_deref()).and_then(|app| {
            activation::recover(&app, r.no_reload, wait, |app| service_manager(app, false))
        });
        match done {
            Ok(recovered) => report.push(AppRecovery::Done {
                app: name.clone(),
                recovered,
            }),
            Err(e) => {
                // One app: main prints its error once. Several: each failure
                // is named here and main prints how many failed.
                if several {
                    log::error(&format!(
                        "{}: {}",
                        name.as_deref().unwrap_or("root"),
                        e.one_line()
                    ));
                }
                report.push(AppRecovery::Failed {
                    app: name.clone(),
                    error: e.one_line(),
                });
                failed.push((name, e));
            }
        }
    }
    out.print(Recovered { apps: &report }, String::new);
    let total = report.len();
    match failed.len() {
        0 => Ok(()),
        1 if !several => Err(failed.pop().expect("one").1),
        n => Err(Error::operational(format_args!(
            "{n} of {total} apps could not be recovered: {}",
            failed
                .iter()
                .map(|(name, _)| name.as_deref().unwrap_or("root"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
