//! Pruning never deletes a release anyone may need, and `rollback` never
//! goes back to a release that failed.

use crate::common;

use common::Dir;
use std::time::{Duration, SystemTime};

/// Give `releases/<id>` distinct staging times, oldest first, as `stage`
/// records them (`releases/.staged/<id>`, its mtime the staging time), so
/// "newest" is defined by the test and not by how fast the directories
/// were made.
fn age(d: &Dir, ids: &[&str]) {
    let start = SystemTime::now() - Duration::from_secs(3600);
    let records = d.path("releases/.staged");
    std::fs::create_dir_all(&records).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let f = std::fs::File::create(records.join(id)).unwrap();
        f.set_modified(start + Duration::from_secs(60 * i as u64))
            .unwrap();
    }
}

fn list_ids(d: &Dir) -> Vec<String> {
    let v = d.cmd().args(["--json", "list"]).ok().json()["releases"].clone();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// "Newest" is when releasectl staged a release, not the directory's
/// mtime: an app writing into its oldest release (here even dating it a
/// year ahead) does not make it the newest for `list` or `prune`. Pruning
/// drops the records of what it removed.
#[test]
fn order_is_staging_time_whatever_the_app_writes() {
    let d = Dir::new();
    let src = d.outside().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("index.html"), "hi\n").unwrap();
    for id in ["r1", "r2", "r3"] {
        d.cmd().arg("stage").arg(&src).args(["--id", id]).ok();
    }
    assert_eq!(list_ids(&d), ["r3", "r2", "r1"]);
    let r1 = d.path("releases/r1");
    std::fs::create_dir(r1.join("cache")).unwrap();
    std::fs::write(r1.join("cache/page"), "x").unwrap();
    std::fs::File::open(&r1)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(365 * 86_400))
        .unwrap();
    assert_eq!(list_ids(&d), ["r3", "r2", "r1"]);

    let text = d.cmd().arg("list").ok().stdout;
    let year = &humantime::format_rfc3339_seconds(SystemTime::now()).to_string()[..4];
    assert!(
        text.lines().all(|l| l.contains(&format!(" {year}-"))),
        "every staged release is dated:\n{text}"
    );

    d.cmd().args(["prune", "--keep", "2"]).ok();
    assert_eq!(list_ids(&d), ["r3", "r2"]);
    assert!(!d.path("releases/.staged/r1").exists());
    assert!(d.path("releases/.staged/r3").exists());
}

/// A release put in place by other means (rsync, mkdir) has no record: it
/// is dated by its directory's birth time, which writes into it do not
/// change either.
#[test]
fn a_release_made_by_hand_is_dated_by_its_birth() {
    let d = Dir::new();
    let src = d.outside().join("src");
    std::fs::create_dir_all(&src).unwrap();
    d.cmd().arg("stage").arg(&src).args(["--id", "r1"]).ok();
    std::thread::sleep(Duration::from_millis(20));
    d.releases(&["r0-by-hand"]);
    let r1 = d.path("releases/r1");
    std::fs::write(r1.join("late"), "x").unwrap();
    // Birth times are kept by ext4, xfs, btrfs and tmpfs (Linux 6.x); on a
    // file system without them the hand-made release is undated and last.
    let by_hand_dated = rustix::fs::statx(
        rustix::fs::CWD,
        d.path("releases/r0-by-hand"),
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::BTIME,
    )
    .is_ok_and(|stx| stx.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0);
    let ids = list_ids(&d);
    if by_hand_dated {
        assert_eq!(ids, ["r0-by-hand", "r1"]);
    } else {
        assert_eq!(ids, ["r1", "r0-by-hand"]);
    }
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn three_failed_activations_then_prune_keep_1() {
    let d = Dir::new();
    let all = ["v1", "v2", "v3", "v4", "v5"];
    d.releases(&all);
    age(&d, &all);
    d.config(
        "web",
        r#"root = "{root}"
[health]
command = ["/bin/sh", "-c", "case $RELEASECTL_RELEASE in v3|v4|v5) exit 1;; esac"]
retries = 1
"#,
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    d.cmd_config().args(["activate", "web:v2"]).ok();
    for id in ["v3", "v4", "v5"] {
        d.cmd_config()
            .args(["activate", &format!("web:{id}")])
            .expect(11);
    }
    let status = d.cmd_config().args(["--json", "status"]).ok().json();
    assert_eq!(status["current"], "v2", "{status:#}");
    assert_eq!(status["previous"], "v1", "{status:#}");
    assert_eq!(status["last_good"], "v2", "{status:#}");

    // The dry run plans exactly what the real prune then does, and changes nothing.
    let before = d.tree();
    let dry = d
        .cmd_config()
        .args(["--json", "prune", "--keep", "1", "--dry-run"])
        .ok()
        .json();
    before.assert_same(&d.tree(), "prune --dry-run");
    let real = d
        .cmd_config()
        .args(["--json", "prune", "--keep", "1"])
        .ok()
        .json();
    assert_eq!(dry["plan"], real["plan"]);

    // `--keep 1` keeps one *good* release: the bad v5, v4, v3 do not count
    // and go (it once kept the bad v5 as "the newest"). Kept: the newest
    // good one, current/last good v2; protected: previous v1.
    assert_eq!(ids(&real["plan"]["keep"]), ["v2"], "{real:#}");
    assert_eq!(ids(&real["plan"]["protected"]), ["v1"], "{real:#}");
    assert_eq!(ids(&real["plan"]["remove"]), ["v3", "v4", "v5"], "{real:#}");
    assert_eq!(d.release_names(), ["v1", "v2"]);
    assert_eq!(d.assert_current_complete(), "v2");

    // And back to the previous release still works after pruning.
    d.cmd_config().args(["rollback"]).ok();
    assert_eq!(d.assert_current_complete(), "v1");
}

#[test]
fn prune_keep_0_after_an_interrupted_activation() {
    let d = Dir::new();
    let all = ["v1", "v2", "v3", "v4"];
    d.releases(&all);
    age(&d, &all);
    for id in ["v1", "v2", "v3"] {
        d.cmd().args(["activate", id]).ok();
    }
    // What an activation v3 -> v4 killed right after its swap leaves behind.
    std::fs::write(
        d.path(".releasectl/pending.json"),
        r#"{"from": "v3", "to": "v4", "pid": 999999999, "started": "2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("releases/v4", d.path(".current.tmp")).unwrap();
    std::fs::rename(d.path(".current.tmp"), d.path("current")).unwrap();

    let r = d.cmd().args(["--json", "prune", "--keep", "0"]).ok().json();
    // Only v1 goes: v4 is current and pending's target, v3 pending's from
    // and the last good release, v2 the previous one.
    assert_eq!(ids(&r["plan"]["remove"]), ["v1"], "{r:#}");
    assert_eq!(d.release_names(), ["v2", "v3", "v4"]);
    d.cmd().args(["recover"]).ok();
    assert_eq!(d.assert_current_complete(), "v3");
}

#[test]
fn prune_removes_dead_stagings_only() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.cmd().args(["activate", "v1"]).ok();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let live = std::process::id();
    for name in [format!(".stage-{dead}-1"), format!(".stage-{live}-1")] {
        std::fs::create_dir_all(d.path("releases").join(name).join("half")).unwrap();
    }
    let r = d.cmd().args(["--json", "prune"]).ok().json();
    assert_eq!(
        r["leftovers_removed"],
        serde_json::json!([format!(".stage-{dead}-1")])
    );
    assert_eq!(
        d.release_names(),
        [format!(".stage-{live}-1"), "v1".to_string()]
    );
}

#[test]
fn rollback_skips_bad_releases() {
    let d = Dir::new();
    let all = ["v1", "v2", "v3"];
    d.releases(&all);
    let badlist = d.write("outside/badlist", "");
    d.config(
        "web",
        r#"root = "{root}"
[health]
command = ["/bin/sh", "-c", "! grep -qx \"$RELEASECTL_RELEASE\" {base}/outside/badlist"]
retries = 1
"#,
    );
    for id in all {
        d.cmd_config().args(["activate", &format!("web:{id}")]).ok();
    }
    // v2 was good, then fails on a later activation: it is bad now.
    std::fs::write(&badlist, "v2\n").unwrap();
    d.cmd_config().args(["activate", "web:v2"]).expect(11);
    assert_eq!(d.assert_current_complete(), "v3");

    // The newest good release that is not current is v1, not v2.
    let r = d.cmd_config().args(["--json", "rollback"]).ok().json();
    assert_eq!(r["release"], "v1", "{r:#}");
    assert_eq!(d.assert_current_complete(), "v1");

    // Rolling back again does not go forward to v3: the rollback marked the
    // release it left bad, and v2 is bad too, so there is nothing earlier.
    d.cmd_config().args(["rollback"]).expect(1);
    assert_eq!(d.assert_current_complete(), "v1");

    // An explicit --to is honoured (and here fails its health check again).
    d.cmd_config().args(["rollback", "--to", "v2"]).expect(11);
    assert_eq!(d.assert_current_complete(), "v1");
}

#[test]
fn rollback_with_nothing_to_go_back_to_fails_cleanly() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.cmd().args(["activate", "v1"]).ok();
    let before = d.tree();
    let r = d.cmd().args(["rollback"]).run();
    assert_ne!(r.code, Some(0), "{r}");
    assert!(
        r.one_line_error().contains("no earlier good release"),
        "{r}"
    );
    before.assert_same(&d.tree(), "rollback with nothing to roll back to");
}

#[test]
fn prune_keeps_the_release_rollback_would_pick() {
    // v1, v2, v3 active in turn, then back to v1; v3 is tried again and
    // fails. "previous" is now v3 (bad), but rollback's target is v2: prune
    // must keep both, or rollback has nowhere to go.
    let d = Dir::new();
    let all = ["v1", "v2", "v3"];
    d.releases(&all);
    age(&d, &all);
    d.config(
        "web",
        r#"root = "{root}"
[hooks]
post_activate = [["/bin/sh", "-c", "[ \"$RELEASECTL_RELEASE\" != v3 ] || [ ! -e {base}/fail ]"]]
"#,
    );
    for id in ["web:v1", "web:v2", "web:v3"] {
        d.cmd_config().args(["activate", id]).ok();
    }
    d.cmd_config().args(["rollback", "web", "--to", "v1"]).ok();
    d.write("fail", "");
    d.cmd_config().args(["activate", "web:v3"]).expect(11);

    d.cmd_config().args(["prune", "web", "--keep", "0"]).ok();
    assert_eq!(d.release_names(), ["v1", "v2", "v3"]);
    d.cmd_config().args(["rollback", "web"]).ok();
    assert_eq!(d.assert_current_complete(), "v2");
}

/// A member of the group in the README's "Without root" layout may stage
/// but not prune (the lock is root's): `prune --dry-run` says so, exit 1
/// like the real prune, instead of listing what the real run then cannot
/// remove. Neither changes anything; root's dry run still plans.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_members_dry_run_is_refused_like_the_real_prune() {
    common::require_root("members are other uids");
    common::require_tool("setpriv");
    const GID: u32 = 4243;
    let member = || {
        common::TestCommand::under(&[
            "setpriv",
            "--reuid=65534",
            &format!("--regid={GID}"),
            &format!("--groups={GID}"),
        ])
    };
    let d = Dir::new();
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    for p in [d.base(), &d.root()] {
        chmod(p, 0o755);
    }
    let all = ["v1", "v2", "v3"];
    d.releases(&all);
    age(&d, &all);
    for id in all {
        d.cmd().args(["activate", id]).ok();
    }
    let releases = d.path("releases");
    std::os::unix::fs::chown(&releases, Some(0), Some(GID)).unwrap();
    chmod(&releases, 0o3775);

    let before = d.tree();
    let dry = member()
        .arg("--root")
        .arg(d.root())
        .args(["prune", "--keep", "0", "--dry-run"])
        .expect(1);
    assert!(
        dry.one_line_error()
            .contains("prune would be refused: cannot take the lock"),
        "{dry}"
    );
    assert!(!dry.stdout.contains("would remove"), "{dry}");
    let real = member()
        .arg("--root")
        .arg(d.root())
        .args(["prune", "--keep", "0"])
        .expect(1);
    assert!(
        real.one_line_error().contains("Permission denied"),
        "{real}"
    );
    before.assert_same(&d.tree(), "a member's prune");

    let root_dry = d.cmd().args(["prune", "--keep", "0", "--dry-run"]).ok();
    assert!(root_dry.stdout.contains("would remove v1"), "{root_dry}");
}

/// `[prune] keep = N`: every committed activation prunes to N good
/// releases by itself (never current, previous or last good); a failed
/// activation prunes nothing, and its bad release does not count. Given
/// with the top-level `keep` too, the config is refused naming the key.
#[test]
fn prune_keep_in_the_config_prunes_after_each_activation() {
    let d = Dir::new();
    d.config(
        "web",
        r#"root = "{root}"
[prune]
keep = 1
[health]
command = ["/bin/sh", "-c", "[ $RELEASECTL_RELEASE != v4 ]"]
retries = 1
"#,
    );
    let all = ["v1", "v2", "v3", "v4", "v5"];
    // Staged one by one, as deploys do, then activated.
    let deploy = |n: usize, code: i32| {
        d.releases(&all[n..=n]);
        let present: Vec<&str> = all[..=n]
            .iter()
            .copied()
            .filter(|id| d.path(&format!("releases/{id}")).exists())
            .collect();
        age(&d, &present);
        d.cmd_config()
            .args(["activate", &format!("web:{}", all[n])])
            .expect(code)
    };
    deploy(0, 0);
    deploy(1, 0);
    assert_eq!(d.release_names(), ["v1", "v2"]);
    let r = deploy(2, 0);
    assert!(r.stderr.contains("removed v1"), "{r}");
    assert_eq!(d.release_names(), ["v2", "v3"]);
    let r = deploy(3, 11);
    assert!(!r.stderr.contains("pruned"), "{r}");
    assert_eq!(d.release_names(), ["v2", "v3", "v4"]);
    let r = deploy(4, 0);
    assert!(r.stderr.contains("removed v4, v2"), "{r}");
    // v5 current and kept, v3 previous: rollback still has its target.
    assert_eq!(d.release_names(), ["v3", "v5"]);
    d.cmd_config().args(["rollback"]).ok();
    assert_eq!(d.assert_current_complete(), "v3");

    d.config("web", "root = \"{root}\"\nkeep = 3\n[prune]\nkeep = 1\n");
    let r = d.cmd_config().args(["status"]).expect(2);
    assert!(r.one_line_error().contains(":4: key `prune.keep`"), "{r}");
}
