//! The state under `.releasectl/`, planted and crafted: FIFOs and symlinks
//! for state files, crafted pending.json and history.jsonl, a damaged history
//! read with bounded memory.

use super::*;

// 7. Planted state files

#[derive(Clone, Copy, Debug)]
enum Plant {
    Fifo,
    /// A symlink to an existing victim file.
    Symlink,
    /// A symlink to a victim path that does not exist yet.
    DanglingSymlink,
    /// A hardlink to a root-owned victim file (as with protected_hardlinks=0).
    Hardlink,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Must refuse: exit 1, one line naming the file, `current` unchanged.
    Refuse,
    /// Read-only use: exit 0, or a refusal as above.
    ZeroOrRefuse,
}

/// A command line and what it must do.
type Case<'a> = (&'a [&'a str], Expect);

/// v1, v2, v3 with v1 then v2 activated (history of two, current v2), then
/// handed to the attacker, who replaces `.releasectl/<file>` with `plant`.
fn planted(file: &str, plant: Plant) -> Scene {
    let s = Scene::on_tmpfs();
    for id in ["v1", "v2", "v3"] {
        s.release(id, 0, 0);
    }
    s.rctl().args(["activate", "v1"]).ok();
    s.rctl().args(["activate", "v2"]).ok();
    s.to_attacker();
    let at = s.path(".releasectl").join(file);
    let _ = fs::remove_file(&at);
    match plant {
        Plant::Fifo => {
            let st = Command::new("mkfifo").arg(&at).status().unwrap();
            assert!(st.success());
        }
        Plant::Symlink => symlink(s.victim().join("target"), &at).unwrap(),
        Plant::DanglingSymlink => symlink(s.victim().join("created-by-root"), &at).unwrap(),
        Plant::Hardlink => fs::hard_link(s.victim().join("hard"), &at).unwrap(),
    }
    if !matches!(plant, Plant::Hardlink) {
        std::os::unix::fs::lchown(&at, Some(ATTACKER), Some(ATTACKER)).unwrap();
    }
    s
}

/// FIFOs, symlinks (to a victim file, or to a victim path that does not
/// exist) and hardlinks (to a root-owned victim file) planted as `lock`,
/// `history.jsonl`, `pending.json` and `pending.json.tmp`. No command hangs
/// or changes the victim; commands that write the file refuse it (exit 1,
/// one line naming it, `current` unchanged); read-only ones exit 0 or refuse
/// the same way. A planted `pending.json.tmp` may instead be replaced.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn planted_state_files() {
    attack_ready(&["mkfifo"]);
    use Expect::*;
    let matrix: [(&str, &[Case]); 4] = [
        (
            "lock",
            &[
                (&["activate", "v3"], Refuse),
                (&["rollback"], Refuse),
                (&["recover"], Refuse),
                (&["status"], ZeroOrRefuse),
            ],
        ),
        (
            "history.jsonl",
            &[
                (&["activate", "v3"], Refuse),
                (&["rollback"], Refuse),
                (&["status"], ZeroOrRefuse),
                (&["list"], ZeroOrRefuse),
                (&["history"], ZeroOrRefuse),
            ],
        ),
        (
            "pending.json",
            &[
                (&["activate", "v3"], Refuse),
                (&["rollback"], Refuse),
                (&["recover"], Refuse),
                (&["status"], ZeroOrRefuse),
                (&["list"], ZeroOrRefuse),
            ],
        ),
        (
            "pending.json.tmp",
            &[
                (&["activate", "v3"], ZeroOrRefuse),
                (&["rollback"], ZeroOrRefuse),
            ],
        ),
    ];
    let mut f = Findings::default();
    for (file, commands) in matrix {
        for plant in [
            Plant::Fifo,
            Plant::Symlink,
            Plant::DanglingSymlink,
            Plant::Hardlink,
        ] {
            for (args, expect) in commands {
                let s = planted(file, plant);
                let before = s.outside_listing();
                let current = s.current();
                let what = format!("{file} as {plant:?}, {}", args.join(" "));
                let r = s.rctl().args(*args).limit(Duration::from_secs(3)).try_run();
                match &r {
                    Err(e) => f.add(format!("{what}: {e}")),
                    Ok(run) => {
                        let refused = run.code == Some(1);
                        if *expect == Refuse || run.code != Some(0) {
                            let mut sub = Findings::default();
                            expect_refusal(&mut sub, &r, 1, &[file]);
                            for x in sub.0 {
                                f.add(format!("{what}: {x}"));
                            }
                        }
                        if refused || *expect == Refuse {
                            f.check(s.current() == current, || {
                                format!(
                                    "{what}: current moved to {:?}: {}",
                                    s.current(),
                                    brief(run)
                                )
                            });
                        }
                    }
                }
                if let Some(d) = changed(&before, &s.outside_listing()) {
                    f.add(format!("{what}: outside ROOT changed:\n{d}"));
                }
            }
        }
    }
    f.done("planted state files");
}

// 8. Crafted pending.json and history.jsonl

/// A crafted `pending.json` (a `from` climbing out of releases/, ids with a
/// newline + `<0>` journal priority or an ESC sequence): `recover` and
/// `activate` exit 1 with one line naming pending.json, leave `current`
/// where it was, and print no raw ESC and no line starting with `<0>`.
/// A crafted `started` may be accepted, but never echoed raw either.
#[test]
fn crafted_pending_json() {
    let cases = [
        (
            json!({"from": "../../../../tmp/x", "to": "v2", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "v1", "to": "v2\n<0>evil", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "v1\n<0>evil", "to": "v2", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "v1", "to": "\u{1b}[2Jv2", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "\u{1b}]0;owned\u{7}v1", "to": "v2", "pid": 1, "started": "x"}),
            true,
        ),
        (
            json!({"from": "v1", "to": "v2", "pid": 1, "started": "x\n<0>evil\u{1b}[2J"}),
            false,
        ),
    ];
    let mut f = Findings::default();
    for (pending, must_refuse) in cases {
        for args in [&["recover"][..], &["activate", "v1"]] {
            let s = Scene::new();
            s.release("v1", 0, 0);
            s.release("v2", 0, 0);
            s.rctl().args(["activate", "v1"]).ok();
            s.rctl().args(["activate", "v2"]).ok();
            if is_root() {
                s.to_attacker();
            }
            fs::write(s.path(".releasectl/pending.json"), pending.to_string()).unwrap();
            let what = format!("pending {pending}, {}", args.join(" "));
            let r = s.rctl().args(args).try_run();
            let cur = s.current();
            f.check(
                cur.as_deref().is_some_and(|c| {
                    c.strip_prefix("releases/")
                        .is_some_and(|id| !id.contains('/') && !id.contains(".."))
                }),
                || format!("{what}: current -> {cur:?}, outside releases/"),
            );
            if let Ok(run) = &r {
                for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                    if let Some(bad) = injected_output(text) {
                        f.add(format!("{what}: {name} holds {bad}"));
                    }
                }
            }
            if must_refuse {
                let mut sub = Findings::default();
                expect_refusal(&mut sub, &r, 1, &["pending.json"]);
                for x in sub.0 {
                    f.add(format!("{what}: {x}"));
                }
                f.check(cur.as_deref() == Some("releases/v2"), || {
                    format!("{what}: current moved from releases/v2 to {cur:?}")
                });
            } else if let Err(e) = &r {
                f.add(format!("{what}: {e}"));
            }
        }
    }
    f.done("crafted pending.json");
}

/// History lines with control characters in `reason`, `to` and `from` (an
/// ESC sequence, a newline followed by `<0>`): `status` and `history` still
/// work, and their text output holds no raw ESC byte and no line starting
/// with `<0>`.
#[test]
fn crafted_history_lines() {
    let s = Scene::new();
    s.release("v1", 0, 0);
    s.release("v2", 0, 0);
    s.rctl().args(["activate", "v1"]).ok();
    s.rctl().args(["activate", "v2"]).ok();
    if is_root() {
        s.to_attacker();
    }
    let lines = [
        json!({"time": "2026-01-01T00:00:00Z", "event": "activated", "from": "v1", "to": "v2",
               "reason": "\u{1b}[2J\n<0>evil reason", "pid": 1}),
        json!({"time": "2026-01-01T00:00:01Z", "event": "rolled_back", "from": "v2\n<0>x",
               "to": "v1\u{1b}[2J", "reason": "ok", "pid": 1}),
        json!({"time": "2026-01-01T00:00:02Z\n<0>t", "event": "activated", "from": "v1",
               "to": "v2", "reason": "\u{1b}]0;title\u{7}\n<0>evil last", "pid": 1}),
    ];
    let mut h = fs::OpenOptions::new()
        .append(true)
        .open(s.path(".releasectl/history.jsonl"))
        .unwrap();
    for l in &lines {
        writeln!(h, "{l}").unwrap();
    }
    drop(h);
    let mut f = Findings::default();
    for args in [&["status"][..], &["history"], &["list"]] {
        match s.rctl().args(args).try_run() {
            Err(e) => f.add(e),
            Ok(r) => {
                f.check(r.code == Some(0), || {
                    format!("{args:?} failed: {}", brief(&r))
                });
                for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
                    if let Some(bad) = injected_output(text) {
                        f.add(format!("{args:?}: {name} holds {bad}: {}", brief(&r)));
                    }
                }
            }
        }
    }
    f.done("crafted history lines");
}

// 9. Damaged history, bounded memory

/// history.jsonl with a non-UTF-8 line, a 1 MiB line of garbage and a 3 GiB
/// sparse tail (no newline), and an interrupted activation in pending.json.
/// Under `prlimit --as=512MiB` (reading the file into memory would fail):
/// status, list and prune --dry-run work, recover restores and records it,
/// rollback and the activation of a new release work and are recorded.
#[test]
fn damaged_history_bounded_memory() {
    tools_ready(&["prlimit"]);
    // tmpfs reads holes without filling the page cache (ext4 takes seconds).
    let s = Scene::on_tmpfs();
    for id in ["v1", "v2", "v3", "v4"] {
        s.release(id, 0, 0);
    }
    s.rctl().args(["activate", "v1"]).ok();
    s.rctl().args(["activate", "v2"]).ok();
    let hist = s.path(".releasectl/history.jsonl");
    let mut h = fs::OpenOptions::new().append(true).open(&hist).unwrap();
    h.write_all(b"{\"time\": \"\xff\xfe not UTF-8\"}\n")
        .unwrap();
    h.write_all(&vec![b'x'; 1 << 20]).unwrap();
    h.write_all(b"\n").unwrap();
    drop(h);
    let f3 = fs::OpenOptions::new().write(true).open(&hist).unwrap();
    f3.set_len(3 << 30).unwrap();
    drop(f3);
    // Interrupted v2 -> v3 after its swap.
    s.set_current("v3");
    fs::write(
        s.path(".releasectl/pending.json"),
        json!({"from": "v2", "to": "v3", "pid": 999999999u32, "started": "2026-01-01T00:00:00Z",
               "history_offset": 0})
        .to_string(),
    )
    .unwrap();
    if is_root() {
        s.to_attacker();
    }
    let limited = |args: &[&str]| {
        Call::new(&["prlimit", "--as=536870912", "--"])
            .arg("--root")
            .arg(s.root())
            .args(args)
            .limit(SLOW)
            .try_run()
    };
    let mut f = Findings::default();
    let ok = |f: &mut Findings, args: &[&str]| -> bool {
        match limited(args) {
            Err(e) => {
                f.add(e);
                false
            }
            Ok(r) if r.code == Some(0) => true,
            Ok(r) => {
                f.add(format!("expected exit 0: {}", brief(&r)));
                false
            }
        }
    };
    // The interrupted activation: status reports it (exit 13), within the
    // same memory bound.
    match limited(&["status"]) {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(13), || {
            format!("expected exit 13 (interrupted): {}", brief(&r))
        }),
    }
    ok(&mut f, &["list"]);
    ok(&mut f, &["prune", "--dry-run"]);
    if ok(&mut f, &["recover"]) {
        f.check(s.current().as_deref() == Some("releases/v2"), || {
            format!("recover left current -> {:?}", s.current())
        });
        f.check(!s.path(".releasectl/pending.json").exists(), || {
            "recover left pending.json".into()
        });
        let last = s.history_tail();
        f.check(
            last.as_ref().is_some_and(|l| l["event"] == "recovered"),
            || format!("the recovery is not the history's last readable line: {last:?}"),
        );
    }
    if ok(&mut f, &["rollback"]) {
        f.check(s.current().as_deref() == Some("releases/v1"), || {
            format!("rollback left current -> {:?}", s.current())
        });
    }
    if ok(&mut f, &["activate", "v4"]) {
        f.check(s.current().as_deref() == Some("releases/v4"), || {
            format!("activate left current -> {:?}", s.current())
        });
        let last = s.history_tail();
        f.check(
            last.as_ref()
                .is_some_and(|l| l["event"] == "activated" && l["to"] == "v4"),
            || format!("the activation of v4 is not the history's last readable line: {last:?}"),
        );
    }
    ok(&mut f, &["status"]);
    f.done("damaged history");
}
