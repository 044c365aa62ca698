//! The man page releasectl(1), written as roff straight from the clap
//! definitions in [`crate::cli`] plus the hand-written sections below, so
//! the help texts stay the one reference for commands and options.
//! `releasectl man > man/releasectl.1` regenerates the committed page;
//! `tests/man.rs` fails when it is stale.
//!
//! Help texts are plain sentences with Markdown code spans (`` `current` ``);
//! here those become bold, and everything else is escaped for roff: `\`,
//! `-` (a hyphen in roff is not the minus of an option), quotes, and a `.`
//! or `'` that would start a request at the beginning of a line. Text lines
//! are wrapped at 80 columns, which `mandoc -T lint -W style` checks.

use clap::{Arg, Command};
use std::fmt::Write as _;

/// The widest text line mandoc's style check accepts.
const WIDTH: usize = 80;

/// The page, dated `date` (YYYY-MM-DD) on its `.TH` line. Long on purpose:
/// the page's sections one after another, in the order a reader meets them.
pub fn render(cmd: &Command, date: &str) -> String {
    let mut cmd = cmd.clone().disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or_default();
    let subcommands: Vec<&Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();

    let mut page = format!(
        ".TH {} 1 {date} \"{name} {version}\" \"User Commands\"\n",
        name.to_uppercase()
    );

    page += ".SH NAME\n";
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    text(
        &mut page,
        &format!("{name} - {}", about.trim_end_matches('.')),
    );

    page += ".SH SYNOPSIS\n";
    let _ = writeln!(page, ".B {name}\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR");
    for sub in &subcommands {
        page += ".br\n";
        synopsis(&mut page, &name, sub);
    }

    page += ".SH DESCRIPTION\n";
    let long_about = cmd
        .get_long_about()
        .or(cmd.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default();
    // The first paragraph follows `.SH` directly (a `.PP` there is redundant).
    for (i, para) in split_paragraphs(&long_about).iter().enumerate() {
        if i > 0 {
            page += ".PP\n";
        }
        text(&mut page, para);
    }
    page += DESCRIPTION;

    page += ".SH OPTIONS\n";
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        item(&mut page, arg);
    }

    page += ".SH COMMANDS\n";
    for sub in &subcommands {
        let _ = writeln!(page, ".SS {}", sub.get_name());
        synopsis(&mut page, &name, sub);
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        paragraphs(&mut page, &about);
        // The global options were described once, above; clap has copied
        // them (and --help) into every subcommand.
        let own: Vec<&Arg> = sub
            .get_positionals()
            .chain(sub.get_arguments().filter(|a| !a.is_positional()))
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help")
            .collect();
        if !own.is_empty() {
            page += ".RS\n";
            for arg in own {
                item(&mut page, arg);
            }
            page += ".RE\n";
        }
    }

    // The same text `--help` ends with: "Exit status:" and one line per code.
    page += ".SH \"EXIT STATUS\"\n";
    let after = cmd
        .get_after_help()
        .map(|a| a.to_string())
        .unwrap_or_default();
    for line in after.lines().skip(1) {
        if let Some((code, what)) = line.trim().split_once(char::is_whitespace) {
            let _ = writeln!(page, ".TP\n.B {code}");
            text(&mut page, what.trim());
        }
    }

    page += JSON_OUTPUT;
    page += FLEETS;
    page += TAIL;
    page
}

/// `.B releasectl SUB` and its positionals; options are `[OPTIONS]`, since
/// the global ones apply to every command.
fn synopsis(page: &mut String, name: &str, sub: &Command) {
    let mut line = String::from("[\\fIOPTIONS\\fR]");
    for arg in sub.get_positionals().filter(|a| !a.is_hide_set()) {
        let value = format!("\\fI{}\\fR", escape(&value_name(arg)));
        if arg.is_required_set() {
            line += &format!(" {value}");
        } else {
            line += &format!(" [{value}]");
        }
    }
    let _ = writeln!(page, ".B {name} {}", sub.get_name());
    wrap(page, &line);
}

/// One `.TP` entry: the option as it is typed, then its help.
fn item(page: &mut String, arg: &Arg) {
    let mut tag = Vec::new();
    if arg.is_positional() {
        tag.push(format!("\\fI{}\\fR", escape(&value_name(arg))));
    } else {
        if let Some(short) = arg.get_short() {
            tag.push(format!("\\fB\\-{}\\fR", escape(&short.to_string())));
        }
        if let Some(long) = arg.get_long() {
            tag.push(format!("\\fB\\-\\-{}\\fR", escape(long)));
        }
    }
    let mut tag = tag.join(", ");
    if !arg.is_positional() && arg.get_action().takes_values() {
        let _ = write!(tag, " \\fI{}\\fR", escape(&value_name(arg)));
    }
    page.push_str(".TP\n");
    wrap(page, &tag);

    let mut help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !values.is_empty() {
        let _ = write!(help, "\n\nOne of {}.", values.join(", "));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| format!("`{}`", v.to_string_lossy()))
        .collect();
    if !defaults.is_empty() && arg.get_action().takes_values() {
        let _ = write!(help, "\n\nDefault: {}.", defaults.join(", "));
    }
    // A `.TP` body is one paragraph; further ones are `.IP`, indented alike.
    for (i, para) in split_paragraphs(&help).iter().enumerate() {
        if i > 0 {
            page.push_str(".IP\n");
        }
        text(page, para);
    }
}

/// What an argument's value is called on the page: its value name, or its
/// id in capitals.
fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase())
}

/// Help text paragraphs (separated by blank lines), each a `.PP`.
fn paragraphs(page: &mut String, help: &str) {
    for para in split_paragraphs(help) {
        page.push_str(".PP\n");
        text(page, &para);
    }
}

/// Blank-line separated paragraphs, each joined onto one line.
fn split_paragraphs(help: &str) -> Vec<String> {
    help.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Help text as roff text lines: code spans in bold, escaped, wrapped.
fn text(page: &mut String, help: &str) {
    wrap(page, &inline(help));
}

/// `` `code` `` spans in bold; everything escaped. An unpaired backtick is
/// kept as a character.
fn inline(s: &str) -> String {
    let parts: Vec<&str> = s.split('`').collect();
    let paired = if parts.len().is_multiple_of(2) {
        parts.len() - 1
    } else {
        parts.len()
    };
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i >= paired {
            out += "\\(ga";
            out += &escape(part);
        } else if i % 2 == 1 {
            let _ = write!(out, "\\fB{}\\fR", escape(part));
        } else {
            out += &escape(part);
        }
    }
    out
}

/// Characters roff would otherwise interpret: the escape character, the
/// hyphen (roff's `-` may become a hyphen glyph; options need the minus),
/// and the quotes that groff would curl.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            '\'' => out.push_str("\\(aq"),
            '`' => out.push_str("\\(ga"),
            _ => out.push(c),
        }
    }
    out
}

/// Lines of at most [`WIDTH`] bytes, broken at spaces. A line that would
/// start with `.` or `'` (a request) starts with the zero-width `\&`.
fn wrap(page: &mut String, roff: &str) {
    let mut line = String::new();
    for word in roff.split(' ').filter(|w| !w.is_empty()) {
        let guard = if word.starts_with('.') || word.starts_with('\'') {
            "\\&"
        } else {
            ""
        };
        if !line.is_empty() && line.len() + 1 + word.len() > WIDTH {
            page.push_str(&line);
            page.push('\n');
            line.clear();
        }
        if line.is_empty() {
            line.push_str(guard);
        } else {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        page.push_str(&line);
        page.push('\n');
    }
}

/// Hand-written: what an app, its root and a release id are.
const DESCRIPTION: &str = r#".PP
An \fIapp\fR is configured in \fI/etc/releasectl/APP.toml\fR (see
\fBreleasectl.toml\fR(5)), or given ad hoc with \fB\-\-root\fR \fIDIR\fR.
Its root holds the release trees, the \fIcurrent\fR link and the state
directory:
.PP
.nf
.RS
ROOT/
  releases/ID/        release trees (real directories)
  current \-> releases/ID   relative symlink, replaced only by rename(2)
  .releasectl/lock    the owner's flock(2) target (0600) in a user's app root
  (root's own lock: /run/releasectl/locks/DEV\-INO.lock, 0600, root's)
  .releasectl/history.jsonl   activation log, append only
  .releasectl/pending.json    intent record of an activation in flight
.RE
.fi
.PP
A release \fIID\fR is 1 to 128 bytes of \fB[A\-Za\-z0\-9._+~\-]\fR, not
starting with \fB.\fR or \fB\-\fR. \fB[APP:]RELEASE\fR is also the instance
string of \fBdeploy@APP:RELEASE.service\fR; systemd's \fB\exNN\fR escapes are
accepted in it.
.PP
Without \fIAPP\fR and without \fB\-\-root\fR, a command acts on the single
configured app. With several apps configured,
\fBstatus\fR, \fBlist\fR and \fBhistory\fR show every app (text sections headed
\fB== APP ==\fR; under \fB\-\-json\fR the one document whose
\fBresult.apps\fR lists the per\-app reports), and the other
commands fail with exit status 2 and list the apps.
.SS "Shell completion"
The completions for bash, zsh and fish complete what is on this machine:
after \fBactivate web:\fR the release ids of app \fBweb\fR (newest first),
after \fBrollback \-\-to\fR the releases other than \fIcurrent\fR, after
\fB\-\-expect\-current\fR the current one, and for an \fIAPP\fR argument the
configured apps (from the configuration directory, or \fB\-\-config\-dir\fR);
with \fB\-\-root\fR, the releases under that root.
The scripts ask the binary on each TAB
(\fBRELEASECTL_COMPLETE=\fR\fISHELL\fR \fBreleasectl \-\-\fR \fIWORDS\fR), so
they never go stale.
Completing only reads: it takes no lock, writes nothing, and offers nothing
rather than an error.
Candidates are quoted for the quoting the cursor is in (a file name holding
quotes, \fB$\fR or blanks completes to a word that names it, never to
one that runs a command); names with a newline or another control character
are not offered.
The packages install the scripts; by hand,
\fBreleasectl completions\fR \fBbash\fR|\fBzsh\fR|\fBfish\fR prints the one for a
shell (for example \fBsource <(releasectl completions bash)\fR).
"#;

/// Hand-written: files, examples, related pages.
const JSON_OUTPUT: &str = r#".SH "JSON OUTPUT"
With \fB\-\-json\fR every run prints exactly one JSON object on standard
output, success or failure, also when the command line does not parse;
messages stay on standard error.
The object has the members
\fBschema\fR (\fB"releasectl.v1"\fR),
\fBcommand\fR (the subcommand, or null),
\fBok\fR,
\fBexit_code\fR,
\fBresult\fR (the command's report, whenever it made one) and, exactly when
\fBok\fR is false,
\fBerror\fR with \fBkind\fR (usage, lock_busy, activation_failed,
rollback_failed, needs_recovery, verify_failed, operational), \fBmessage\fR
(the line also printed on standard error), \fBapp\fR, \fBrelease\fR, and
the state the failure left: \fBcurrent\fR and the intent record
\fBpending\fR.
.PP
\fBstatus\fR, \fBlist\fR and \fBhistory\fR of several apps list the
per\-app reports under \fBapps\fR; \fBactivate \-\-request\fR lists what it
activated under \fBactivations\fR.
Every document is described by the JSON Schema
\fIschema/releasectl.v1.json\fR in the source tree, against which the test
suite checks the real output of every command.
.PP
Stability: within \fBreleasectl.v1\fR members are only added, never removed
or given another meaning; anything else changes the schema name.
Consumers should ignore members they do not know.
The text output is for people and may change.
"#;

/// Hand-written: the Ansible collection, in short (its README is the reference).
const FLEETS: &str = r#".SH FLEETS
The Ansible collection \fBreleasectl.fleet\fR (in the source tree under
\fIansible/\fR; it needs ansible\-core only) rolls one release out to many
hosts as one transaction:
.PP
.nf
.RS
ansible\-playbook releasectl.fleet.rollout \-i hosts.ini \e
  \-e releasectl_app=web \-e releasectl_artifact=./web.tar.zst \e
  \-e releasectl_release=v2
.RE
.fi
.PP
One release id is chosen for the whole run.
Phase 1 copies the artifact to every host and stages it there (with its
SHA\-256); any failure or unreachable host stops the run with no host's
\fBcurrent\fR changed.
Phase 2 switches the hosts in batches (\fBreleasectl_batches\fR, default a
canary host, then 30\ %, then the rest), each with
\fB\-\-expect\-current\fR set to what the host ran before.
If a host fails (its own activation rolled it back, exit 11), becomes
unreachable, or a verify task of \fBreleasectl_verify_tasks\fR fails, every
host this run switched is rolled back with \fBrollback \-\-to\fR its earlier
release \fB\-\-expect\-current\fR the new one (a host someone else moved
meanwhile is left alone and reported), the new release is marked bad there,
and the run fails with \fBreleasectl_summary\fR, one entry per host:
switched, rolled_back, failed, untouched, unreachable, left_alone,
not_rolled_back or rollback_failed.
A host lost during its activation is put back by
\fBreleasectl\-recover.service\fR at its next boot, or by
\fBreleasectl recover\fR.
Two rollouts at once cannot interleave silently: the second to switch a host
fails its guard and rolls back only its own switches.
.PP
To resume, run the same command with the same \fBreleasectl_release\fR:
\fBstage\fR of an id already staged with the same content is
\fBunchanged\fR, a host already on the release is "already active", the
rest switch.
\fB\-\-check\fR changes nothing on any host (\fB\-\-dry\-run\fR throughout).
The module \fBreleasectl.fleet.release\fR (states query, staged, active,
rolled_back) wraps one \fB\-\-json\fR run and can be used alone;
\fBansible\-doc releasectl.fleet.release\fR documents it.
"#;

const TAIL: &str = r#".SH FILES
.TP
.I /etc/releasectl/APP.toml
Configuration of each app; see \fBreleasectl.toml\fR(5).
.TP
.I /var/lib/releasectl/requests/APP
Request file watched by \fBdeploy\-watch@APP.path\fR; see
\fBdeploy@.service\fR(8).
Members of group \fBreleasectl\fR may write it (\fBreleasectl request\fR).
.TP
.I /var/lib/releasectl/results/APP
The outcomes of the latest requests (JSON: release, outcome, exit status,
message), written by root and readable by group \fBreleasectl\fR; what
\fBrequest \-\-wait\fR reads.
.TP
.I /usr/share/polkit\-1/rules.d/50\-releasectl.rules
Lets members of group \fBreleasectl\fR start and stop \fBdeploy@*.service\fR
(and nothing else) without authentication.
.TP
.I /usr/share/bash\-completion/completions/releasectl
.TQ
.I /usr/share/zsh/vendor\-completions/_releasectl
.TQ
.I /usr/share/fish/vendor_completions.d/releasectl.fish
Shell completion scripts (zsh's is in \fI/usr/share/zsh/site\-functions\fR on
RPM systems).
.SH EXAMPLES
Stage a build and activate it:
.PP
.nf
.RS
releasectl deploy \-\-app web ./build.tar.zst
.RE
.fi
.PP
Activate a release that is already on disk, through systemd so the journal
tells the story:
.PP
.nf
.RS
systemctl start deploy@web:v2
journalctl \-u deploy@web:v2
.RE
.fi
.PP
As a member of group \fBreleasectl\fR, without root: ask for v2 and wait for
the outcome (the exit status is the activation's):
.PP
.nf
.RS
releasectl request web:v2 \-\-wait
.RE
.fi
.PP
Go back to the previous good release:
.PP
.nf
.RS
releasectl rollback web
.RE
.fi
.SH "SEE ALSO"
\fBreleasectl.toml\fR(5), \fBdeploy@.service\fR(8), \fBsystemctl\fR(1),
\fBsystemd.path\fR(5), \fBrename\fR(2), \fBflock\fR(2)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_become_bold_and_text_is_escaped() {
        assert_eq!(
            inline("point `current` at it; see --json's `-q`"),
            "point \\fBcurrent\\fR at it; see \\-\\-json\\(aqs \\fB\\-q\\fR"
        );
        assert_eq!(inline("a \\ b `odd"), "a \\e b \\(gaodd");
    }

    #[test]
    fn lines_are_wrapped_and_never_start_a_request() {
        let mut page = String::new();
        let long = format!("{} .hidden 'quoted", "word ".repeat(15).trim_end());
        wrap(&mut page, &long);
        let lines: Vec<&str> = page.lines().collect();
        assert!(lines.iter().all(|l| l.len() <= WIDTH), "{page}");
        assert_eq!(lines[1], "\\&.hidden 'quoted", "{page}");
        assert_eq!(wrap_one(".x"), "\\&.x\n");
    }

    fn wrap_one(s: &str) -> String {
        let mut page = String::new();
        wrap(&mut page, s);
        page
    }
}
