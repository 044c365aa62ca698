//! Shell completion, driven through the scripts `releasectl completions
//! SHELL` prints, in the real shells: bash calls the completion function
//! with the variables bash sets (COMP_LINE, COMP_POINT and the current word,
//! split at `:` and `=` as bash's COMP_WORDBREAKS does), fish runs its own
//! completion machinery (`complete --do-complete`), zsh calls the function
//! with `words`, `CURRENT` and `PREFIX` and a `_describe` that records what
//! it is given. A missing zsh or fish fails the test, naming it.

use crate::common::{lock_path, require_tool, Dir, BIN};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// PATH with the binary under test first: the scripts run `releasectl`.
fn path() -> String {
    let dir = Path::new(BIN).parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

fn shell(program: &str, args: &[&str], line: &str) -> Output {
    let out = Command::new(program)
        .args(args)
        .env("PATH", path())
        .env("LINE", line)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{program} completing {line:?}: {out:?}"
    );
    out
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Bash's current word: what follows the last blank or COMP_WORDBREAKS
/// character (for these lines, `:` and `=`).
fn bash_word(line: &str) -> &str {
    let start = line
        .rfind(|c: char| c.is_whitespace() || "\"'><=;|&(:".contains(c))
        .map_or(0, |i| i + 1);
    &line[start..]
}

/// COMPREPLY for `line`, the cursor at its end.
fn bash(line: &str) -> Vec<String> {
    const SCRIPT: &str = r#"
        source <(releasectl completions bash)
        complete -p releasectl | grep -q -- '-F _releasectl' || exit 3
        COMP_LINE=$LINE
        COMP_POINT=${#LINE}
        read -ra COMP_WORDS <<<"$LINE"
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        _releasectl releasectl "$WORD" ""
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .args(["-c", SCRIPT])
        .env("PATH", path())
        .env("LINE", line)
        .env("WORD", bash_word(line))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "bash completing {line:?}: {out:?}"
    );
    lines(&out)
}

/// What bash should show for the full candidates `want`: the part after
/// the word break, which is all bash replaces.
fn bash_wants(line: &str, want: &[&str]) -> Vec<String> {
    let token = line.rsplit(' ').next().unwrap();
    let kept = &token[..token.len() - bash_word(line).len()];
    want.iter()
        .map(|w| w.strip_prefix(kept).unwrap_or(w).to_string())
        .collect()
}

/// fish's candidates (values only) for `line`.
fn fish(line: &str) -> Vec<String> {
    let out = shell(
        "fish",
        &[
            "--no-config",
            "-c",
            "releasectl completions fish | source; complete --do-complete \"$LINE\"",
        ],
        line,
    );
    lines(&out)
        .into_iter()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

/// zsh's candidates for `line`, each with the group it went to: "joined"
/// ones get no space after them (`-S ''`).
fn zsh(line: &str) -> Vec<(String, &'static str)> {
    const SCRIPT: &str = r#"
        compdef() { }
        _describe() {
            local group=spaced
            [[ $* == *"-S "* ]] && group=joined
            local entry
            for entry in "${(@P)3}"; do print -r -- "$group $entry"; done
        }
        source <(releasectl completions zsh)
        words=(${(z)LINE})
        [[ $LINE == *' ' ]] && words+=('')
        CURRENT=${#words}
        PREFIX=${words[CURRENT]}
        _releasectl
        return 0
    "#;
    let out = shell("zsh", &["-f", "-c", SCRIPT], line);
    lines(&out)
        .into_iter()
        .map(|l| {
            let (group, entry) = l.split_once(' ').unwrap();
            // `value:description`, a colon in the value escaped as `\:`.
            let mut value = String::new();
            let mut chars = entry.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    ':' => break,
                    _ => value.push(c),
                }
            }
            (
                value,
                if group == "joined" {
                    "joined"
                } else {
                    "spaced"
                },
            )
        })
        .collect()
}

/// Two apps: web (v1, v2, v10 staged in that order, v2 current) and api.
fn two_apps() -> Dir {
    let d = Dir::new();
    d.releases(&["v1", "v2", "v10"]);
    std::os::unix::fs::symlink("releases/v2", d.path("current")).unwrap();
    std::fs::create_dir_all(d.outside().join("releases/a1")).unwrap();
    d.config("web", "root = \"{root}\"\n");
    d.config("api", "root = \"{base}/outside\"\n");
    d
}

/// Each case: the line typed so far, the candidates every shell offers.
fn cases(d: &Dir) -> Vec<(String, Vec<&'static str>)> {
    let etc = d.etc().display().to_string();
    let root = d.root().display().to_string();
    let c = |s: &str| format!("releasectl --config-dir {etc} {s}");
    let r = |s: &str| format!("releasectl --root {root} {s}");
    vec![
        (c("activate "), vec!["api:", "web:"]),
        (c("activate web:"), vec!["web:v10", "web:v2", "web:v1"]),
        (c("activate web:v1"), vec!["web:v10", "web:v1"]),
        (c("activate api:"), vec!["api:a1"]),
        (c("activate nosuch:"), vec![]),
        (c("activate web:v1 --expect-current "), vec!["v2"]),
        (c("mark-bad web:v"), vec!["web:v10", "web:v2", "web:v1"]),
        (c("rollback "), vec!["api", "web"]),
        (c("rollback web --to "), vec!["v10", "v1"]),
        (c("rollback --to v1 w"), vec!["web"]),
        (c("stage --app "), vec!["api", "web"]),
        (c("history a"), vec!["api"]),
        (c("st"), vec!["stage", "status"]),
        (r("activate "), vec!["v10", "v2", "v1"]),
        (r("rollback --to "), vec!["v10", "v1"]),
        (
            format!("releasectl --root={root} mark-good v1"),
            vec!["v10", "v1"],
        ),
    ]
}

#[test]
fn bash_completes_apps_and_release_ids() {
    let d = two_apps();
    for (line, want) in cases(&d) {
        assert_eq!(bash(&line), bash_wants(&line, &want), "bash: {line}");
    }
    // Subcommands, hidden ones left out; options once a `-` is typed.
    let subs = bash("releasectl ");
    for sub in ["activate", "rollback", "status"] {
        assert!(subs.contains(&sub.to_string()), "{subs:?}");
    }
    assert!(!subs
        .iter()
        .any(|s| s == "completions" || s == "man" || s.starts_with('-')));
    let opts = bash("releasectl prune --");
    assert!(opts.contains(&"--keep".to_string()), "{opts:?}");
}

/// Blanks and other specials in a candidate come back escaped for bash,
/// and bash's own word after `=` is what is replaced.
#[test]
fn bash_paths_are_escaped() {
    let d = Dir::new();
    std::fs::create_dir(d.base().join("my root")).unwrap();
    let base = d.base().display().to_string();
    assert_eq!(
        bash(&format!("releasectl --root {base}/my")),
        [format!("{base}/my\\ root/")]
    );
    assert_eq!(
        bash(&format!("releasectl --root={base}/my")),
        [format!("{base}/my\\ root/")]
    );
}

#[test]
#[ignore = "needs fish (installed by .ci/run; run with --include-ignored)"]
fn fish_completes_apps_and_release_ids() {
    require_tool("fish");
    let d = two_apps();
    for (line, want) in cases(&d) {
        assert_eq!(fish(&line), want, "fish: {line}");
    }
}

#[test]
#[ignore = "needs zsh (installed by .ci/run; run with --include-ignored)"]
fn zsh_completes_apps_and_release_ids() {
    require_tool("zsh");
    let d = two_apps();
    for (line, want) in cases(&d) {
        let got = zsh(&line);
        let values: Vec<&str> = got.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(values, want, "zsh: {line}");
        // `web:` is a prefix to go on typing: no space after it.
        for (value, group) in &got {
            let joined = value.ends_with(':');
            assert_eq!(
                *group == "joined",
                joined,
                "zsh: {line}: {value} in {group}"
            );
        }
    }
}

/// A broken or missing config, an unreadable root: no candidates, no noise.
#[test]
fn errors_give_no_candidates_and_say_nothing() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.config("web", "root = [not toml\n");
    let etc = d.etc().display().to_string();
    for line in [
        format!("releasectl --config-dir {etc} activate web:"),
        format!("releasectl --config-dir {etc} rollback web --to "),
        format!("releasectl --config-dir {etc}/missing rollback w"),
        format!("releasectl --root {etc}/missing activate v"),
    ] {
        assert_eq!(bash(&line), Vec::<String>::new(), "{line}");
    }
}

/// With one app configured, `activate <TAB>` offers its releases bare as
/// well as `web:`, since the app may be left out.
#[test]
fn a_single_app_may_be_left_out() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config("web", "root = \"{root}\"\n");
    let line = format!("releasectl --config-dir {} activate ", d.etc().display());
    assert_eq!(bash(&line), ["web:", "v2", "v1"]);
}

/// Completing reads only: it does not wait for a held lock, and leaves the
/// tree as it found it (no `.releasectl/` created, nothing written).
#[test]
fn completion_never_takes_the_lock_nor_writes() {
    require_tool("flock");
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    let root = d.root().display().to_string();
    let line = format!("releasectl --root {root} rollback --to ");
    let before = d.tree();
    assert_eq!(bash(&line), ["v2", "v1"]);
    d.tree().assert_same(&before, "completion in a fresh root");
    assert!(!d.path(".releasectl").exists());

    d.cmd().args(["activate", "v2"]).ok();
    let lock = lock_path(&d.root());
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let held = || {
        !Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    let start = Instant::now();
    while !held() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "flock never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = d.tree();
    let start = Instant::now();
    let got = bash(&line);
    let took = start.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(got, ["v1"]);
    assert!(took < Duration::from_secs(5), "completion took {took:?}");
    d.tree()
        .assert_same(&before, "completion while the lock is held");
}

// ------------------------------------------- what bash really inserts

/// A deploy user's file name that would run a command if inserted raw.
const PWNING_NAMES: &[&[u8]] = &[
    b"app'$(touch${IFS}PWNED)'.tar",
    b"app\"$(touch PWNED)\".tar",
    b"app`touch PWNED`.tar",
    b"app $(touch PWNED) x.tar",
    b"app$(touch${IFS}PWNED).tar",
    b"app;touch PWNED;.tar",
    b"app!!.tar",
    b"app\xff$(touch PWNED)\xfe.tar",
];

/// Names no quoting shows faithfully: never offered.
const UNOFFERED_NAMES: &[&[u8]] = &[b"app\n$(touch PWNED).tar", b"app\x1b]0;pwned\x07\r.tar"];

/// The quoting context the cursor is in when TAB is pressed.
const CONTEXTS: &[&str] = &["", "'", "\""];

/// What one interactive bash did: the line after TAB (as readline holds
/// it) and, when the line was run, the arguments the command received.
struct Typed {
    line: Vec<u8>,
    ran: Ran,
}

enum Ran {
    /// TAB inserted nothing (the line was then dropped).
    NotCompleted,
    /// Enter did not run the completed line.
    Not,
    /// The command ran with these arguments.
    With(Vec<Vec<u8>>),
}

/// Root types `releasectl stage --app web QUOTEapp`, TAB, then Enter into
/// a real interactive bash on a terminal (`script` gives it one), in `cwd`.
/// `releasectl` on that PATH is the real binary for completion requests
/// and otherwise records its arguments. A key bound with `bind -x`
/// records readline's buffer after the TAB; Enter is pressed only if the
/// TAB completed the word (else the line is dropped with Ctrl-U).
fn type_tab_enter(base: &Path, cwd: &Path, quote: &str) -> Typed {
    let bin = base.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("releasectl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -n \"$RELEASECTL_COMPLETE\" ] && exec {BIN} \"$@\"\n\
             for a; do printf '%s\\0' \"$a\"; done > \"$ARGV_FILE.tmp\"\n\
             mv \"$ARGV_FILE.tmp\" \"$ARGV_FILE\"\n"
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&wrapper)
        .status()
        .unwrap();
    let rc = base.join("bashrc");
    std::fs::write(
        &rc,
        format!("source <({BIN} completions bash)\n")
            + "bind -x '\"\\C-t\": printf %s \"$READLINE_LINE\" > \"$LINE_FILE.tmp\"; mv \"$LINE_FILE.tmp\" \"$LINE_FILE\"'\n\
         PS1='READY> '\n",
    )
    .unwrap();
    let (line_file, argv_file) = (base.join("line"), base.join("argv"));
    let _ = std::fs::remove_file(&line_file);
    let _ = std::fs::remove_file(&argv_file);
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("bash --noprofile --rcfile {} -i", rc.display()))
        .arg("/dev/null")
        .current_dir(cwd)
        .env("PATH", format!("{}:{}", bin.display(), path()))
        .env("LINE_FILE", &line_file)
        .env("ARGV_FILE", &argv_file)
        .env("INPUTRC", "/dev/null")
        .env("HISTFILE", "/dev/null")
        .env("TERM", "dumb")
        .env_remove("LANG")
        .env_remove("LC_ALL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running script");
    let mut out = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut keys = child.stdin.take().unwrap();
    let mut press = |k: &[u8]| {
        std::io::Write::write_all(&mut keys, k).unwrap();
        std::io::Write::flush(&mut keys).unwrap();
    };
    let within = Duration::from_secs(20);
    let start = Instant::now();
    while !seen.lock().unwrap().windows(7).any(|w| w == b"READY> ") {
        assert!(start.elapsed() < within, "bash never prompted");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Typed ahead: readline reads the keys one after the other, and the
    // TAB's completion runs before the next key is read.
    press(format!("releasectl stage --app web {quote}app\t\x14").as_bytes());
    assert!(
        crate::common::wait_for(&line_file, within),
        "no line after TAB"
    );
    let line = std::fs::read(&line_file).unwrap();
    let typed = format!("releasectl stage --app web {quote}app").into_bytes();
    let ran = if line == typed {
        press(b"\x15");
        Ran::NotCompleted
    } else {
        press(b"\n");
        if crate::common::wait_for(&argv_file, Duration::from_secs(5)) {
            let raw = std::fs::read(&argv_file).unwrap();
            Ran::With(
                raw.split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect(),
            )
        } else {
            // Left in a quote, or refused (history expansion): Ctrl-C
            // drops whatever bash still waits for.
            press(b"\x03");
            Ran::Not
        }
    };
    press(b"exit\n");
    drop(keys);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > within {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
    let _ = reader.join();
    Typed { line, ran }
}

/// A deploy user (uid 65534) names a file in its own directory so that
/// the completed word would run a command; root completes it with TAB and
/// runs the line. Over every name and quoting context: no command runs,
/// and the completed word names the real file. Names with control
/// characters or a newline are not offered at all.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn bash_inserts_hostile_file_names_quoted() {
    use crate::common::require_root;
    use std::os::unix::ffi::OsStrExt;
    require_root("root completes, uid 65534 names the files");
    require_tool("setpriv");
    require_tool("script");
    let d = Dir::new();
    Command::new("chmod")
        .arg("755")
        .arg(d.base())
        .status()
        .unwrap();
    let (mut rounds, mut pwned, mut wrong, mut offered_bad) =
        (0, Vec::new(), Vec::new(), Vec::new());
    let all = PWNING_NAMES.iter().map(|n| (n, true));
    let all = all.chain(UNOFFERED_NAMES.iter().map(|n| (n, false)));
    for (i, (name, offer)) in all.enumerate() {
        for (j, quote) in CONTEXTS.iter().enumerate() {
            let home = d.base().join(format!("deploy-{i}-{j}"));
            std::fs::create_dir(&home).unwrap();
            Command::new("chown")
                .arg("65534:65534")
                .arg(&home)
                .status()
                .unwrap();
            let name = std::ffi::OsStr::from_bytes(name);
            let made = Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "touch",
                    "--",
                ])
                .arg(name)
                .current_dir(&home)
                .status()
                .unwrap();
            assert!(made.success(), "uid 65534 could not create {name:?}");
            let typed = type_tab_enter(d.base(), &home, quote);
            rounds += 1;
            let shown = format!(
                "{quote}app<TAB> for {name:?}: line {:?}",
                String::from_utf8_lossy(&typed.line)
            );
            if home.join("PWNED").exists() {
                pwned.push(shown.clone());
            }
            let want: Vec<Vec<u8>> = ["stage", "--app", "web"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .chain([name.as_bytes().to_vec()])
                .collect();
            match (&typed.ran, offer) {
                (Ran::With(argv), true) if *argv == want => {}
                (Ran::NotCompleted, false) => {}
                (_, false) => offered_bad.push(shown),
                (Ran::With(argv), true) => {
                    let argv: Vec<_> = argv.iter().map(|a| String::from_utf8_lossy(a)).collect();
                    wrong.push(format!("{shown}: ran with {argv:?}"))
                }
                (Ran::Not, true) => wrong.push(format!("{shown}: did not run")),
                (Ran::NotCompleted, true) => wrong.push(format!("{shown}: not completed")),
            }
        }
    }
    assert!(
        pwned.is_empty() && wrong.is_empty() && offered_bad.is_empty(),
        "{rounds} rounds: command ran in {}: {pwned:#?}\nwrong or no word in {}: {wrong:#?}\n\
         control characters offered in {}: {offered_bad:#?}",
        pwned.len(),
        wrong.len(),
        offered_bad.len()
    );
}
