//! One function per subcommand: resolve the app, call the library, print the
//! result as text or as one JSON document.

mod check;

use crate::activation;
use crate::activation::{Options, Outcome, Target};
use crate::cli;
use crate::cli::output::Output;
use crate::cli::{Cli, Command};
use crate::config::app::{App, Source};
use crate::config::shared;
use crate::error::{exit, usage, Error, Result};
use crate::host::cancel::Cancel;
use crate::host::systemd::service_manager;
use crate::staging::{input, stage};
use crate::state::history::Event;
use crate::state::request;
use crate::state::request::Report;
use crate::state::{history, lock, pending, store};
use crate::{log, release_id};
use serde_json::json;
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
        print!("{}", crate::cli::manpage::render(&Cli::command(), &date));
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

fn run(cli: Cli, out: &Output) -> Result<()> {
    let source = Source::from_options(cli.root.clone(), cli.config_dir.clone());
    let wait = Duration::from_secs(cli.lock_timeout);
    match cli.command {
        Command::Activate(a) => activate(&source, out, a, wait),
        Command::Stage(cmd) => {
            let s = &cmd.stage;
            let mut app = source.open(s.app.as_deref())?;
            app.config.dedup = s.dedup.unwrap_or(app.config.dedup);
            out.about(&app, s.id.as_deref());
            let shared = shared::combine(&app.config.shared, &s.shared_dirs, &s.shared_files)?;
            let inputs = inputs(&app, s)?;
            let id = s.id.as_deref();
            if cmd.dry_run {
                let outcome = stage::plan(&app, &s.source, id, &shared, &inputs)?;
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
                return Ok(());
            }
            let staged = stage::stage(&app, &s.source, id, &shared, &inputs)?;
            out.print(
                json!({"app": app.name, "release": staged.id, "unchanged": staged.unchanged}),
                || staged.id.clone(),
            );
            Ok(())
        }
        Command::Deploy(d) => {
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
                return deploy_dry_run(&app, &d, &shared, &inputs, out);
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
        Command::Rollback(r) => {
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
        Command::Request(r) => request(&source, out, r),
        Command::MarkBad(m) => mark(&source, m, Event::MarkedBad, wait, out),
        Command::MarkGood(m) => mark(&source, m, Event::MarkedGood, wait, out),
        Command::Status(a) => each_app(&source, a.app.as_deref(), out, status),
        Command::List(a) => each_app(&source, a.app.as_deref(), out, list),
        Command::History(h) => each_app(&source, h.app.as_deref(), out, |app, out| {
            show_history(app, h.lines, out)
        }),
        Command::Prune(p) => {
            let app = source.open(p.app.as_deref())?;
            out.about(&app, None);
            prune(&app, p, wait, out)
        }
        Command::Check(a) => {
            let app = source.open(a.app.as_deref())?;
            out.about(&app, None);
            crate::cli::commands::check::check(&app, out)
        }
        Command::Verify(v) => verify(&source, v, out),
        Command::Recover(r) => recover(&source, r, wait, out),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled in main"),
    }
}

fn activate(source: &Source, out: &Output, a: cli::ActivateArgs, wait: Duration) -> Result<()> {
    if let Some(name) = &a.request {
        history::set_trigger("path");
        return activate_requested(source, out, &a, name, wait);
    }
    let Some(raw) = &a.release else {
        return Err(usage("no release given"));
    };
    let request = release_id::parse_request(raw, source.allows_app())?;
    check_flags(&a.flags)?;
    let app = source.open(request.app.as_deref())?;
    out.about(&app, Some(&request.release));
    let target = Target::Release(request.release);
    run_activation(&app, &target, &a.flags, wait, Leaving::Keep, out).map(drop)
}

/// `activate --request APP` (deploy-watch@APP.service): activate what the
/// request file names, and record each request's outcome, a refused one
/// too, where the requester can read it.
fn activate_requested(
    source: &Source,
    out: &Output,
    a: &cli::ActivateArgs,
    name: &str,
    wait: Duration,
) -> Result<()> {
    let name = request::app_name(name)?;
    out.many("activations");
    let results = request::results_dir(&a.dirs.requests_dir, a.dirs.results_dir.as_deref());
    // Ends the wait for the results lock; each activation has its own too.
    let cancel = Cancel::install()
        .map_err(|e| Error::Operational(anyhow::anyhow!("installing signal handlers: {e}")))?;
    let mut done: Option<request::Request> = None;
    loop {
        let req = match request::read(&a.dirs.requests_dir, &name) {
            Ok(req) => req,
            // Removed after what ran: nothing more was asked. (lstat: a
            // dangling symlink planted there is a request to refuse.)
            Err(Error::Usage(_))
                if done.is_some()
                    && std::fs::symlink_metadata(a.dirs.requests_dir.join(&name)).is_err() =>
            {
                return Ok(())
            }
            Err(e) => {
                request::record(&results, Report::new(&name, None).failed(&e), &cancel);
                // What ran before a garbled follow-up stands.
                return if done.is_some() { Ok(()) } else { Err(e) };
            }
        };
        // The same file, unchanged: nothing new was asked.
        if done.as_ref() == Some(&req) {
            return Ok(());
        }
        if done.is_some() {
            // A request written while this one ran does not start the watch
            // service again (systemd merges it into the running job), so
            // the file is read once more after each activation.
            log::info(&format!(
                "{name}: request changed to {} meanwhile; activating it",
                req.release
            ));
        }
        // History records who asked (the request file's owner).
        crate::state::history::set_requester(req.uid);
        let result = check_flags(&a.flags).and_then(|()| {
            let app = source.open(Some(&name))?;
            out.about(&app, Some(&req.release));
            let target = Target::Release(req.release.clone());
            run_activation(&app, &target, &a.flags, wait, Leaving::Keep, out)
        });
        let report = Report::new(&name, Some(&req));
        request::record(
            &results,
            match &result {
                Ok(done) => report.succeeded(done.outcome, done.from.clone(), done.describe(&name)),
                Err(e) => report.failed(e),
            },
            &cancel,
        );
        result?;
        // Stopped (SIGTERM from `systemctl stop`): what ran stands, and no
        // follow-up request is started.
        if let Some(sig) = cancel.received() {
            log::info(&format!(
                "{name}: {sig} received; not reading the request again"
            ));
            return Ok(());
        }
        done = Some(req);
    }
}

/// `request [APP:]RELEASE [--wait]`: write the request file as an
/// unprivileged member of group `releasectl`; with `--wait`, report the
/// outcome root recorded and exit with the activation's status.
fn request(source: &Source, out: &Output, r: cli::RequestArgs) -> Result<()> {
    let parsed = release_id::parse_request(&r.release, source.allows_app())?;
    let name = source.app_name(parsed.app.as_deref())?;
    let release = parsed.release;
    // Refuse here what root would refuse, where this user can tell (an
    // unknown app, a bad config, a missing release); what it may not read
    // (a config only root reads) is root's to judge.
    let local = source
        .open(Some(&name))
        .and_then(|app| app.root.check_release(&release));
    if let Err(e @ Error::Usage(_)) = local {
        return Err(e);
    }
    let results_path = request::results_dir(&r.dirs.requests_dir, r.dirs.results_dir.as_deref());
    let results = match r.wait {
        true => Some(request::open_results(&results_path)?),
        false => None,
    };
    let sub = request::submit(&r.dirs.requests_dir, &name, &release)?;
    let Some(results) = results else {
        out.print(
            json!({"app": name, "release": release, "request": sub.token, "file": sub.path}),
            || format!("{name}: requested {release} (request {})", sub.token),
        );
        return Ok(());
    };
    log::info(&format!(
        "{name}: requested {release}; waiting for the outcome"
    ));
    let report = request::wait(&sub, &results, Duration::from_secs(r.timeout))?;
    if report.exit_code == 0 {
        out.print(&report, || report.message.clone());
        return Ok(());
    }
    // Text: the message is the error line. JSON: the outcome is the
    // result, the relayed status the error.
    out.print(&report, String::new);
    Err(Error::Relayed {
        code: report.exit_code,
        message: report.message,
    })
}

/// `deploy --dry-run` must change nothing, so it checks what staging and
/// activation would refuse without staging anything.
fn deploy_dry_run(
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

/// `stage`'s and `deploy`'s input flags, validated with the app's
/// signing policy.
fn inputs(app: &App, s: &cli::StageArgs) -> Result<input::Inputs> {
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

/// The current release, or exit 2 if `--expect-current` names another.
fn expect_current(app: &App, f: &cli::ActivateFlags) -> Result<Option<String>> {
    let current = app.root.current()?;
    activation::check_expected(f.expect_current.as_deref(), &current)?;
    Ok(current)
}

fn check_flags(f: &cli::ActivateFlags) -> Result<()> {
    // '' is the one value that is not an id: "there is no current".
    if let Some(id) = f.expect_current.as_deref().filter(|id| !id.is_empty()) {
        release_id::validate(id)?;
    }
    Ok(())
}

/// `rollback`: the release left behind is marked bad once the rollback
/// commits, so a second rollback goes further back.
#[derive(Clone, Copy, PartialEq)]
enum Leaving {
    Keep,
    MarkBad,
}

/// What an activation that did not fail did.
struct Done {
    outcome: &'static str,
    from: Option<String>,
    to: String,
}

impl Done {
    /// One line for a requester.
    fn describe(&self, app: &str) -> String {
        let from = self.from.as_deref().unwrap_or("none");
        match self.outcome {
            "already_active" => format!("{app}: {} already active", self.to),
            word => format!("{app}: {} {word} (previous: {from})", self.to),
        }
    }
}

fn run_activation(
    app: &App,
    target: &Target,
    f: &cli::ActivateFlags,
    lock_timeout: Duration,
    leaving: Leaving,
    out: &Output,
) -> Result<Done> {
    let opts = Options {
        no_reload: f.no_reload,
        no_health: f.no_health,
        force: f.force,
        lock_timeout,
        expect_current: f.expect_current.clone(),
        dry_run: f.dry_run,
        refuse_bad: f.refuse_bad,
        verify: f.verify,
        mark_from_bad: leaving == Leaving::MarkBad,
    };
    let cancel = Cancel::install()
        .map_err(|e| Error::Operational(anyhow::anyhow!("installing signal handlers: {e}")))?;
    let mut services = service_manager(app, opts.no_reload || opts.dry_run)?;
    let outcome = activation::activate(app, target, &opts, services.as_mut(), &cancel)?;
    let (word, from, to) = match &outcome {
        Outcome::Activated { from, to } => ("activated", from.clone(), to.clone()),
        Outcome::AlreadyActive { release } => {
            ("already_active", Some(release.clone()), release.clone())
        }
        Outcome::WouldActivate { from, to } => ("would_activate", from.clone(), to.clone()),
    };
    if let (Outcome::Activated { .. }, Some(keep)) = (&outcome, app.config.auto_prune) {
        auto_prune(app, keep);
    }
    let label = app.label();
    out.print(
        json!({"app": app.name, "root": app.root.path(), "outcome": word, "release": to, "previous": from}),
        || match &outcome {
            Outcome::Activated { .. } => String::new(),
            Outcome::AlreadyActive { release } => format!("{label}: {release} already active"),
            Outcome::WouldActivate { from, to } => format!(
                "{label}: would activate {to} (current: {})",
                from.as_deref().unwrap_or("none")
            ),
        },
    );
    Ok(Done {
        outcome: word,
        from,
        to,
    })
}

/// `[prune] keep`: after a committed activation, prune to `keep` good
/// releases. The activation stands whatever happens here: a failure is a
/// warning. The lock is not waited for: whoever holds it is activating,
/// and prunes after its own commit.
fn auto_prune(app: &App, keep: usize) {
    let label = app.label();
    match store::prune(app, keep, Duration::ZERO) {
        Ok(done) if done.plan.remove.is_empty() => {}
        Ok(done) => log::info(&format!(
            "{label}: pruned to {keep} good releases ([prune] keep): removed {}",
            done.plan.remove.join(", ")
        )),
        Err(Error::LockBusy(_)) => log::info(&format!(
            "{label}: not pruned after the activation: the lock is busy (the next activation prunes)"
        )),
        Err(e) => log::warn(&format!(
            "{label}: pruning after the activation failed (the activation stands): {}",
            e.one_line()
        )),
    }
}

/// `status`. An intent record with nobody holding the lock is an
/// interrupted activation: the report says so and the exit status is 13,
/// so a monitoring check or a script notices before the next deploy does.
fn status(app: &App, out: &Output) -> Result<()> {
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
    out.print(
        json!({
            "app": app.name, "root": app.root.path(), "current": inv.current,
            "previous": s.previous, "last_good": s.last_good, "pending": inv.pending,
            "interrupted": interrupted.is_some(),
            "lock_holder": holder, "last": s.last, "releases": inv.releases.len(),
            "meta": meta,
            "dedup": current_dedup,
        }),
        || {
            let none = || "none".to_string();
            let mut t = format!("app:       {}\n", app.label());
            t += &format!("root:      {}\n", app.root.path().display());
            t += &format!("current:   {}\n", inv.current.clone().unwrap_or_else(none));
            if let Some(m) = meta.as_ref().filter(|m| !m.is_empty()) {
                t += &format!("meta:      {}\n", show_meta(m));
            }
            t += &format!("previous:  {}\n", s.previous.clone().unwrap_or_else(none));
            t += &format!("last good: {}\n", s.last_good.clone().unwrap_or_else(none));
            t += &format!("releases:  {}\n", inv.releases.len());
            if let Some(d) = &current_dedup {
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
                holder
                    .as_ref()
                    .map_or("free".to_string(), |h| h.to_string())
            );
            t += &format!("last:      {}", s.last.as_ref().map_or_else(none, describe));
            t
        },
    );
    match interrupted {
        Some(p) => Err(Error::NeedsRecovery(format!(
            "{}: the activation {} → {} (pid {}, started {}) was interrupted; run `releasectl recover{}` (the next activation also \
             recovers it first)",
            app.label(),
            p.from.as_deref().unwrap_or("none"),
            p.to,
            p.pid,
            p.started,
            app.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

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
    out.many("apps");
    let mut parts = Vec::new();
    // Apps with an interrupted activation are shown like the others, then
    // named together in the one error line.
    let mut attention = Vec::new();
    for name in &names {
        out.start_collecting();
        let shown = source.open(Some(name)).and_then(|app| show(&app, out));
        let body = out.take_collected().join("\n");
        match shown {
            Err(Error::NeedsRecovery(why)) => attention.push(why),
            other => other?,
        }
        parts.push(format!("== {name} ==\n{body}"));
    }
    if !out.json {
        out.print_joined(&parts.join("\n\n"));
    }
    match attention.len() {
        0 => Ok(()),
        _ => Err(Error::NeedsRecovery(attention.join("; "))),
    }
}

/// `mark-bad` / `mark-good`.
fn mark(
    source: &Source,
    m: cli::MarkArgs,
    event: Event,
    wait: Duration,
    out: &Output,
) -> Result<()> {
    let request = release_id::parse_request(&m.release, source.allows_app())?;
    let reason = m.reason.unwrap_or_else(|| "by hand".into());
    if reason.len() > 512 || reason.chars().any(char::is_control) {
        return Err(usage("--reason: at most 512 bytes, no control characters"));
    }
    let app = source.open(request.app.as_deref())?;
    let id = request.release;
    out.about(&app, Some(&id));
    store::mark(&app, &id, event, &reason, wait)?;
    let word = if event == Event::MarkedBad {
        "bad"
    } else {
        "good"
    };
    let label = app.label();
    out.print(
        json!({"app": app.name, "release": id, "marked": word}),
        || format!("{label}: {id} marked {word}"),
    );
    Ok(())
}

/// One history entry as a sentence that says what happened and what is
/// live after it ("v2 failed, v1 restored"), then who, how and how long.
fn describe(e: &history::Entry) -> String {
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

/// "196 of 201 files (12.8 of 13.1 MB) with v1 by reflink": what staging
/// shared, the rest being the release's own.
fn describe_dedup(d: &crate::state::record::DedupRecord) -> String {
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

/// `list`'s report, serialized straight from the inventory.
#[derive(serde::Serialize)]
struct ListReport<'a> {
    app: Option<&'a str>,
    releases: &'a [store::Release],
}

fn list(app: &App, out: &Output) -> Result<()> {
    let inv = store::inventory(app)?;
    let report = ListReport {
        app: app.name.as_deref(),
        releases: &inv.releases,
    };
    out.print(&report, || {
        let mut t = String::new();
        for r in &inv.releases {
            let mut marks = Vec::new();
            if r.current {
                marks.push("current");
            }
            if r.previous {
                marks.push("previous");
            }
            if r.bad {
                marks.push("bad");
            }
            let created = r.created.as_deref().unwrap_or("-");
            let size = r.size.map_or("-".into(), human_size);
            let shared = r
                .dedup
                .as_ref()
                .map(|d| format!("  shared: {}", describe_dedup(d)))
                .unwrap_or_default();
            let line = format!(
                "{:<32} {created:<20}  {size:>9}  {:<16} {}{shared}",
                r.id,
                marks.join(","),
                show_meta(&r.meta)
            );
            t += line.trim_end();
            t.push('\n');
        }
        t
    });
    Ok(())
}

/// A size for people: bytes, KiB, MiB, GiB (powers of 1024).
fn human_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `--meta` pairs as `key=value` words (values with blanks or quotes
/// quoted), escaped for the terminal.
fn show_meta(meta: &std::collections::BTreeMap<String, String>) -> String {
    meta.iter()
        .map(|(k, v)| {
            let plain = !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '"');
            let v = if plain { v.clone() } else { format!("{v:?}") };
            log::clean(&format!("{k}={v}")).into_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn show_history(app: &App, lines: Option<usize>, out: &Output) -> Result<()> {
    let state = app.state_dir(false)?;
    let shown = match lines {
        Some(n) => history::tail(state.as_ref(), n)?,
        None => history::read(state.as_ref())?,
    };
    out.print(json!({"app": app.name, "entries": shown}), || {
        shown.iter().map(|e| describe(e) + "\n").collect()
    });
    Ok(())
}

fn prune(app: &App, p: cli::PruneArgs, wait: Duration, out: &Output) -> Result<()> {
    let keep = p.keep.unwrap_or(app.config.keep);
    if p.dry_run {
        // Refused as the real run would be (a member in root's layout may
        // not take the lock), not a plan it then cannot carry out.
        let state = app.state_dir(false)?;
        lock::check_can_take(&app.root, state.as_ref()).map_err(|e| {
            Error::Operational(anyhow::anyhow!(
                "{}: prune would be refused: {}",
                app.label(),
                e.one_line()
            ))
        })?;
        let plan = store::plan_prune(&store::inventory(app)?, keep);
        out.print(json!({"dry_run": true, "plan": plan}), || {
            describe_plan(&plan, "would remove")
        });
        return Ok(());
    }
    let done = store::prune(app, keep, wait)?;
    out.print(
        json!({"dry_run": false, "plan": done.plan, "leftovers_removed": done.leftovers}),
        || describe_plan(&done.plan, "removed"),
    );
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

fn recover(source: &Source, r: cli::RecoverArgs, wait: Duration, out: &Output) -> Result<()> {
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
            Ok(done) => report.push(json!({"app": name, "recovered": done})),
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
                report.push(json!({"app": name, "error": e.one_line()}));
                failed.push((name, e));
            }
        }
    }
    out.print(json!({ "apps": report }), String::new);
    let total = report.len();
    match failed.len() {
        0 => Ok(()),
        1 if !several => Err(failed.pop().expect("one").1),
        n => Err(Error::Operational(anyhow::anyhow!(
            "{n} of {total} apps could not be recovered: {}",
            failed
                .iter()
                .map(|(name, _)| name.as_deref().unwrap_or("root"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether `raw` (no `:`) is the name of an app configured in the config
/// directory: then it is that app, not a release id.
fn names_an_app(source: &Source, raw: &std::ffi::OsStr) -> Result<bool> {
    let Some(word) = raw.to_str().filter(|w| !w.contains(':')) else {
        return Ok(false);
    };
    Ok(source.allows_app() && source.all_apps()?.iter().any(|a| a == word))
}

/// `verify [APP | [APP:]RELEASE]`: the release against its manifest; exit 14 when
/// anything differs, with every difference in the report.
fn verify(source: &Source, v: cli::VerifyArgs, out: &Output) -> Result<()> {
    // `verify shop`, like `status shop`: a bare word naming a configured
    // app means that app's current release.
    let (release, app_name) = match v.release {
        Some(raw) if names_an_app(source, &raw)? => (None, raw.to_str().map(str::to_string)),
        release => (release, v.app),
    };
    let (app, id) = match &release {
        Some(raw) => {
            let r = release_id::parse_request(raw, source.allows_app())?;
            (source.open(r.app.as_deref())?, r.release)
        }
        None => {
            let app = source.open(app_name.as_deref())?;
            let Some(id) = app.root.current()? else {
                return Err(usage(format!(
                    "{}: no current release; name the release to verify",
                    app.label()
                )));
            };
            (app, id)
        }
    };
    out.about(&app, Some(&id));
    let release = app.root.open_release(&id)?;
    let releases = app
        .root
        .releases_dir(false)?
        .expect("the release was opened in it");
    let checked = crate::state::record::verify::check(&releases, &id, &release)?;
    let label = app.label();
    let diffs = &checked.differences;
    out.print(
        json!({"app": app.name, "release": id, "matches": checked.matches(), "differences": diffs}),
        || {
            if checked.matches() {
                return format!("{label}: {id} matches its manifest");
            }
            let mut t = String::new();
            for d in diffs {
                t += &format!("{:<8} {}  ({})\n", d.change, d.path, d.detail);
            }
            if checked.total > diffs.len() {
                t += &format!("… and {} more\n", checked.total - diffs.len());
            }
            t
        },
    );
    if checked.matches() {
        return Ok(());
    }
    Err(Error::VerifyFailed(format!(
        "{label}: {id} does not match its manifest: {}",
        checked.summary()
    )))
}
