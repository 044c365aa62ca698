//! I/O errors: a full disk, failures injected into single system calls, read-
//! only and permission errors.

use super::*;

// 13. A full disk

/// ROOT is a 1 MiB tmpfs filled to the last page: activate exits 1 before
/// the swap and changes nothing (`current` still v1, no pending.json, no
/// leftovers), and stage exits 1 too (a full disk is not bad input).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn disk_full_changes_nothing() {
    root_ready(&["mount", "umount"]);
    let s = Scene::new();
    let _mount = match Mount::tmpfs(&s.root(), "1m") {
        Ok(m) => m,
        Err(e) => missing(&format!("cannot mount a tmpfs: {e}")),
    };
    s.release("v1", 0, 0);
    s.release("v2", 0, 0);
    s.rctl().args(["activate", "v1"]).ok();
    fs::create_dir_all(s.src().join("tree")).unwrap();
    fs::write(s.src().join("tree/version"), "new\n").unwrap();
    let mut filler = fs::File::create(s.path("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while filler.write_all(&chunk).is_ok() {}
    while filler.write_all(&[0]).is_ok() {}
    drop(filler);
    let before = Tree::of(&s.root())
        .without(".releasectl/lock")
        .without("filler");
    let mut f = Findings::default();
    let exit = |f: &mut Findings, r: Result<Run, String>, code: i32| match r {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(code), || {
            format!("expected exit {code}: {}", brief(&r))
        }),
    };
    exit(&mut f, s.rctl().args(["activate", "v2"]).try_run(), 1);
    f.check(s.current().as_deref() == Some("releases/v1"), || {
        format!("current -> {:?} after a failed activation", s.current())
    });
    let after = Tree::of(&s.root())
        .without(".releasectl/lock")
        .without("filler");
    if before != after {
        let diff: Vec<&String> = after
            .0
            .iter()
            .filter(|(k, v)| before.0.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(before.0.keys().filter(|k| !after.0.contains_key(*k)))
            .collect();
        f.add(format!("activate on a full disk changed {diff:?}"));
    }
    let r = s
        .rctl()
        .arg("stage")
        .arg(s.src().join("tree"))
        .args(["--id", "v3"])
        .try_run();
    exit(&mut f, r, 1);
    let names: Vec<String> = fs::read_dir(s.path("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    f.check(names.len() == 2, || {
        format!("stage on a full disk left {names:?}")
    });
    f.done("disk full");
}

/// activate v1 -> v2 with one failure injected by strace (ENOSPC or EIO on
/// the Nth write, fsync, fdatasync, ftruncate, symlinkat or renameat), for N = 1, 2, ... until the run no longer reaches the Nth
/// call. After each run: exit 0 means v2 is current and committed (history's
/// last event `activated`, no pending.json); exit 1 or 4 means v1 is
/// current; `current` always resolves to a complete release.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn injected_io_failures_keep_the_invariant() {
    root_ready(&["strace"]);
    let s = Scene::on_tmpfs();
    s.release("v1", 0, 0);
    s.release("v2", 0, 0);
    s.rctl().args(["activate", "v1"]).ok();
    let trace = s.base().join("trace");
    let mut f = Findings::default();
    let mut runs = 0;
    for (call, err) in [
        ("write", "ENOSPC"),
        ("fsync", "ENOSPC"),
        ("fsync", "EIO"),
        ("fdatasync", "EIO"),
        ("ftruncate", "ENOSPC"),
        ("symlinkat", "ENOSPC"),
        ("renameat", "ENOSPC"),
        ("renameat2", "ENOSPC"),
    ] {
        for n in 1..=40 {
            let inject = format!("inject={call}:error={err}:when={n}");
            let tr = ps(&trace);
            let r = Call::new(&[
                "strace",
                "-f",
                "-o",
                &tr,
                "-e",
                &format!("trace={call}"),
                "-e",
                &inject,
            ])
            .arg("--root")
            .arg(s.root())
            .args(["activate", "v2"])
            .limit(SLOW)
            .try_run();
            runs += 1;
            let hit = fs::read_to_string(&trace)
                .unwrap_or_default()
                .contains("INJECTED");
            let what = format!("{call} #{n} fails with {err}");
            let cur = s.current();
            let complete = cur
                .as_deref()
                .and_then(|c| c.strip_prefix("releases/"))
                .is_some_and(|id| {
                    fs::read_to_string(s.path(&format!("releases/{id}/version")))
                        .is_ok_and(|v| v.trim_end() == id)
                });
            f.check(complete, || {
                format!("{what}: current -> {cur:?} is not a complete release")
            });
            let pending = s.path(".releasectl/pending.json").exists();
            match &r {
                Err(e) => f.add(format!("{what}: {e}")),
                Ok(run) => match run.code {
                    Some(0) => {
                        let last = s.history_tail();
                        f.check(cur.as_deref() == Some("releases/v2"), || {
                            format!("{what}: exit 0 but current -> {cur:?}")
                        });
                        f.check(!pending, || {
                            format!("{what}: exit 0 with pending.json left")
                        });
                        f.check(
                            last.as_ref()
                                .is_some_and(|l| l["event"] == "activated" && l["to"] == "v2"),
                            || format!("{what}: exit 0 but history's last entry is {last:?}"),
                        );
                    }
                    Some(1) | Some(11) => f.check(cur.as_deref() == Some("releases/v1"), || {
                        format!(
                            "{what}: exit {:?} but current -> {cur:?}: {}",
                            run.code,
                            brief(run)
                        )
                    }),
                    _ => f.add(format!("{what}: unexpected exit: {}", brief(run))),
                },
            }
            // Back to v1 with nothing pending, without injection.
            if let Err(e) = s.rctl().args(["activate", "v1"]).try_run().and_then(|r| {
                if r.code == Some(0) {
                    Ok(())
                } else {
                    Err(brief(&r))
                }
            }) {
                f.add(format!("{what}: resetting to v1 failed: {e}"));
                s.rctl().arg("recover").try_run().ok();
                s.rctl().args(["activate", "v1"]).try_run().ok();
            }
            if !hit {
                break;
            }
        }
    }
    eprintln!("fault injection: {runs} runs");
    f.check(runs > 20, || {
        format!("only {runs} injected runs: strace injection did not work")
    });
    f.done("injected I/O failures");
}

// 14. Read-only and permission errors

/// ROOT on a read-only bind mount: activate, rollback, prune and stage fail
/// with exit 1 (an operational error, not bad input), one line, `current`
/// unchanged. The same commands run by a user who may not write ROOT: exit 1;
/// so do reading a request file and writing a request it may not.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn read_only_and_permission_errors_exit_1() {
    attack_ready(&["mount", "umount"]);
    let s = Scene::new();
    for id in ["v1", "v2", "v3"] {
        s.release(id, 0, 0);
    }
    s.rctl().args(["activate", "v1"]).ok();
    s.rctl().args(["activate", "v2"]).ok();
    fs::create_dir_all(s.src().join("tree")).unwrap();
    fs::write(s.src().join("tree/version"), "new\n").unwrap();
    let commands: [Vec<String>; 4] = [
        vec!["activate".into(), "v3".into()],
        vec!["rollback".into()],
        vec!["prune".into(), "--keep".into(), "0".into()],
        vec![
            "stage".into(),
            ps(&s.src().join("tree")),
            "--id".into(),
            "v4".into(),
        ],
    ];
    let mut f = Findings::default();
    {
        let _ro = match Mount::read_only_bind(&s.root()) {
            Ok(m) => m,
            Err(e) => missing(&format!("cannot make a read-only bind mount: {e}")),
        };
        for args in &commands {
            let r = s.rctl().args(args).try_run();
            let mut sub = Findings::default();
            expect_refusal(&mut sub, &r, 1, &[]);
            for x in sub.0 {
                f.add(format!("read-only ROOT, {}: {x}", args.join(" ")));
            }
            f.check(s.current().as_deref() == Some("releases/v2"), || {
                format!(
                    "read-only ROOT, {}: current -> {:?}",
                    args.join(" "),
                    s.current()
                )
            });
        }
    }
    // The unprivileged user against root's ROOT (a copy of the binary, so
    // the checkout need not be reachable by uid 65534).
    let bin = s.base().join("releasectl");
    fs::copy(BIN, &bin).unwrap();
    let uid = format!("--reuid={ATTACKER}");
    let gid = format!("--regid={ATTACKER}");
    for args in &commands {
        let r = Call::exe(&["setpriv", &uid, &gid, "--clear-groups"], &bin)
            .arg("--root")
            .arg(s.root())
            .args(args)
            .try_run();
        let mut sub = Findings::default();
        expect_refusal(&mut sub, &r, 1, &[]);
        for x in sub.0 {
            f.add(format!("unprivileged, {}: {x}", args.join(" ")));
        }
    }
    // The request path: a request file this user may not read, and a
    // requests directory it may not write. The machine's problem, not bad
    // input: exit 1, naming the path.
    s.config("web", "root = \"{root}\"\n");
    let requests = s.base().join("requests");
    fs::create_dir(&requests).unwrap();
    fs::write(requests.join("web"), "v3\n").unwrap();
    fs::set_permissions(requests.join("web"), fs::Permissions::from_mode(0o600)).unwrap();
    let web = ps(&requests.join("web"));
    for (args, needle) in [
        (vec!["activate", "--request", "web"], web.as_str()),
        (vec!["request", "web:v3"], &*ps(&requests)),
    ] {
        let r = Call::exe(&["setpriv", &uid, &gid, "--clear-groups"], &bin)
            .arg("--config-dir")
            .arg(s.etc())
            .args(&args)
            .arg("--requests-dir")
            .arg(&requests)
            .try_run();
        let mut sub = Findings::default();
        expect_refusal(&mut sub, &r, 1, &[needle, "Permission denied"]);
        for x in sub.0 {
            f.add(format!("unprivileged, {}: {x}", args.join(" ")));
        }
    }
    f.check(s.current().as_deref() == Some("releases/v2"), || {
        format!("current -> {:?}", s.current())
    });
    f.done("read-only and permission errors");
}
