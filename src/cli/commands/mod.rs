//! One file per subcommand, each with one `run`: resolve the app, call the
//! library, print the result as text or as one JSON document. This file
//! parses nothing itself: it sets up logging and the output, and hands the
//! parsed command line to its subcommand.
//!
//! May import anything below cli (see docs/architecture.md).

mod activate;
mod check;
mod deploy;
mod history;
mod list;
mod mark;
mod prune;
mod recover;
mod request;
mod rollback;
mod stage;
mod status;
mod verify;

#[cfg(test)]
mod schema_tests;

use crate::cli::output::Output;
use crate::cli::{Cli, Command};
use crate::config::app::{App, Source};
use crate::error::{exit, usage, Error, Result};
use crate::log;
use crate::state::history::Event;
use std::time::Duration;

/// Run a parsed command line: its report on stdout (text, or exactly one
/// JSON document, also on failure), the error line on stderr. Returns the
/// exit status.
pub fn main(cli: Cli) -> i32 {
    log::set_verbosity(if cli.quiet {
        -1
    } else if cli.verbose {
        1
    } else {
        0
    });
    // A script for the shell, not a document: no JSON envelope.
    if let Command::Completions { shell } = cli.command {
        return match crate::cli::completion::write_script(shell, &mut std::io::stdout().lock()) {
            Ok(()) => exit::OK,
            // A reader that went away (`releasectl completions bash | head`)
            // is not an error of ours, as for every other command.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
            Err(e) => {
                log::error(&format!("error: writing the completion script: {e}"));
                exit::OPERATIONAL
            }
        };
    }
    // The page is roff for man(1), not a document: no JSON envelope.
    if let Command::Man { date } = cli.command {
        use clap::CommandFactory;
        let date = date.unwrap_or_else(|| {
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10]
                .to_string()
        });
        crate::cli::output::print_verbatim(&crate::cli::manpage::render(&Cli::command(), &date));
        return 0;
    }
    crate::progress::allow(!cli.json && !cli.quiet);
    let out = Output::new(cli.json, cli.command.name());
    let outcome = run(cli, &out);
    out.finish(outcome)
}

/// The command line did not parse. `--help` and `--version` print as
/// usual, and so does an error without `--json`; under `--json` the error
/// is one line on stderr and the one document every run prints (kind
/// usage, exit 2).
pub fn bad_command_line(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || !std::env::args_os().any(|a| a == "--json")
    {
        e.exit();
    }
    let message = e
        .to_string()
        .lines()
        .next()
        .unwrap_or("bad command line")
        .trim_start_matches("error: ")
        .to_string();
    let command = std::env::args()
        .skip(1)
        .find_map(|a| crate::cli::command_name(&a));
    Output::for_parse_error(command).finish(Err(usage(message)))
}
/// Hand the command to its subcommand's `run`.
fn run(cli: Cli, out: &Output) -> Result<()> {
    let source = Source::from_options(cli.root.clone(), cli.config_dir.clone());
    let wait = Duration::from_secs(cli.lock_timeout);
    match cli.command {
        Command::Activate(a) => activate::run(&source, out, a, wait),
        Command::Stage(cmd) => stage::run(&source, cmd, out),
        Command::Deploy(d) => deploy::run(&source, d, wait, out),
        Command::Rollback(r) => rollback::run(&source, r, wait, out),
        Command::Request(r) => request::run(&source, out, r),
        Command::MarkBad(m) => mark::run(&source, m, Event::MarkedBad, wait, out),
        Command::MarkGood(m) => mark::run(&source, m, Event::MarkedGood, wait, out),
        Command::Status(a) => each_app(&source, a.app.as_deref(), out, status::run),
        Command::List(a) => each_app(&source, a.app.as_deref(), out, list::run),
        Command::History(h) => each_app(&source, h.app.as_deref(), out, |app, out| {
            history::run(app, h.lines, out)
        }),
        Command::Prune(p) => prune::run(&source, p, wait, out),
        Command::Check(a) => {
            let app = source.open(a.app.as_deref())?;
            out.about(&app, None);
            check::run(&app, out)
        }
        Command::Verify(v) => verify::run(&source, v, out),
        Command::Recover(r) => recover::run(&source, r, wait, out),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled in main"),
    }
}

/// The key of the per-app reports of `status`, `list` and `history` of
/// every app (schema `apps_status`, `apps_list`, `apps_history`).
const APPS: &str = "apps";

/// `status`, `list` and `history` of the app named, or of the single one
/// configured; with several configured and none named, of every app: text
/// sections headed `== APP ==`, or the one JSON document with the per-app
/// reports listed under `result.apps`.
fn each_app(
    source: &Source,
    app: Option<&str>,
    out: &Output,
    show: impl Fn(&App, &Output) -> Result<()>,
) -> Result<()> {
    let names = match app {
        None if source.allows_app() => source.all_apps()?,
        _ => Vec::new(),
    };
    if names.len() < 2 {
        let app = source.open(app)?;
        out.about(&app, None);
        return show(&app, out);
    }
    // JSON: one report per app, listed under "apps". Text: sections.
    out.many(APPS);
    let mut parts = Vec::new();
    // Apps with an interrupted activation are shown like the others, then
    // named together in the one error line.
    let mut attention = Vec::new();
    for name in &names {
        out.start_collecting();
        let shown = source.open(Some(name)).and_then(|app| show(&app, out));
        let body = out.take_collected().join("\n");
        match shown {
            Err(Error::NeedsRecovery { mut interrupted }) => attention.append(&mut interrupted),
            other => other?,
        }
        parts.push(format!("== {name} ==\n{body}"));
    }
    if !out.json {
        out.print_joined(&parts.join("\n\n"));
    }
    match attention.len() {
        0 => Ok(()),
        _ => Err(Error::NeedsRecovery {
            interrupted: attention,
        }),
    }
}

/// `--meta` pairs as `key=value` words (values with blanks or quotes
/// quoted), escaped for the terminal.
pub(super) fn show_meta(meta: &std::collections::BTreeMap<String, String>) -> String {
    meta.iter()
        .map(|(k, v)| {
            let plain = !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '"');
            let v = if plain { v.clone() } else { format!("{v:?}") };
            log::clean(&format!("{k}={v}")).into_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// "196 of 201 files (12.8 of 13.1 MB) with v1 by reflink": what staging
/// shared, the rest being the release's own.
pub(super) fn describe_dedup(d: &crate::state::record::DedupRecord) -> String {
    let mb = |b: u64| format!("{:.1}", b as f64 / 1e6);
    format!(
        "{} of {} files ({} of {} MB) with {} by {}",
        d.files,
        d.total_files,
        mb(d.bytes),
        mb(d.total_bytes),
        d.from,
        d.mode
    )
}
