//! Shared paths: `shared/` is the deploy user's.

use super::*;

// 17. Shared paths: shared/ is the deploy user's

/// A Laravel-like source in the scene's `src/app`.
fn shared_source(s: &Scene) -> PathBuf {
    let app = s.src().join("app");
    for d in ["storage/logs", "public", "log", "cache"] {
        fs::create_dir_all(app.join(d)).unwrap();
    }
    fs::write(app.join("version"), "staged\n").unwrap();
    fs::write(app.join(".env"), "APP_KEY=release\n").unwrap();
    fs::write(app.join("storage/logs/app.log"), "release log\n").unwrap();
    fs::write(app.join("log/x"), "x\n").unwrap();
    fs::write(app.join("public/index.php"), "<?php\n").unwrap();
    app
}

/// The attacker fills `shared/` before root deploys: `.env` a hard link to
/// a root-owned victim file (as with fs.protected_hardlinks=0), `storage`
/// a FIFO, `log` and `cache` symlinks to victim directories, and (second
/// part) `public` a symlink to the victim when the shared path is
/// `public/uploads`. Root only links to what exists (never opening,
/// writing or deleting through it, never blocking on the FIFO) and refuses
/// the symlink on the way (exit 2); nothing outside ROOT changes.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn planted_shared_entries() {
    root_ready(&["mkfifo"]);
    let s = Scene::new();
    s.release("v0", 0, 0);
    let src = shared_source(&s);
    let shared = s.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::hard_link(s.victim().join("hard"), shared.join(".env")).unwrap();
    let made = Command::new("mkfifo")
        .arg(shared.join("storage"))
        .status()
        .unwrap();
    assert!(made.success());
    symlink(s.victim(), shared.join("log")).unwrap();
    symlink(s.victim().join("sub"), shared.join("cache")).unwrap();
    s.to_attacker();
    let hard = fs::read(s.victim().join("hard")).unwrap();
    let before = s.outside_listing();
    let mut f = Findings::default();

    let r = s
        .rctl()
        .args(["deploy", &ps(&src), "--id", "r1", "--shared-file", ".env"])
        .args([
            "--shared-dir",
            "storage",
            "--shared-dir",
            "log",
            "--shared-dir",
            "cache",
        ])
        .try_run();
    match &r {
        Err(e) => f.add(e.clone()),
        Ok(r) => f.check(r.code == Some(0), || {
            format!("deploy over planted shared/: {}", brief(r))
        }),
    }
    for (name, target) in [
        (".env", "../../shared/.env"),
        ("storage", "../../shared/storage"),
        ("log", "../../shared/log"),
        ("cache", "../../shared/cache"),
    ] {
        let got = fs::read_link(s.path("releases/r1").join(name)).ok();
        f.check(got.as_deref() == Some(Path::new(target)), || {
            format!("releases/r1/{name} is {got:?}, not the link {target}")
        });
    }
    f.check(fs::read(s.victim().join("hard")).unwrap() == hard, || {
        "the hard-linked victim file was written".into()
    });
    // `verify` reads the release, never what its links point at.
    if let Ok(r) = s.rctl().args(["verify", "r1"]).try_run() {
        f.check(r.code == Some(0), || format!("verify: {}", brief(&r)));
    }

    // public -> VICTIM with shared path public/uploads.
    symlink(s.victim(), shared.join("public")).unwrap();
    chown_tree(&shared);
    let r = s
        .rctl()
        .args(["deploy", &ps(&src), "--shared-dir", "public/uploads"])
        .try_run();
    expect_refusal(&mut f, &r, 2, &["public", "symlink"]);
    if let Some(d) = changed(&before, &s.outside_listing()) {
        f.add(format!("planted shared/ changed things outside ROOT:\n{d}"));
    }
    f.done("planted shared entries");
}

/// While root stages with shared paths to seed (`storage`, `.env`,
/// `public/uploads`), the attacker exchanges `shared` itself or
/// `shared/public` with a symlink to the victim (which holds directories
/// of the same names) in a loop, or, every third round, only watches for
/// a `.seed-*` name in `shared/` to swap, so that seeding goes through.
/// Every round: exit 0, 1 or 2 (never a hang), nothing outside ROOT
/// changed, and some rounds seed. (`stage_raced_by_exchanges` races the
/// temp tree itself.)
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn shared_seeding_raced_by_exchanges() {
    attack_ready(&[]);
    let s = Scene::on_tmpfs();
    let src = shared_source(&s);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut codes = BTreeMap::<i32, usize>::new();
    let mut rounds = Rounds::new(6, 16, Duration::from_millis(2500));
    while let Some(round) = rounds.next() {
        s.reset_root();
        s.release("v0", 0, 0);
        fs::create_dir_all(s.path("shared/public")).unwrap();
        s.to_attacker();
        s.reset_victim(&["storage", "public", "uploads"]);
        fs::create_dir_all(s.victim().join("public/uploads")).unwrap();
        let before = s.outside_listing();
        let (root, rel, shared) = (s.root(), s.path("releases"), s.path("shared"));
        let pairs = match round % 3 {
            0 => json!([[ps(&shared), ps(&root.join(".evil"))]]),
            1 => json!([[ps(&shared.join("public")), ps(&shared.join(".evil"))]]),
            // Only the watches: the seeding itself goes through.
            _ => json!([]),
        };
        let spec = json!({
            "links": [[ps(&root.join(".evil")), ps(&s.victim())],
                      [ps(&shared.join(".evil")), ps(&s.victim())],
                      [ps(&rel.join(".evil")), ps(&s.victim())]],
            "pairs": pairs,
            "watch": [{"dir": ps(&shared), "prefix": ".seed-", "link": ".evil"}],
        });
        let mut att = Attacker::start(&s, spec);
        let r = s
            .rctl()
            .args(["deploy", &ps(&src), "--id", &format!("s{round}")])
            .args(["--shared-dir", "storage", "--shared-dir", "public/uploads"])
            .args(["--shared-file", ".env"])
            .limit(SLOW)
            .try_run();
        stats.add(&att.stop());
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => {
                *codes.entry(r.code.unwrap_or(-1)).or_default() += 1;
                f.check(matches!(r.code, Some(0..=2)), || {
                    format!("round {round}: unexpected exit: {}", brief(r))
                })
            }
        }
        if let Some(d) = changed(&before, &s.outside_listing()) {
            f.add(format!("round {round}: outside ROOT changed:\n{d}"));
        }
    }
    eprintln!("shared race: exits {codes:?}; racer {stats:?}");
    f.check(codes.get(&0).is_some_and(|n| *n > 0), || {
        format!("no round seeded shared/ ({codes:?})")
    });
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("shared seeding raced");
}
