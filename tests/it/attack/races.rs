//! Races: the attacker exchanges, in a loop, what prune, stage and the hooks
//! are working on (the release trees, the source tree, the hook's working
//! directory).

use super::*;

// 3. prune, raced

/// While root prunes twelve releases of many subdirectories, the attacker
/// flips `releases` itself with a symlink to the victim (even rounds), or
/// swaps the `.prune-*` tree being deleted, and directories inside it, with
/// symlinks to the victim (odd rounds). The victim, which holds trees of the
/// same names, keeps every file in every round; prune never hangs.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn prune_raced_by_exchanges() {
    attack_ready(&[]);
    let ids: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
    let idrefs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let inner: Vec<String> = (0..6).map(|i| format!("d{i}")).collect();
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut rounds = Rounds::new(4, 16, Duration::from_secs(4));
    let mut damaged = 0;
    while let Some(round) = rounds.next() {
        let s = Scene::on_tmpfs();
        s.fill_victim(&idrefs);
        for id in &ids {
            let d = s.release(id, inner.len(), 4);
            symlink(s.victim(), d.join("zz")).unwrap();
        }
        s.to_attacker();
        let before = s.victim_listing();
        let (root, rel) = (s.root(), s.path("releases"));
        let spec = if round % 2 == 0 {
            json!({"links": [[ps(&root.join(".evil")), ps(&s.victim())]],
                   "pairs": [[ps(&rel), ps(&root.join(".evil"))]]})
        } else {
            json!({"links": [[ps(&rel.join(".evil")), ps(&s.victim())]],
                   "watch": [{"dir": ps(&rel), "prefix": ".prune-", "link": ".evil"}],
                   "inner": [{"dir": ps(&rel), "prefix": ".prune-", "names": inner, "link": "zz"}]})
        };
        let mut att = Attacker::start(&s, spec);
        let r = s
            .rctl()
            .args(["prune", "--keep", "2"])
            .limit(SLOW)
            .try_run();
        stats.add(&att.stop());
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => f.check(matches!(r.code, Some(0..=2)), || {
                format!("round {round}: unexpected exit: {}", brief(r))
            }),
        }
        if let Some(d) = changed(&before, &s.victim_listing()) {
            damaged += 1;
            f.add(format!("round {round}: the victim changed:\n{d}"));
        }
    }
    eprintln!(
        "prune race: {} rounds, victim damaged in {damaged}; racer {stats:?}",
        rounds.done
    );
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("prune raced");
}

// 4. stage, raced

#[derive(Clone, Copy, Debug)]
enum SourceKind {
    Dir,
    Tar,
    TarGz,
    TarZst,
}

/// A root-owned source tree of `dirs` x `files` files under src/, and the
/// archive of the kind asked for, made with the tar and zstd CLIs.
fn source_of(s: &Scene, kind: SourceKind, dirs: usize, files: usize) -> PathBuf {
    let tree = s.src().join("tree");
    if !tree.exists() {
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("version"), "staged\n").unwrap();
        for i in 0..dirs {
            let d = tree.join(format!("d{i}"));
            fs::create_dir(&d).unwrap();
            for j in 0..files {
                fs::write(d.join(format!("f{j}")), format!("{i} {j}\n")).unwrap();
            }
        }
    }
    let tar = |name: &str, flags: &str| {
        let out = s.src().join(name);
        let st = Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg(flags)
            .arg(&out)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar failed");
        out
    };
    match kind {
        SourceKind::Dir => tree,
        SourceKind::Tar => tar("app.tar", "-cf"),
        SourceKind::TarGz => tar("app.tar.gz", "-czf"),
        SourceKind::TarZst => {
            let t = tar("plain.tar", "-cf");
            let out = s.src().join("app.tar.zst");
            zstd(&t, &out);
            out
        }
    }
}

/// While root stages a directory or a .tar/.tar.gz/.tar.zst of 150 files,
/// the attacker exchanges the `.stage-*` temp tree with a symlink to the
/// victim whenever one appears, and in odd rounds also flips `releases`
/// itself with such a symlink. Every round: the victim and everything else
/// outside ROOT are unchanged, and stage exits 0, 1 or 2 (never hangs).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn stage_raced_by_exchanges() {
    attack_ready(&["tar", "zstd"]);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut total = 0;
    for kind in [
        SourceKind::Dir,
        SourceKind::Tar,
        SourceKind::TarGz,
        SourceKind::TarZst,
    ] {
        let s = Scene::on_tmpfs();
        let src = source_of(&s, kind, 6, 25);
        let mut rounds = Rounds::new(3, 10, Duration::from_millis(1200));
        while let Some(round) = rounds.next() {
            total += 1;
            s.reset_root();
            s.release("v0", 0, 0);
            s.to_attacker();
            // Directories named like the source's: a write redirected into
            // the victim lands (think /etc and a source holding cron.d/).
            s.reset_victim(&["d0", "d1", "d2", "d3", "d4", "d5"]);
            let before = s.outside_listing();
            let (root, rel) = (s.root(), s.path("releases"));
            let mut spec = json!({
                "links": [[ps(&rel.join(".evil")), ps(&s.victim())],
                          [ps(&root.join(".evil")), ps(&s.victim())]],
                "watch": [{"dir": ps(&rel), "prefix": ".stage-", "link": ".evil"}],
            });
            if round % 2 == 1 {
                spec["pairs"] = json!([[ps(&rel), ps(&root.join(".evil"))]]);
            }
            let mut att = Attacker::start(&s, spec);
            let r = s
                .rctl()
                .arg("stage")
                .arg(&src)
                .args(["--id", &format!("s{round}")])
                .limit(SLOW)
                .try_run();
            stats.add(&att.stop());
            match &r {
                Err(e) => f.add(format!("{kind:?} round {round}: {e}")),
                Ok(r) => f.check(matches!(r.code, Some(0..=2)), || {
                    format!("{kind:?} round {round}: unexpected exit: {}", brief(r))
                }),
            }
            if let Some(d) = changed(&before, &s.outside_listing()) {
                let written = s.victim_listing().0.len();
                f.add(format!(
                    "{kind:?} round {round}: outside ROOT changed (victim now {written} entries):\n{d}"
                ));
            }
        }
    }
    eprintln!("stage race: {total} rounds; racer {stats:?}");
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("stage raced");
}

// 5. The source tree, raced

/// The source directory belongs to the attacker, who keeps exchanging a
/// few of its files with symlinks to a root-only file, and its subdirectory
/// `sub` with a symlink to a root-only directory holding files of the same
/// names, while root stages it. No staged file ever holds the secret
/// (symlinks may be staged as symlinks, never as copies of their targets).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn stage_source_raced_to_root_only_files() {
    attack_ready(&[]);
    const FILES: usize = 4;
    const INNER: usize = 200;
    let s = Scene::on_tmpfs();
    let secret_file = s.base().join("secret");
    let secret_dir = s.base().join("secretdir");
    fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    fs::set_permissions(&secret_file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(&secret_dir).unwrap();
    for i in 0..INNER {
        let p = secret_dir.join(format!("k{i:03}"));
        fs::write(&p, format!("{SECRET}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    fs::set_permissions(&secret_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let tree = s.src().join("tree");
    let ad = s.attacker_dir();
    let mut links: Vec<[String; 2]> = (0..FILES)
        .map(|i| [ps(&ad.join(format!("e{i}"))), ps(&secret_file)])
        .collect();
    links.push([ps(&ad.join("edir")), ps(&secret_dir)]);
    let mut pairs: Vec<[String; 2]> = (0..FILES)
        .map(|i| {
            [
                ps(&tree.join(format!("f{i}"))),
                ps(&ad.join(format!("e{i}"))),
            ]
        })
        .collect();
    pairs.push([ps(&tree.join("sub")), ps(&ad.join("edir"))]);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut leaky_rounds = 0;
    let mut rounds = Rounds::new(4, 24, Duration::from_secs(3));
    s.release("v0", 0, 0);
    s.to_attacker();
    while let Some(round) = rounds.next() {
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir_all(tree.join("sub")).unwrap();
        for i in 0..INNER {
            fs::write(tree.join(format!("sub/k{i:03}")), "public\n").unwrap();
        }
        for i in 0..FILES {
            fs::write(tree.join(format!("f{i}")), format!("public {i}\n")).unwrap();
        }
        chown_tree(&tree);
        let before = Tree::with_metadata(s.base(), &["root", "attacker", "src"]);
        let mut att = Attacker::start(&s, json!({"links": links, "pairs": pairs}));
        let r = s
            .rctl()
            .arg("stage")
            .arg(&tree)
            .args(["--id", &format!("t{round}")])
            .limit(SLOW)
            .try_run();
        stats.add(&att.stop());
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => f.check(matches!(r.code, Some(0..=2)), || {
                format!("round {round}: unexpected exit: {}", brief(r))
            }),
        }
        let leaked: Vec<PathBuf> = regular_files(&s.path("releases"))
            .into_iter()
            .filter(|p| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).contains(SECRET))
            .collect();
        if !leaked.is_empty() {
            leaky_rounds += 1;
            f.add(format!(
                "round {round}: {} staged files hold the secret, e.g. {}",
                leaked.len(),
                leaked[0].display()
            ));
        }
        if let Some(d) = changed(
            &before,
            &Tree::with_metadata(s.base(), &["root", "attacker", "src"]),
        ) {
            f.add(format!("round {round}: outside ROOT changed:\n{d}"));
        }
        // Each round judges only its own release.
        let _ = fs::remove_dir_all(s.path(&format!("releases/t{round}")));
    }
    eprintln!(
        "source race: {} rounds, {leaky_rounds} with copies of the secret; racer {stats:?}",
        rounds.done
    );
    f.check(stats.exchanges > 0, || {
        format!("the racer never exchanged anything: {stats:?}")
    });
    f.done("stage source raced");
}

// 6. Hook working directory, raced

/// Hooks and the health command run as root in the release directory.
/// While root activates v2, the attacker exchanges `releases/v2` with a
/// directory of its own and with a symlink to the victim: in even rounds
/// over and over, in odd rounds once, right after the pre_activate hook has
/// left its marker in v2 (so the health check and post_activate run after
/// the swap). Each command records `stat -c %i .` and `pwd -P` and touches a
/// marker in its cwd: that is only ever one of the two real directories
/// under releases/, never the victim, and the victim is unchanged.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn hook_cwd_raced() {
    attack_ready(&[]);
    let mut f = Findings::default();
    let mut stats = RaceStats::default();
    let mut rounds = Rounds::new(6, 30, Duration::from_secs(3));
    let (mut codes, mut escapes, mut fired, mut hook_runs) = (BTreeMap::new(), 0, 0, 0);
    while let Some(round) = rounds.next() {
        let s = Scene::on_tmpfs();
        let rel = s.path("releases");
        s.release("v1", 0, 0);
        let v2 = s.release("v2", 0, 0);
        let alt = rel.join(".alt");
        fs::create_dir(&alt).unwrap();
        fs::write(alt.join("version"), "v2\n").unwrap();
        let legit: BTreeSet<u64> = [&v2, &alt]
            .iter()
            .map(|d| fs::metadata(d).unwrap().ino())
            .collect();
        let log = s.base().join("cwdlog");
        let record = format!(
            r#"["/bin/sh", "-c", "echo \"$(stat -c %i .) $(pwd -P)\" >> {}; touch hook-was-here"]"#,
            log.display()
        );
        s.config(
            "web",
            &format!(
                "root = \"{{root}}\"\n[health]\ncommand = {record}\nretries = 1\ntimeout = 20\n\
                 [hooks]\npre_activate = [{record}]\npost_activate = [{record}]\n"
            ),
        );
        s.rctl_config().args(["activate", "web:v1"]).ok();
        s.to_attacker();
        let _ = fs::remove_file(&log);
        let rel_real = rel.canonicalize().unwrap();
        let victim_real = s.victim().canonicalize().unwrap();
        let before = s.victim_listing();
        let (v2p, evil) = (ps(&rel.join("v2")), ps(&rel.join(".evil")));
        let mut spec = json!({"links": [[evil, ps(&s.victim())]]});
        if round % 2 == 0 {
            spec["pairs"] = json!([[v2p, ps(&alt)], [v2p, evil]]);
        } else {
            spec["trigger"] =
                json!({"path": ps(&v2.join("hook-was-here")), "pairs": [[v2p, evil]]});
        }
        let mut att = Attacker::start(&s, spec);
        let r = s
            .rctl_config()
            .args(["activate", "web:v2", "--force"])
            .limit(SLOW)
            .try_run();
        let st = att.stop();
        if round % 2 == 1 && st["seen"].as_u64().unwrap_or(0) > 0 {
            fired += 1;
        }
        stats.add(&st);
        match &r {
            Err(e) => f.add(format!("round {round}: {e}")),
            Ok(r) => {
                *codes.entry(r.code).or_insert(0) += 1;
                f.check(matches!(r.code, Some(0 | 1 | 2 | 11)), || {
                    format!("round {round}: unexpected exit: {}", brief(r))
                });
            }
        }
        if let Some(d) = changed(&before, &s.victim_listing()) {
            escapes += 1;
            f.add(format!("round {round}: the victim changed:\n{d}"));
        }
        for line in fs::read_to_string(&log).unwrap_or_default().lines() {
            hook_runs += 1;
            let (ino, path) = line.split_once(' ').unwrap_or(("", line));
            let path = Path::new(path);
            let ino: u64 = ino.parse().unwrap_or(0);
            if path.starts_with(&victim_real)
                || !path.starts_with(&rel_real)
                || !legit.contains(&ino)
            {
                escapes += 1;
                f.add(format!(
                    "round {round}: a hook ran in {} (inode {ino}), not in a checked release directory",
                    path.display()
                ));
            }
        }
    }
    eprintln!(
        "hook cwd race: {} rounds, exits {codes:?}, {hook_runs} hook runs, {fired} targeted \
         swaps, {escapes} escapes; racer {stats:?}",
        rounds.done
    );
    // Not vacuous: the targeted swap happened with hooks still to run.
    f.check(fired > 0, || {
        format!("the targeted swap never fired (no pre_activate ran in v2): {stats:?}")
    });
    f.done("hook cwd raced");
}
