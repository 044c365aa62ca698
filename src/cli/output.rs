//! What a command prints on stdout: text for people, or exactly one JSON
//! document per run, success or failure.
//!
//! The document (schema `releasectl.v1`, described in `schema/` and in
//! releasectl(1)) is an envelope:
//!
//! ```text
//! { "schema": "releasectl.v1", "command": "activate", "ok": false, "exit_code": 11,
//!   "result": { ... the command's report, when it made one ... },
//!   "error": { "kind": "activation_failed", "message": "...", "app": "web",
//!              "release": "v2", "current": "v1", "pending": null } }
//! ```
//!
//! Commands hand their report to [`Output::print`]; `main` ends the run with
//! [`Output::finish`], which prints the envelope (or, as text, the report
//! was printed already and only the error line is left).

use crate::error::Error;
use crate::log;
use serde::Serialize;
use serde_json::value::RawValue;
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::PathBuf;

/// The name and version of the JSON documents; bumped on any change that
/// is not an addition.
pub const SCHEMA: &str = "releasectl.v1";

pub struct Output {
    pub json: bool,
    /// `None` only when the command line did not parse into a command.
    command: Option<&'static str>,
    /// Reports made so far (JSON mode): printed in the envelope at the end.
    results: RefCell<Vec<Box<RawValue>>>,
    /// Several reports form one list under this key (`activate --request`
    /// may follow several requests; `status` etc. of every app).
    many: Cell<Option<&'static str>>,
    /// Text mode, while set: reports are kept instead of printed (`status`,
    /// `list` and `history` of every app print them as one).
    collected: RefCell<Option<Vec<String>>>,
    /// The app and release the command acts on, for the error document.
    about: RefCell<Option<About>>,
}

struct About {
    app: Option<String>,
    root: PathBuf,
    release: Option<String>,
}

impl Output {
    pub fn new(json: bool, command: &'static str) -> Output {
        Output {
            json,
            command: Some(command),
            results: RefCell::new(Vec::new()),
            many: Cell::new(None),
            collected: RefCell::new(None),
            about: RefCell::new(None),
        }
    }

    /// The output of a run whose command line did not parse: JSON, and the
    /// command only if it could be told.
    pub fn for_parse_error(command: Option<&'static str>) -> Output {
        let mut out = Output::new(true, "");
        out.command = command;
        out
    }

    /// The command's report: kept for the envelope under `--json` (built
    /// only then: a JSON tree that text mode throws away doubled `list`'s
    /// peak RSS over 10 000 releases), else its text printed.
    pub fn print(&self, value: impl Serialize, text: impl FnOnce() -> String) {
        if self.json {
            let body = serde_json::to_string_pretty(&value).expect("json");
            let raw = RawValue::from_string(body).expect("serde_json wrote JSON");
            self.results.borrow_mut().push(raw);
            return;
        }
        // Text may quote what was read from disk (history reasons):
        // control characters never reach the terminal raw.
        let text = text();
        let lines: Vec<_> = text.trim_end().lines().map(log::clean).collect();
        let body = lines.join("\n");
        if let Some(kept) = self.collected.borrow_mut().as_mut() {
            kept.push(body);
            return;
        }
        print_text(&body);
    }

    /// Reports of this run form one list, `{"<key>": [...]}`, however many.
    pub fn many(&self, key: &'static str) {
        self.many.set(Some(key));
    }

    /// Name the app (and release) acted on: an error document then says
    /// what `current` and the pending intent are after the failure.
    pub fn about(&self, app: &crate::config::app::App, release: Option<&str>) {
        *self.about.borrow_mut() = Some(About {
            app: app.name.clone(),
            root: app.root.path().to_path_buf(),
            release: release.map(str::to_string),
        });
    }

    /// Keep text reports instead of printing them, until [`Output::take_collected`].
    pub fn start_collecting(&self) {
        *self.collected.borrow_mut() = Some(Vec::new());
    }

    /// The text reports kept since [`Output::start_collecting`]; prints again after.
    pub fn take_collected(&self) -> Vec<String> {
        self.collected.borrow_mut().take().unwrap_or_default()
    }

    /// Print `body` as text now (the joined reports of every app).
    pub fn print_joined(&self, body: &str) {
        print_text(body);
    }

    /// End the run: the error line on stderr, the envelope on stdout under
    /// `--json`. Returns the exit status.
    pub fn finish(&self, outcome: Result<(), Error>) -> i32 {
        let code = match &outcome {
            Ok(()) => 0,
            Err(e) => e.exit_code(),
        };
        if let Err(e) = &outcome {
            log::error(&format!("error: {}", e.one_line()));
        }
        if !self.json {
            return code;
        }
        let results = self.results.take();
        let result: Option<Box<RawValue>> = match (self.many.get(), results.len()) {
            (None, 0) => None,
            (None, 1) => {
                let text = indent(results[0].get(), 2);
                Some(RawValue::from_string(text).expect("indented JSON"))
            }
            (key, _) => {
                let parts: Vec<String> = results.iter().map(|r| indent(r.get(), 6)).collect();
                let text = format!(
                    "{{\n    \"{}\": [\n      {}\n    ]\n  }}",
                    key.unwrap_or("results"),
                    parts.join(",\n      ")
                );
                Some(RawValue::from_string(text).expect("joined JSON"))
            }
        };
        let error = outcome.as_ref().err().map(|e| self.error_doc(e));
        let doc = Envelope {
            schema: SCHEMA,
            command: self.command,
            ok: outcome.is_ok(),
            exit_code: code,
            result: result.as_deref(),
            error,
        };
        print_text(&serde_json::to_string_pretty(&doc).expect("json"));
        code
    }

    /// The error document: the app, release and state the error carries
    /// (a failed activation or rollback knows what is live); for errors
    /// that carry none (usage, operational, lock busy, a relayed outcome,
    /// a verification), the app named with [`Output::about`] and its state
    /// read afresh.
    fn error_doc(&self, e: &Error) -> ErrorDoc {
        let about = self.about.borrow();
        let about = about.as_ref();
        let left = e.left();
        let told = |of: fn(&About) -> &Option<String>| about.and_then(|a| of(a).clone());
        let mut doc = ErrorDoc {
            kind: e.kind().name(),
            message: e.one_line(),
            app: match left.as_ref().and_then(|l| l.app) {
                Some(app) => Some(app.to_string()),
                None => told(|a| &a.app),
            },
            release: match left.as_ref().and_then(|l| l.release) {
                Some(release) => Some(release.to_string()),
                None => told(|a| &a.release),
            },
            current: None,
            pending: None,
        };
        // The intent record is the state layer's: read, also when the
        // error says it was kept.
        let root = about.and_then(|a| crate::fs::root::RootDir::open(&a.root).ok());
        let read_pending = |root: &crate::fs::root::RootDir| {
            root.state_dir(false)
                .ok()
                .flatten()
                .and_then(|s| crate::state::pending::read(Some(&s)).ok().flatten())
        };
        match (left.and_then(|l| l.state), root) {
            (Some(after), root) => {
                doc.current = after.current.map(str::to_string);
                if after.pending_kept {
                    doc.pending = root.as_ref().and_then(read_pending);
                }
            }
            // The state left behind, read afresh (read-only, by handle).
            (None, Some(root)) => {
                doc.current = root.current().ok().flatten();
                doc.pending = read_pending(&root);
            }
            (None, None) => {}
        }
        doc
    }
}

/// A reader that went away (`releasectl list | head`) is not an error of
/// ours; println! would panic on EPIPE.
fn print_text(body: &str) {
    if body.is_empty() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{body}");
}

/// Print `body` exactly as given, no newline added (the man page: roff
/// for man(1), not a report), as safe from EPIPE as [`print_text`]:
/// `releasectl man | head` must not panic.
pub fn print_verbatim(body: &str) {
    let _ = std::io::stdout().lock().write_all(body.as_bytes());
}

#[derive(Serialize)]
struct Envelope<'a> {
    schema: &'static str,
    command: Option<&'static str>,
    ok: bool,
    exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDoc>,
}

/// What went wrong, and the state it left: `current` and the intent record
/// of an interrupted or kept activation.
#[derive(Serialize)]
struct ErrorDoc {
    kind: &'static str,
    message: String,
    app: Option<String>,
    release: Option<String>,
    current: Option<String>,
    pending: Option<crate::state::pending::Pending>,
}

/// Pretty JSON re-indented by `by` spaces, to sit at that depth in the
/// envelope (the raw result is embedded as written). A newline in pretty
/// JSON only ever separates tokens (strings escape theirs), so this cannot
/// change a value.
fn indent(pretty: &str, by: usize) -> String {
    pretty.replace('\n', &format!("\n{}", " ".repeat(by)))
}
