//! Shell completion that knows the machine: `activate web:<TAB>` offers
//! web's release ids, `rollback --to <TAB>` the releases to go back to, an
//! APP argument the configured apps.
//!
//! The scripts that `releasectl completions SHELL` prints (and the packages
//! ship) list no commands: on each TAB they run
//! `RELEASECTL_COMPLETE=SHELL releasectl -- WORDS`, and the binary answers
//! from its clap definitions (clap_complete's engine: subcommands, options,
//! paths) and from the value completers below. A new command or option is
//! completed without regenerating anything.
//!
//! Completion runs at every keystroke of an operator who may be root on a
//! production host, so it only reads: it never takes an app's lock (a TAB
//! must not wait behind a running activation, nor delay one), never creates
//! `.releasectl/` or anything else, and never answers with an error. Its
//! stderr is /dev/null, and what cannot be read (a broken config, a missing
//! root) yields no candidates.

use crate::cli::{Cli, Shell};
use crate::config::app::Source;
use clap::{Arg, CommandFactory};
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{EnvCompleter, Shells};
use clap_complete::CompleteEnv;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable that makes a run a completion request.
const VAR: &str = "RELEASECTL_COMPLETE";

/// The words before the one being completed, for completers that depend on
/// them (`--root`, `--config-dir`, the app a `--to` belongs to). Set once:
/// a completion request is a process of its own.
static WORDS: OnceLock<Vec<String>> = OnceLock::new();

const BASH: Adapter = Adapter(Shell::Bash);
const ZSH: Adapter = Adapter(Shell::Zsh);
const FISH: Adapter = Adapter(Shell::Fish);

/// If the shell asks for completions, answer on stdout and exit; otherwise
/// return and let the command run.
pub fn complete_if_asked() {
    match std::env::var_os(VAR) {
        Some(v) if !v.is_empty() && v != "0" => {}
        _ => return,
    }
    silence_stderr();
    CompleteEnv::with_factory(command)
        .var(VAR)
        .bin("releasectl")
        .completer("releasectl")
        .shells(Shells(&[&BASH, &ZSH, &FISH]))
        .complete();
}

/// The script for `shell` that `releasectl completions SHELL` prints.
pub fn write_script(shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    Adapter(shell).write_registration(VAR, "releasectl", "releasectl", "releasectl", out)
}

fn silence_stderr() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

/// The command line definitions with a value completer on every argument
/// that names an app or a release (found by id, so new commands that use
/// the same names are covered).
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |mut sub| {
            let ids: Vec<String> = sub
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .collect();
            for id in ids {
                let completer: fn(&OsStr) -> Vec<CompletionCandidate> = match id.as_str() {
                    "release" => app_and_release,
                    "app" | "request" => app,
                    "to" => other_release,
                    "expect_current" => current_release,
                    _ => continue,
                };
                sub = sub.mut_arg(id, |a: Arg| a.add(ArgValueCompleter::new(completer)));
            }
            sub
        });
    }
    cmd
}

// ------------------------------------------------------------ completers

/// `[APP:]RELEASE`: `APP:` for each configured app, `APP:ID` once an app is
/// typed, bare ids under `--root` or when a single app is configured.
fn app_and_release(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(current) = current.to_str() else {
        return Vec::new();
    };
    let source = source();
    if let Source::Root(_) = source {
        return releases(&source, None, current, |_| true);
    }
    if let Some((app, prefix)) = current.split_once(':') {
        return releases(&source, Some(app), prefix, |_| true)
            .into_iter()
            .map(|c| c.add_prefix(format!("{app}:")))
            .collect();
    }
    let apps = source.all_apps().unwrap_or_default();
    let mut out: Vec<CompletionCandidate> = apps
        .iter()
        .filter(|a| a.starts_with(current))
        .map(|a| CompletionCandidate::new(format!("{a}:")).help(Some("app".into())))
        .collect();
    if apps.len() == 1 {
        out.extend(releases(&source, None, current, |_| true));
    }
    out
}

/// A configured app (nothing under `--root`, which names no apps).
fn app(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(current) = current.to_str() else {
        return Vec::new();
    };
    source()
        .all_apps()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.starts_with(current))
        .map(CompletionCandidate::new)
        .collect()
}

/// `rollback --to`: the releases of the line's app other than the current.
fn other_release(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(current) = current.to_str() else {
        return Vec::new();
    };
    releases(&source(), app_on_line().as_deref(), current, |c| !c)
}

/// `--expect-current`: the release that is current now.
fn current_release(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(current) = current.to_str() else {
        return Vec::new();
    };
    releases(&source(), app_on_line().as_deref(), current, |c| c)
}

/// The release ids of `app` (or the single app, or the `--root`) that start
/// with `prefix`, newest first, kept when `keep(is_current)` says so. The
/// current one is described as such.
fn releases(
    source: &Source,
    app: Option<&str>,
    prefix: &str,
    keep: fn(bool) -> bool,
) -> Vec<CompletionCandidate> {
    let Ok(app) = source.open(app) else {
        return Vec::new();
    };
    let Ok(ids) = crate::state::store::release_ids(&app) else {
        return Vec::new();
    };
    let current = app.root.current().ok().flatten();
    ids.into_iter()
        .filter(|id| id.starts_with(prefix))
        .filter(|id| keep(current.as_deref() == Some(id.as_str())))
        .map(|id| {
            let help = (current.as_deref() == Some(id.as_str())).then(|| "current".into());
            CompletionCandidate::new(id).help(help)
        })
        .collect()
}

// ------------------------------------------------- reading the command line

fn words() -> &'static [String] {
    WORDS.get().map(Vec::as_slice).unwrap_or_default()
}

/// Where apps come from, as the words typed so far say (`--root DIR`,
/// `--config-dir DIR`, or the default config directory).
fn source() -> Source {
    let line = scan();
    let (mut root, mut config_dir) = (None, None);
    for (name, value) in line.options {
        match name.as_str() {
            "root" => root = Some(PathBuf::from(value)),
            "config-dir" => config_dir = Some(PathBuf::from(value)),
            _ => {}
        }
    }
    Source::from_options(root, config_dir)
}

/// The app the line names: `--app APP`, or the subcommand's first
/// positional (an `APP`, or the `APP` of `APP:RELEASE`). `None`: the
/// single configured app, as for the command itself.
fn app_on_line() -> Option<String> {
    let line = scan();
    if let Some((_, app)) = line.options.iter().rev().find(|(n, _)| n == "app") {
        return Some(app.clone());
    }
    let value = line.positionals.first()?;
    match line.first_positional?.as_str() {
        "app" => Some(value.clone()),
        "release" => value.split_once(':').map(|(app, _)| app.to_string()),
        _ => None,
    }
}

/// What the words before the cursor give the command.
struct Scanned {
    /// Long options with their values, in order.
    options: Vec<(String, String)>,
    /// The id of the subcommand's first positional argument.
    first_positional: Option<String>,
    /// The values given to the subcommand's positionals.
    positionals: Vec<String>,
}

/// Read the words as clap would, as far as completers need: which option
/// takes the next word as its value, where the subcommand is.
fn scan() -> Scanned {
    let mut cmd = Cli::command();
    cmd.build();
    let words = words();
    let mut sub: Option<&clap::Command> = None;
    let mut scanned = Scanned {
        options: Vec::new(),
        first_positional: None,
        positionals: Vec::new(),
    };
    let mut i = 1;
    while i < words.len() {
        let word = &words[i];
        let here = sub.unwrap_or(&cmd);
        if word == "--" {
            scanned.positionals.extend(words[i + 1..].iter().cloned());
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if takes_value(here, |a| a.get_long() == Some(name)) {
                let value = value.or_else(|| {
                    i += 1;
                    words.get(i).cloned()
                });
                if let Some(value) = value {
                    scanned.options.push((name.to_string(), value));
                }
            }
        } else if let Some(short) = word.strip_prefix('-').and_then(|s| s.chars().next()) {
            if word.len() == 2 && takes_value(here, |a| a.get_short() == Some(short)) {
                i += 1;
            }
        } else if sub.is_none() {
            sub = cmd.find_subcommand(word);
            scanned.first_positional = sub
                .and_then(|s| s.get_positionals().next())
                .map(|a| a.get_id().to_string());
        } else {
            scanned.positionals.push(word.clone());
        }
        i += 1;
    }
    scanned
}

fn takes_value(cmd: &clap::Command, which: impl Fn(&Arg) -> bool) -> bool {
    cmd.get_arguments()
        .find(|a| which(a))
        .is_some_and(|a| a.get_action().takes_values())
}

// ------------------------------------------------------------ the shells

/// How each shell asks and how it reads the answer. Not clap_complete's own
/// adapters: bash splits `web:v1` into three words at the colon, zsh's
/// `_describe` reads a colon as the start of a description, and all three
/// must keep quiet when the binary fails.
struct Adapter(Shell);

impl EnvCompleter for Adapter {
    fn name(&self) -> &'static str {
        match self.0 {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
        }
    }

    fn is(&self, name: &str) -> bool {
        name == self.name()
    }

    fn write_registration(
        &self,
        var: &str,
        _name: &str,
        bin: &str,
        completer: &str,
        buf: &mut dyn Write,
    ) -> std::io::Result<()> {
        let script = match self.0 {
            Shell::Bash => BASH_SCRIPT,
            Shell::Zsh => ZSH_SCRIPT,
            Shell::Fish => FISH_SCRIPT,
        };
        let script = script
            .replace("@VAR@", var)
            .replace("@BIN@", bin)
            .replace("@COMPLETER@", completer);
        buf.write_all(script.as_bytes())
    }

    fn write_complete(
        &self,
        cmd: &mut clap::Command,
        args: Vec<OsString>,
        current_dir: Option<&Path>,
        buf: &mut dyn Write,
    ) -> std::io::Result<()> {
        match self.0 {
            Shell::Bash => bash_complete(cmd, args, current_dir, buf),
            Shell::Zsh | Shell::Fish => {
                // The words up to the cursor, the last one being completed.
                let words: Vec<String> = args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                let Some(index) = words.len().checked_sub(1) else {
                    return Ok(());
                };
                let _ = WORDS.set(words[..index].to_vec());
                let candidates = clap_complete::engine::complete(cmd, args, index, current_dir)?;
                for c in values_first(candidates, &words[index]) {
                    // zsh's compadd and fish quote what they insert, but
                    // our answer is lines of text: a value that is not
                    // UTF-8 (it would name another file) or holds a tab,
                    // a newline or another control character is left out.
                    let Some(value) = c.get_value().to_str() else {
                        continue;
                    };
                    if has_control(value.as_bytes()) {
                        continue;
                    }
                    match c.get_help() {
                        Some(help) => {
                            let help = help.to_string();
                            let help = help.lines().next().unwrap_or_default();
                            writeln!(buf, "{value}\t{help}")?
                        }
                        None => writeln!(buf, "{value}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Options only when the word starts with `-` or nothing else fits: a TAB
/// after `activate ` should list releases, not fifteen flags.
fn values_first(candidates: Vec<CompletionCandidate>, current: &str) -> Vec<CompletionCandidate> {
    if current.starts_with('-') {
        return candidates;
    }
    let (options, values): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|c| c.get_value().to_string_lossy().starts_with('-'));
    if values.is_empty() {
        options
    } else {
        values
    }
}

/// Bash passes the line up to the cursor and its own current word. Bash
/// splits words at `:` and `=` too (COMP_WORDBREAKS), so the line is split
/// here the way the command will see it, and each candidate is cut down to
/// the part that replaces bash's word, quoted for where it goes.
fn bash_complete(
    cmd: &mut clap::Command,
    args: Vec<OsString>,
    current_dir: Option<&Path>,
    buf: &mut dyn Write,
) -> std::io::Result<()> {
    let line = args.first().map(|a| a.to_string_lossy().into_owned());
    let cur = args.get(1).map(|a| a.to_string_lossy().into_owned());
    let (Some(line), Some(cur)) = (line, cur) else {
        return Ok(());
    };
    // Bash replaces its word, which ends the line; anything else and we
    // cannot tell what our text would land next to.
    let Some(before) = line.strip_suffix(cur.as_str()) else {
        return Ok(());
    };
    let Line { words, .. } = split_line(&line);
    let index = words.len() - 1;
    let _ = WORDS.set(words[..index].to_vec());
    let current = words[index].clone();
    let argv = words.into_iter().map(OsString::from).collect();
    let candidates = clap_complete::engine::complete(cmd, argv, index, current_dir)?;
    let candidates = values_first(candidates, &current);
    // What of the word lies before bash's word and stays on the line (the
    // `web:` of `web:v1`, an opening quote), as the command will read it,
    // and the quote open where bash's word starts.
    let Line {
        words: kept_words,
        quote,
        ..
    } = split_line(before);
    let kept = kept_words.last().map_or("", String::as_str);
    for c in candidates {
        if let Some(text) = bash_replacement(c.get_value(), kept.as_bytes(), quote) {
            writeln!(buf, "{text}")?;
        }
    }
    Ok(())
}

/// The text that replaces bash's word so that the command receives
/// `value`, of which `kept` is already on the line; `None` when the value
/// cannot be offered (it does not extend what is typed, or holds control
/// characters, which no quoting shows the operator faithfully).
///
/// Readline inserts our text as it is: it quotes only filenames (`-o
/// filenames`, which would also make it stat candidates), and inside an
/// open quote it adds the closing quote. So every special character is
/// quoted here: after backslashes outside quotes, and inside quotes as a
/// whole quoted word that starts with the quote character, which makes
/// readline replace the opening quote the operator typed (it never
/// doubles it) rather than insert after it. Every prefix of such a text
/// (readline inserts the common prefix of several) is harmless too: it can
/// only leave a quote open or a backslash at the end, never an unquoted
/// `$`, backquote or `;`.
fn bash_replacement(value: &OsStr, kept: &[u8], quote: Option<char>) -> Option<String> {
    let rest = value.as_bytes().strip_prefix(kept)?;
    if has_control(value.as_bytes()) {
        return None;
    }
    let at_start = kept.is_empty();
    Some(match quote {
        None => bash_escape_bytes(rest, at_start),
        Some('\'') => {
            let body = quote_pieces(rest, |c| match c {
                Piece::Char('\'') => r"'\''".to_string(),
                Piece::Char(c) => c.to_string(),
                Piece::Byte(b) => format!(r"'$'\x{b:02x}''"),
            });
            close_unless_prefix(format!("'{body}"), rest, '\'')
        }
        Some(_) => {
            let body = quote_pieces(rest, |c| match c {
                // Special inside double quotes (`!`: history expansion in
                // an interactive shell): single-quoted between them.
                Piece::Char(c @ ('$' | '`' | '\\' | '"' | '!')) => format!("\"'{c}'\""),
                Piece::Char(c) => c.to_string(),
                Piece::Byte(b) => format!(r#""$'\x{b:02x}'""#),
            });
            close_unless_prefix(format!("\"{body}"), rest, '"')
        }
    })
}

/// A value ending in `/`, `:` or `=` is a prefix to go on typing: the
/// quote stays open (readline closes it and adds no space; the next TAB
/// goes on from there). Any other value is closed here, so readline adds
/// no quote of its own.
fn close_unless_prefix(mut text: String, rest: &[u8], quote: char) -> String {
    if !rest.ends_with(b"/") && !rest.ends_with(b":") && !rest.ends_with(b"=") {
        text.push(quote);
    }
    text
}

/// A character of a value, or one byte of it that is not UTF-8.
enum Piece {
    Char(char),
    Byte(u8),
}

/// `bytes` piece by piece, each turned into text by `quote`.
fn quote_pieces(bytes: &[u8], mut quote: impl FnMut(Piece) -> String) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            out += &quote(Piece::Char(c));
        }
        for &b in chunk.invalid() {
            out += &quote(Piece::Byte(b));
        }
    }
    out
}

/// Control characters (C0, DEL, C1) or a newline: a candidate holding one
/// is not offered. Bytes that are not UTF-8 are not control characters:
/// they are quoted as `$'\xNN'`.
fn has_control(bytes: &[u8]) -> bool {
    bytes.utf8_chunks().any(|chunk| {
        chunk.valid().chars().any(|c| {
            c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
    })
}

/// A shell line split into words as the command receives them (quotes
/// removed). A line ending in a blank ends with an empty word: the one
/// being started.
#[derive(Debug, PartialEq)]
struct Line {
    words: Vec<String>,
    /// Where the last word starts in the line.
    start: usize,
    /// The quote left open at the end of the line.
    quote: Option<char>,
}

fn split_line(line: &str) -> Line {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if let Some(w) = word.take() {
                words.push(w);
            }
            continue;
        }
        if word.is_none() {
            word = Some(String::new());
            start = i;
        }
        let w = word.as_mut().expect("set above");
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '\\') | (Some('"'), '\\') => {
                let escapable = quote.is_none()
                    || chars
                        .peek()
                        .is_some_and(|(_, n)| matches!(n, '"' | '\\' | '$' | '`'));
                match chars.peek() {
                    Some(&(_, n)) if escapable => {
                        w.push(n);
                        chars.next();
                    }
                    _ => w.push(c),
                }
            }
            _ => w.push(c),
        }
    }
    match word {
        Some(w) => words.push(w),
        None => {
            words.push(String::new());
            start = line.len();
        }
    }
    Line {
        words,
        start,
        quote,
    }
}

/// A backslash before each character the shell would read specially
/// outside quotes, and `$'\xNN'` for each byte that is not UTF-8. A `~`
/// that starts the word is escaped too (bash would expand `~name`), except
/// before `/`, where it means the home directory to clap's path completion
/// as it does to bash.
fn bash_escape_bytes(bytes: &[u8], at_start: bool) -> String {
    let mut first = at_start;
    let home = bytes.starts_with(b"~/");
    quote_pieces(bytes, |p| {
        let start = std::mem::take(&mut first);
        match p {
            Piece::Char('~') if start && !home => r"\~".to_string(),
            Piece::Char(c) if c.is_alphanumeric() || "._+~-/:=@%,^".contains(c) => c.to_string(),
            Piece::Char(c) => format!("\\{c}"),
            Piece::Byte(b) => format!(r"$'\x{b:02x}'"),
        }
    })
}

/// `mapfile` keeps candidates whole (no globbing, no splitting at blanks);
/// a lone candidate ending in `:` `=` or `/` is a prefix to go on typing, so
/// no space after it.
const BASH_SCRIPT: &str = r#"# bash completion for releasectl: candidates come from the binary itself,
# so app names and release ids are those on this machine.
_releasectl() {
    local IFS=$' \t\n'
    mapfile -t COMPREPLY < <(@VAR@=bash @COMPLETER@ -- "${COMP_LINE:0:COMP_POINT}" "$2" 2>/dev/null)
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[:=/] ]]; then
        compopt -o nospace 2>/dev/null
    fi
}
if [[ ${BASH_VERSINFO[0]} -gt 4 || ${BASH_VERSINFO[0]} -eq 4 && ${BASH_VERSINFO[1]} -ge 4 ]]; then
    complete -o nosort -F _releasectl @BIN@
else
    complete -F _releasectl @BIN@
fi
"#;

/// Autoloaded from $fpath (the packages install it as `_releasectl`)
/// the body runs at the first TAB: it defines the function and completes at
/// once. Sourced, it registers the function with `compdef`.
const ZSH_SCRIPT: &str = r#"#compdef @BIN@
# zsh completion for releasectl: candidates come from the binary itself,
# so app names and release ids are those on this machine.
_releasectl() {
    local -a lines spaced joined
    local line value desc entry
    lines=("${(@f)$(@VAR@=zsh @COMPLETER@ -- "${(@Q)words[1,CURRENT-1]}" "${(Q)PREFIX}" 2>/dev/null)}")
    for line in "${lines[@]}"; do
        [[ -n $line ]] || continue
        value=${line%%$'\t'*}
        desc=
        [[ $line == *$'\t'* ]] && desc=${line#*$'\t'}
        entry=${value//:/\\:}${desc:+:$desc}
        if [[ $value == *[:=/] ]]; then
            joined+=("$entry")
        else
            spaced+=("$entry")
        fi
    done
    local ret=1
    (( ${#spaced} )) && _describe -V releasectl spaced && ret=0
    (( ${#joined} )) && _describe -V releasectl joined -S '' && ret=0
    return ret
}
if [[ ${funcstack[1]} == _releasectl ]]; then
    _releasectl "$@"
else
    compdef _releasectl @BIN@
fi
"#;

const FISH_SCRIPT: &str = r#"# fish completion for releasectl: candidates come from the binary itself,
# so app names and release ids are those on this machine.
complete --command @BIN@ --erase
complete --command @BIN@ --keep-order --exclusive --arguments "(@VAR@=fish @COMPLETER@ -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token) 2>/dev/null)"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[&str], start: usize, quote: Option<char>) -> Line {
        Line {
            words: words.iter().map(|w| w.to_string()).collect(),
            start,
            quote,
        }
    }

    #[test]
    fn lines_split_as_the_shell_does() {
        assert_eq!(
            split_line("releasectl activate web:v"),
            line(&["releasectl", "activate", "web:v"], 20, None)
        );
        assert_eq!(
            split_line("releasectl --root 'my dir' "),
            line(&["releasectl", "--root", "my dir", ""], 27, None)
        );
        assert_eq!(
            split_line(r#"a b\ c "d\"e" 'f"#),
            line(&["a", "b c", "d\"e", "f"], 14, Some('\''))
        );
    }

    #[test]
    fn every_app_and_release_argument_has_a_completer() {
        let mut cmd = command();
        cmd.build();
        for (sub, id) in [
            ("activate", "release"),
            ("activate", "request"),
            ("activate", "expect_current"),
            ("rollback", "to"),
            ("rollback", "app"),
            ("mark-bad", "release"),
            ("stage", "app"),
            ("prune", "app"),
        ] {
            let sub = cmd.find_subcommand(sub).expect(sub);
            let arg = sub.get_arguments().find(|a| a.get_id() == id).expect(id);
            assert!(
                arg.get::<ArgValueCompleter>().is_some(),
                "{} {id} has no completer",
                sub.get_name()
            );
        }
    }

    /// What bash inserts for `value` after `kept`, in each quoting context.
    fn replace(value: &[u8], kept: &str, quote: Option<char>) -> Option<String> {
        bash_replacement(OsStr::from_bytes(value), kept.as_bytes(), quote)
    }

    #[test]
    fn bash_quotes_for_the_context() {
        assert_eq!(replace(b"web:v1.2+b~3", "web:", None).unwrap(), "v1.2+b~3");
        assert_eq!(replace(b"my dir/$x", "", None).unwrap(), r"my\ dir/\$x");
        assert_eq!(replace(b"~x", "", None).unwrap(), r"\~x");
        assert_eq!(replace(b"~/x", "", None).unwrap(), "~/x");
        assert_eq!(replace(b"a\xffb", "", None).unwrap(), r"a$'\xff'b");
        let attack = b"app'$(touch${IFS}PWNED)'.tar";
        assert_eq!(
            replace(attack, "", Some('\'')).unwrap(),
            r"'app'\''$(touch${IFS}PWNED)'\''.tar'"
        );
        assert_eq!(
            replace(attack, "", Some('"')).unwrap(),
            r#""app'"'$'"(touch"'$'"{IFS}PWNED)'.tar""#
        );
        assert_eq!(replace(b"dir/", "", Some('\'')).unwrap(), "'dir/");
        assert_eq!(replace(b"web:v1", "web:", Some('"')).unwrap(), "\"v1\"");
        // Control characters: not offered; a value that does not extend
        // what is typed: not offered.
        assert_eq!(replace(b"a\nb", "", None), None);
        assert_eq!(replace(b"a\x1b]0;x\x07", "", Some('\'')), None);
        assert_eq!(replace(b"web:v1", "api:", None), None);
    }
}
