//! The request path: what members of group releasectl may plant.

use super::*;

// 16. The request path: what members of group releasectl may plant

/// The requests directory as deploy-watch@ sees it: group-writable by the
/// attacker's group (as /var/lib/releasectl/requests is by `releasectl`),
/// and the results directory root's alone, readable by that group.
fn request_dirs(s: &Scene) -> (PathBuf, PathBuf) {
    let (requests, results) = (s.base().join("requests"), s.base().join("results"));
    for (dir, mode) in [(&requests, 0o2775), (&results, 0o750)] {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(0), Some(ATTACKER)).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    (requests, results)
}

/// `activate --request web` as the watch unit runs it.
fn watch(s: &Scene, requests: &Path, results: &Path) -> Result<Run, String> {
    s.rctl_config()
        .args(["activate", "--request", "web", "--requests-dir"])
        .arg(requests)
        .arg("--results-dir")
        .arg(results)
        .try_run()
}

/// What a member plants as the request file: a symlink to a file only root
/// may read, a dangling one, a FIFO, a hard link to root's file, a
/// directory, a sparse 3 GiB file. Root refuses each as bad input (exit 2,
/// one line naming the request file) without following, blocking or
/// reading it, leaves `current` and the victim alone, and records an
/// `invalid` outcome the member can read, which holds nothing of the victim.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn planted_request_files() {
    attack_ready(&["mkfifo"]);
    let s = Scene::new();
    for id in ["v1", "v2"] {
        s.release(id, 0, 0);
    }
    s.config("web", "root = \"{root}\"\n");
    s.rctl_config().args(["activate", "web:v1"]).ok();
    let mut f = Findings::default();
    for plant in ["symlink", "dangling", "fifo", "hardlink", "dir", "huge"] {
        let (requests, results) = request_dirs(&s);
        let at = requests.join("web");
        match plant {
            "symlink" => symlink(s.victim().join("secret"), &at).unwrap(),
            "dangling" => symlink(s.victim().join("created-by-root"), &at).unwrap(),
            "fifo" => {
                let made = as_attacker("mkfifo").arg(&at).status().unwrap();
                assert!(made.success());
            }
            // protected_hardlinks keeps the attacker from making it; as if
            // it were off (or the file were the attacker's to read).
            "hardlink" => fs::hard_link(s.victim().join("hard"), &at).unwrap(),
            "dir" => fs::create_dir(&at).unwrap(),
            _ => {
                let file = fs::File::create(&at).unwrap();
                file.set_len(3 << 30).unwrap();
            }
        }
        if plant != "hardlink" {
            let _ = std::os::unix::fs::lchown(&at, Some(ATTACKER), Some(ATTACKER));
        }
        let before = s.victim_listing();
        let r = watch(&s, &requests, &results);
        expect_refusal(&mut f, &r, 2, &["request file"]);
        f.check(s.current().as_deref() == Some("releases/v1"), || {
            format!("{plant}: current -> {:?}", s.current())
        });
        if let Some(d) = changed(&before, &s.victim_listing()) {
            f.add(format!("{plant}: the victim changed:\n{d}"));
        }
        let recorded = fs::read_to_string(results.join("web")).unwrap_or_default();
        f.check(recorded.contains("\"outcome\": \"invalid\""), || {
            format!("{plant}: no invalid outcome recorded: {recorded:?}")
        });
        f.check(!recorded.contains(SECRET), || {
            format!("{plant}: the secret reached the outcomes")
        });
        if let Ok(run) = &r {
            f.check(!run.stderr.contains(SECRET), || {
                format!("{plant}: the secret reached stderr")
            });
        }
    }
    f.done("planted request files");
}

/// A results directory that is not root's alone (a careless `chmod g+w`,
/// or one handed to the attacker), with symlinks to victim files planted
/// under the outcome's name and under root's temp name, or itself a
/// symlink into the victim: root writes nothing through any of them. The
/// activation itself still happens (the outcome is a courtesy), with a
/// warning that it was not recorded.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn results_dir_others_may_write_is_not_written() {
    attack_ready(&[]);
    let s = Scene::new();
    for id in ["v1", "v2", "v3", "v4"] {
        s.release(id, 0, 0);
    }
    s.config("web", "root = \"{root}\"\n");
    s.rctl_config().args(["activate", "web:v1"]).ok();
    let mut f = Findings::default();
    for (n, case) in ["group-writable", "attacker's", "symlink"]
        .iter()
        .enumerate()
    {
        let (requests, results) = request_dirs(&s);
        match *case {
            "group-writable" => {
                fs::set_permissions(&results, fs::Permissions::from_mode(0o2775)).unwrap()
            }
            "attacker's" => chown_tree(&results),
            _ => {
                fs::remove_dir(&results).unwrap();
                symlink(s.victim(), &results).unwrap();
            }
        }
        if *case != "symlink" {
            symlink(s.victim().join("target"), results.join("web")).unwrap();
            symlink(s.victim().join("passwd"), results.join(".web.tmp")).unwrap();
            for name in ["web", ".web.tmp"] {
                std::os::unix::fs::lchown(results.join(name), Some(ATTACKER), Some(ATTACKER))
                    .unwrap();
            }
        }
        let id = format!("v{}", n + 2);
        fs::write(requests.join("web"), format!("{id}\n")).unwrap();
        let before = s.victim_listing();
        let r = watch(&s, &requests, &results);
        match &r {
            Err(hung) => f.add(format!("{case}: {hung}")),
            Ok(run) => {
                f.check(run.code == Some(0), || format!("{case}: {}", brief(run)));
                f.check(run.stderr.contains("outcome not recorded"), || {
                    format!("{case}: no warning: {}", brief(run))
                });
            }
        }
        f.check(s.current() == Some(format!("releases/{id}")), || {
            format!("{case}: current -> {:?}", s.current())
        });
        if let Some(d) = changed(&before, &s.victim_listing()) {
            f.add(format!("{case}: the victim changed:\n{d}"));
        }
        if *case == "symlink" {
            fs::remove_file(&results).unwrap();
        }
    }
    f.done("results dir others may write");
}
