//! `man/releasectl.1` is generated from the clap definitions, so the help
//! texts in `src/cli.rs` are the single reference. This test regenerates the
//! page and fails when the committed copy is stale; `UPDATE_MAN=1 cargo test
//! --test it man::` rewrites it. The hand-written pages are checked with
//! `mandoc -T lint` here too, so a formatting slip fails the build.

use crate::common;
use clap::CommandFactory;
use releasectl::cli::Cli;
use std::path::{Path, PathBuf};
use std::process::Command;

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

/// clap_mangen renders each section with its own copy of the `Aq` string
/// definition and its own `.SH` line; inside a per-command subsection we
/// want only the body.
fn body(rendered: Vec<u8>) -> String {
    let text = String::from_utf8(rendered).expect("roff is UTF-8");
    text.lines()
        .filter(|l| !l.starts_with(".ie \\n(.g .ds Aq") && !l.starts_with(".el .ds Aq"))
        .filter(|l| !l.starts_with(".SH"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Escape text for a roff text line (a leading `.` or `'` would be a request).
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// `releasectl SUB [OPTIONS] ARGS...`: the global options are described once
/// at the top, so a command's synopsis names only its own positionals.
fn synopsis(sub: &clap::Command) -> String {
    let mut line = format!(".B releasectl {}\n[\\fIOPTIONS\\fR]", sub.get_name());
    for arg in sub.get_positionals().filter(|a| !a.is_hide_set()) {
        let name = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        let name = roff_text(&name);
        if arg.is_required_set() {
            line += &format!(" \\fI{name}\\fR");
        } else {
            line += &format!(" [\\fI{name}\\fR]");
        }
    }
    line + "\n"
}

/// mandoc's style checks: no trailing blanks, text lines of at most 80 bytes
/// (long help texts are wrapped at spaces; requests and literal blocks are
/// left alone).
fn tidy(page: &str) -> String {
    let mut out = String::new();
    let mut literal = false;
    let mut seen_aq = false;
    for line in page.lines() {
        let line = line.trim_end();
        if line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq") {
            // Keep the string definition once, at the top.
            if seen_aq && line.starts_with(".el") {
                continue;
            }
            if line.starts_with(".ie") {
                if seen_aq {
                    continue;
                }
                seen_aq = true;
            }
            out += line;
            out.push('\n');
            continue;
        }
        match line {
            ".nf" => literal = true,
            ".fi" => literal = false,
            _ => {}
        }
        if literal || line.starts_with('.') || line.len() <= 80 {
            out += line;
            out.push('\n');
            continue;
        }
        let mut cur = String::new();
        for word in line.split(' ') {
            if !cur.is_empty() && cur.len() + 1 + word.len() > 80 {
                out += &cur;
                out.push('\n');
                cur.clear();
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            // A wrapped line must not start with a control character.
            if cur.is_empty() && (word.starts_with('.') || word.starts_with('\'')) {
                cur += "\\&";
            }
            cur += word;
        }
        out += &cur;
        out.push('\n');
    }
    out
}

fn render(date: &str) -> String {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let man = clap_mangen::Man::new(cmd.clone());
    let section = |render: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut out = Vec::new();
        render(&mut out).unwrap();
        body(out)
    };
    let mut page = format!(
        ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n\
         .TH RELEASECTL 1 {date} \"releasectl {version}\" \"User Commands\"\n"
    );
    page += ".SH NAME\n";
    page += &section(&|w| man.render_name_section(w));
    page += ".SH SYNOPSIS\n";
    page += ".B releasectl\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR\n";
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page += ".br\n";
        page += &synopsis(sub);
    }
    page += ".SH DESCRIPTION\n";
    page += &section(&|w| man.render_description_section(w));
    page += DESCRIPTION_EXTRA;
    let mut opts = Vec::new();
    man.render_options_section(&mut opts).unwrap();
    page += ".SH OPTIONS\n";
    page += &body(opts);

    page += ".SH COMMANDS\n";
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page += &format!(".SS {}\n", sub.get_name());
        page += &synopsis(sub);
        for line in sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            page += &format!(".PP\n{}\n", roff_text(line));
        }
        let own: Vec<clap::Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter(|a| a.get_id() != "help")
            .cloned()
            .collect();
        if !own.is_empty() {
            // Render only the command's own options, not the globals that
            // clap propagated into it.
            let mut only = clap::Command::new("options")
                .disable_help_flag(true)
                .disable_version_flag(true);
            for a in own {
                only = only.arg(a);
            }
            let mut opts = Vec::new();
            clap_mangen::Man::new(only)
                .render_options_section(&mut opts)
                .unwrap();
            page += ".RS\n";
            page += &body(opts);
            page += ".RE\n";
        }
    }

    // The exit codes come from the same text as `--help` prints.
    page += ".SH \"EXIT STATUS\"\n";
    let after = cmd
        .get_after_help()
        .map(|a| a.to_string())
        .unwrap_or_default();
    for line in after
        .lines()
        .skip_while(|l| !l.trim_start().starts_with('0'))
    {
        let (code, text) = line.trim().split_once(char::is_whitespace).expect("code");
        page += &format!(".TP\n.B {code}\n{}\n", roff_text(text.trim()));
    }
    page += TAIL;
    tidy(&page)
}

/// The date on the committed page's `.TH` line, so that an unchanged page
/// stays byte-identical; a rewrite with new content gets today's date.
fn committed_date(page: &str) -> Option<String> {
    let th = page.lines().find(|l| l.starts_with(".TH "))?;
    th.split_whitespace().nth(3).map(str::to_string)
}

fn today() -> String {
    let out = Command::new("date").args(["-u", "+%F"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const DESCRIPTION_EXTRA: &str = r#".PP
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
  .releasectl/lock    flock(2) target; names the holder
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
\fB== APP ==\fR, or one JSON array of the per\-app documents), and the other
commands fail with exit status 2 and list the apps.
"#;

const TAIL: &str = r#".SH FILES
.TP
.I /etc/releasectl/APP.toml
Configuration of each app; see \fBreleasectl.toml\fR(5).
.TP
.I /var/lib/releasectl/requests/APP
Request file watched by \fBdeploy\-watch@APP.path\fR; see \fBdeploy@.service\fR(8).
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

#[test]
fn releasectl_1_is_up_to_date() {
    let path = man_dir().join("releasectl.1");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let date = committed_date(&committed).unwrap_or_else(today);
    let fresh = render(&date);
    if committed == fresh {
        return;
    }
    if std::env::var_os("UPDATE_MAN").is_some() {
        std::fs::write(&path, render(&today())).unwrap();
        return;
    }
    panic!(
        "{} is stale: regenerate it with `UPDATE_MAN=1 cargo test --test it man::`",
        path.display()
    );
}

/// `mandoc -T lint` reports nothing on every page (style and warnings
/// included). Outside CI a missing mandoc skips with a reason.
#[test]
fn pages_are_lint_clean() {
    if !common::have_tool("mandoc") {
        return;
    }
    for page in ["releasectl.1", "releasectl.toml.5", "deploy@.service.8"] {
        let path = man_dir().join(page);
        assert!(path.is_file(), "{} is missing", path.display());
        let out = Command::new("mandoc")
            .args(["-T", "lint", "-W", "style"])
            .arg(&path)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && report.trim().is_empty(),
            "mandoc -T lint {page}:\n{report}"
        );
    }
}
