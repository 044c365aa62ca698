//! Staging records (`releases/.staged`), planted by the deploy user.

use super::*;

// 15. Staging records (releases/.staged)

/// The deploy user owns `releases/`, so root's staging records live where
/// the attacker can plant things: `.staged` as a symlink to the victim, a
/// record that is a hard link to a victim file, one that is a FIFO. Root's
/// `stage` still stages (the record is only a date) and writes nothing
/// through any of them; `list` neither follows nor opens them (a FIFO would
/// hang an open); `prune` removes names, never what they point at.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn planted_staging_records() {
    root_ready(&[]);
    let s = Scene::new();
    s.release("v0", 0, 0);
    fs::write(s.src().join("index.html"), "hi\n").unwrap();
    s.to_attacker();
    let mut f = Findings::default();

    // .staged -> VICTIM
    symlink(s.victim(), s.path("releases/.staged")).unwrap();
    let before = s.victim_listing();
    for args in [
        &["stage", &ps(&s.src()), "--id", "r1"][..],
        &["list"],
        &["prune", "--keep", "0"],
    ] {
        match s.rctl().args(args).try_run() {
            Err(e) => f.add(e),
            Ok(r) => f.check(r.code == Some(0), || {
                format!("{args:?} with .staged -> victim: {}", brief(&r))
            }),
        }
    }
    if let Some(d) = changed(&before, &s.victim_listing()) {
        f.add(format!(".staged -> victim changed the victim:\n{d}"));
    }

    // A real .staged holding a hard link to a victim file and a FIFO.
    fs::remove_file(s.path("releases/.staged")).unwrap();
    fs::create_dir(s.path("releases/.staged")).unwrap();
    chown_tree(&s.path("releases/.staged"));
    fs::hard_link(s.victim().join("hard"), s.path("releases/.staged/r2")).unwrap();
    s.release("r3", 0, 0);
    // The deploy user's, like everything in their releases/: root prunes
    // with their rights, and a tree of root's there would stay.
    chown_tree(&s.path("releases/r3"));
    let fifo = s.path("releases/.staged/r3");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let hard = fs::read(s.victim().join("hard")).unwrap();
    let before = s.victim_listing();
    match s
        .rctl()
        .args(["stage", &ps(&s.src()), "--id", "r2"])
        .try_run()
    {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(0), || {
            format!("stage over a hard-linked record: {}", brief(&r))
        }),
    }
    match s.rctl().args(["--json", "list"]).try_run() {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(0) && r.stdout.contains("\"r3\""), || {
            format!("list with a FIFO record: {}", brief(&r))
        }),
    }
    match s.rctl().args(["prune", "--keep", "0"]).try_run() {
        Err(e) => f.add(e),
        Ok(r) => f.check(r.code == Some(0), || {
            format!("prune with planted records: {}", brief(&r))
        }),
    }
    f.check(fs::read(s.victim().join("hard")).unwrap() == hard, || {
        "the hard-linked victim file was written".into()
    });
    if let Some(d) = changed(&before, &s.victim_listing()) {
        f.add(format!("planted records changed the victim:\n{d}"));
    }
    f.check(!fifo.exists(), || {
        "prune left the record of a pruned release".into()
    });
    f.done("planted staging records");
}
