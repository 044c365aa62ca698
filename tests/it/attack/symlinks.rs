//! Symlinks planted where root looks: a symlinked `releases/`, symlinks among
//! the releases.

use super::*;

// 1. A symlinked releases/

/// `releases` is the attacker's symlink to a root-owned directory of
/// release-like trees: prune, list and status refuse it (exit 2, one line
/// naming `releases`), list nothing from it, and delete nothing in it.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn releases_symlink_is_refused() {
    attack_ready(&[]);
    let s = Scene::new();
    let ids = ["vica", "vicb", "vicc"];
    s.fill_victim(&ids);
    symlink(s.victim(), s.path("releases")).unwrap();
    s.to_attacker();
    let mut f = Findings::default();
    // list and status first: prune (today) deletes what they would show.
    for args in [&["list"][..], &["status"], &["prune", "--keep", "0"]] {
        let before = s.victim_listing();
        let r = s.rctl().args(args).try_run();
        expect_refusal(&mut f, &r, 2, &["releases"]);
        if let (Ok(r), false) = (&r, args[0] == "prune") {
            for id in ids {
                f.check(!r.stdout.contains(id), || {
                    format!("listed the victim's {id}: {}", brief(r))
                });
            }
        }
        if let Some(d) = changed(&before, &s.victim_listing()) {
            f.add(format!("{args:?} changed the victim:\n{d}"));
        }
    }
    f.done("releases -> VICTIM");
}

// 2. Symlinks among the releases

/// Symlinks inside releases/ (to the victim, to a victim dir with a valid
/// release id, and under the temp names of dead stage/prune runs) are never
/// followed nor counted: prune removes exactly the real old releases, list
/// and status count only real ones, and the victim is untouched.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn symlinked_entries_in_releases_are_not_followed() {
    attack_ready(&[]);
    let s = Scene::new();
    s.fill_victim(&["old", "s1"]);
    for (i, id) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
        let d = s.release(id, 1, 1);
        let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i as u64);
        fs::File::open(&d).unwrap().set_modified(t).unwrap();
    }
    s.set_current("r4");
    let rel = s.path("releases");
    symlink(s.victim(), rel.join("old")).unwrap();
    symlink(s.victim().join("s1"), rel.join("s1")).unwrap();
    // pid 999999999 is above any pid_max: a dead run's leftovers.
    symlink(s.victim(), rel.join(".stage-999999999-1")).unwrap();
    symlink(s.victim().join("s1"), rel.join(".prune-s1-999999999")).unwrap();
    s.to_attacker();
    let before = s.victim_listing();
    let mut f = Findings::default();

    let list = s.rctl().args(["--json", "list"]).try_run();
    match &list {
        Ok(r) if r.code == Some(0) => {
            let ids: BTreeSet<String> = serde_json::from_str::<Value>(&r.stdout)
                .ok()
                .and_then(|v| v["result"]["releases"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_string))
                .collect();
            let want: BTreeSet<String> = ["r1", "r2", "r3", "r4"].map(String::from).into();
            f.check(ids == want, || format!("list shows {ids:?}: {}", brief(r)));
        }
        Ok(r) => f.add(format!("list failed: {}", brief(r))),
        Err(e) => f.add(e.clone()),
    }
    let status = s.rctl().args(["--json", "status"]).try_run();
    match &status {
        Ok(r) if r.code == Some(0) => {
            let n = serde_json::from_str::<Value>(&r.stdout)
                .ok()
                .map(|v| v["result"]["releases"].clone());
            f.check(n == Some(json!(4)), || {
                format!("status counts {n:?} releases, not 4: {}", brief(r))
            });
        }
        Ok(r) => f.add(format!("status failed: {}", brief(r))),
        Err(e) => f.add(e.clone()),
    }
    let prune = s.rctl().args(["--json", "prune", "--keep", "1"]).try_run();
    match &prune {
        Ok(r) if r.code == Some(0) => {
            let v: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
            let names = |k: &str| -> Vec<String> {
                v["result"]["plan"][k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            };
            let mut removed = names("remove");
            removed.sort();
            f.check(removed == ["r1", "r2", "r3"], || {
                format!("prune removed {removed:?}, not r1 r2 r3: {}", brief(r))
            });
            let all = [names("keep"), names("protected")].concat();
            f.check(all == ["r4"], || {
                format!("prune kept {all:?}, not just r4: {}", brief(r))
            });
        }
        Ok(r) => f.add(format!("prune failed: {}", brief(r))),
        Err(e) => f.add(e.clone()),
    }
    for id in ["r1", "r2", "r3"] {
        f.check(!rel.join(id).exists(), || format!("{id} was not pruned"));
    }
    f.check(rel.join("r4/version").exists(), || "r4 is gone".into());
    for link in ["old", "s1"] {
        let still = fs::symlink_metadata(rel.join(link)).map(|m| m.file_type().is_symlink());
        f.check(still.unwrap_or(false), || {
            format!("releases/{link} (a symlink, not a release) was removed or replaced")
        });
    }
    if let Some(d) = changed(&before, &s.victim_listing()) {
        f.add(format!("the victim changed:\n{d}"));
    }
    f.done("symlinks among the releases");
}
