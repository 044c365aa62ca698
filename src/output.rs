//! What a command prints on stdout: text for people, or one JSON document.

use crate::log;
use std::cell::RefCell;
use std::io::Write;

/// Text or JSON on stdout.
pub struct Output {
    pub json: bool,
    /// While set, documents are kept here instead of printed: `status`,
    /// `list` and `history` of every app print them as one.
    collected: RefCell<Option<Vec<String>>>,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output {
            json,
            collected: RefCell::new(None),
        }
    }

    /// `value` is serialized only under `--json`: building a JSON tree that
    /// text mode throws away doubled `list`'s peak RSS over 10 000 releases.
    pub fn print(&self, value: impl serde::Serialize, text: impl FnOnce() -> String) {
        let body = if self.json {
            serde_json::to_string_pretty(&value).expect("json")
        } else {
            // Text may quote what was read from disk (history reasons):
            // control characters never reach the terminal raw.
            let text = text();
            let lines: Vec<_> = text.trim_end().lines().map(log::clean).collect();
            lines.join("\n")
        };
        if let Some(kept) = self.collected.borrow_mut().as_mut() {
            kept.push(body);
            return;
        }
        if body.is_empty() {
            return;
        }
        // A reader that went away (`releasectl list | head`) is not an error
        // of ours; println! would panic on EPIPE.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{body}");
    }
}

impl Output {
    /// Keep documents instead of printing them, until [`Output::take_collected`].
    pub fn start_collecting(&self) {
        *self.collected.borrow_mut() = Some(Vec::new());
    }

    /// The documents kept since [`Output::start_collecting`]; prints again after.
    pub fn take_collected(&self) -> Vec<String> {
        self.collected.borrow_mut().take().unwrap_or_default()
    }
}
