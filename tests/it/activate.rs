//! The activation transaction seen from the command line: the happy path,
//! its guards (--expect-current, --dry-run, already active), and failures
//! of hooks and health checks that must roll back and mark the release bad.

use crate::common;

use common::Dir;

fn events(d: &Dir) -> Vec<String> {
    d.history()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["to"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// Ids that `list --json` marks bad.
fn bad(d: &Dir) -> Vec<String> {
    let list = d.cmd_config().args(["--json", "list"]).ok().json()["releases"].clone();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["bad"] == true)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn first_activation_creates_a_relative_link_and_history() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    let r = d.cmd().args(["--json", "activate", "v1"]).ok().json();
    assert_eq!(r["outcome"], "activated", "{r}");
    assert_eq!(r["release"], "v1");
    assert_eq!(
        std::fs::read_link(d.path("current")).unwrap(),
        std::path::Path::new("releases/v1")
    );
    d.cmd().args(["activate", "v2"]).ok();
    assert_eq!(d.assert_current_complete(), "v2");
    assert_eq!(events(&d), ["activated v1", "activated v2"]);
    assert!(d.pending().is_none());
    let status = d.cmd().args(["--json", "status"]).ok().json();
    assert_eq!(status["current"], "v2");
    assert_eq!(status["previous"], "v1");
    assert_eq!(status["last_good"], "v2");
    assert_eq!(status["pending"], serde_json::Value::Null);
}

#[test]
fn already_active_exits_0_and_changes_nothing() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.cmd().args(["activate", "v1"]).ok();
    // The lock is taken (the check is repeated under it), so only the lock
    // file's holder record may change.
    let lock = "root/.releasectl/lock";
    let before = d.tree().without(lock);
    let r = d.cmd().args(["activate", "v1"]).ok();
    assert!(r.stdout.contains("already active"), "{r}");
    before.assert_same(&d.tree().without(lock), "already active");
    let j = d.cmd().args(["--json", "activate", "v1"]).ok().json();
    assert_eq!(j["outcome"], "already_active");
}

#[test]
fn expect_current_is_a_compare_and_swap() {
    let d = Dir::new();
    d.releases(&["v1", "v2", "v3"]);
    d.cmd().args(["activate", "v1"]).ok();
    let before = d.tree();
    let r = d
        .cmd()
        .args(["activate", "v3", "--expect-current", "v2"])
        .expect(2);
    let line = r.one_line_error();
    assert!(line.contains("v1") && line.contains("v2"), "{r}");
    before.assert_same(&d.tree(), "--expect-current mismatch");
    d.cmd()
        .args(["activate", "v3", "--expect-current", "v1"])
        .ok();
    assert_eq!(d.assert_current_complete(), "v3");
}

#[test]
fn dry_run_changes_nothing() {
    // On a fresh root: not even .releasectl/ may appear.
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    let before = d.tree();
    let r = d.cmd().args(["activate", "v1", "--dry-run"]).ok();
    assert!(r.stdout.contains("would activate v1"), "{r}");
    before.assert_same(&d.tree(), "dry run on a fresh root");

    d.cmd().args(["activate", "v1"]).ok();
    let before = d.tree();
    let j = d
        .cmd()
        .args(["--json", "activate", "v2", "--dry-run"])
        .ok()
        .json();
    assert_eq!(j["outcome"], "would_activate", "{j}");
    assert_eq!(j["previous"], "v1");
    before.assert_same(&d.tree(), "dry run");
    // A dry run of a bad request is still refused.
    d.cmd().args(["activate", "v9", "--dry-run"]).expect(2);
}

#[test]
fn history_n_shows_the_last_entries() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    for id in ["v1", "v2", "v1", "v2"] {
        d.cmd().args(["activate", id]).ok();
    }
    let all = d.cmd().args(["--json", "history"]).ok().json()["entries"].clone();
    assert_eq!(all.as_array().unwrap().len(), 4);
    let last2 = d.cmd().args(["--json", "history", "-n", "2"]).ok().json()["entries"].clone();
    let last2 = last2.as_array().unwrap();
    assert_eq!(last2.len(), 2);
    assert_eq!(last2[0], all[2]);
    assert_eq!(last2[1], all[3]);
    let text = d.cmd().args(["history", "-n", "1"]).ok();
    assert_eq!(text.stdout.lines().count(), 1, "{text}");
    assert!(text.stdout.contains("v2 activated (was v1)"), "{text}");
}

#[test]
fn hooks_get_the_documented_environment_and_cwd() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        r#"root = "{root}"
[hooks]
pre_activate = [["/bin/sh", "-c", "{ pwd; env | grep ^RELEASECTL_ | sort; } > {base}/outside/env"]]
"#,
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    d.cmd_config().args(["activate", "web:v2"]).ok();
    let env = std::fs::read_to_string(d.outside().join("env")).unwrap();
    // The hook's mark differs from run to run: present, then left out.
    assert!(env.contains("\nRELEASECTL_HOOK_ID="), "{env}");
    let env: String = env
        .lines()
        .filter(|l| !l.starts_with("RELEASECTL_HOOK_ID="))
        .map(|l| format!("{l}\n"))
        .collect();
    let root = d.root().display().to_string();
    let want = format!(
        "{root}/releases/v2\nRELEASECTL_ACTION=activate\nRELEASECTL_APP=web\n\
         RELEASECTL_PHASE=pre_activate\nRELEASECTL_PREVIOUS=v1\n\
         RELEASECTL_RELEASE=v2\nRELEASECTL_ROOT={root}\n"
    );
    assert_eq!(env, want);
}

/// v1 active; `body` is the config's failing part; activating v2 must exit 11
/// with v1 current again and v2 marked bad.
fn fails_and_restores(body: &str, event: &str, needle: &str) {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config("web", &format!("root = \"{{root}}\"\n{body}"));
    // The failing check only fails for v2 (it reads RELEASECTL_RELEASE).
    d.cmd_config().args(["activate", "web:v1"]).ok();
    let r = d.cmd_config().args(["activate", "web:v2"]).expect(11);
    assert!(r.stderr.contains(needle), "{r}");
    assert_eq!(d.assert_current_complete(), "v1");
    assert!(d.pending().is_none());
    assert_eq!(
        events(&d),
        ["activated v1".to_string(), format!("{event} v2")]
    );
    let last = d.history().pop().unwrap();
    assert!(
        last["reason"].as_str().unwrap_or_default().contains(needle),
        "{last}"
    );
    assert_eq!(bad(&d), ["v2"]);
    let status = d.cmd_config().args(["--json", "status"]).ok().json();
    assert_eq!(status["current"], "v1");
    assert_eq!(status["last_good"], "v1");
}

const FAIL_ON_V2: &str = "[ \"$RELEASECTL_RELEASE\" != v2 ] || exit 7";

#[test]
fn failing_health_check_rolls_back() {
    fails_and_restores(
        &format!(
            "[health]\ncommand = [\"/bin/sh\", \"-c\", '{FAIL_ON_V2}']\nretries = 2\ninterval = 0\n"
        ),
        "rolled_back",
        "health check failed 2 times",
    );
}

#[test]
fn failing_pre_activate_hook_changes_nothing() {
    fails_and_restores(
        &format!("[hooks]\npre_activate = [[\"/bin/sh\", \"-c\", '{FAIL_ON_V2}']]\n"),
        "aborted",
        "pre_activate",
    );
}

#[test]
fn failing_post_activate_hook_rolls_back() {
    fails_and_restores(
        &format!("[hooks]\npost_activate = [[\"/bin/sh\", \"-c\", '{FAIL_ON_V2}']]\n"),
        "rolled_back",
        "post_activate",
    );
}

/// `--refuse-bad` (what package hooks pass) refuses a release whose latest
/// attempt failed, with exit 2 and nothing changed; without it the release
/// is tried again.
#[test]
fn refuse_bad_does_not_retry_a_failed_release() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        &format!("root = \"{{root}}\"\n[health]\ncommand = [\"/bin/sh\", \"-c\", '{FAIL_ON_V2}']\nretries = 1\n"),
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    d.cmd_config().args(["activate", "web:v2"]).expect(11);
    let before = d.tree();
    for args in [
        &["activate", "--refuse-bad", "web:v2"][..],
        &["activate", "--refuse-bad", "--dry-run", "web:v2"][..],
    ] {
        let r = d.cmd_config().args(args).expect(2);
        assert!(r.one_line_error().contains("v2 is marked bad"), "{r}");
        before.assert_same(&d.tree(), &r.shown);
    }
    d.cmd_config()
        .args(["activate", "--refuse-bad", "web:v1", "--force"])
        .ok();
    d.cmd_config().args(["activate", "web:v2"]).expect(11);
}

/// `rollback` steps back in activation order and marks the release it left
/// bad, so a second rollback goes further back instead of forward to the
/// release just left (it used to toggle between the two). `mark-good`
/// makes a release a rollback target again; `mark-bad` refuses a release
/// that does not exist, changing nothing.
#[test]
fn rollback_steps_back_and_marks_what_it_left() {
    let d = Dir::new();
    d.releases(&["r4", "r5", "r7"]);
    d.config("web", "root = \"{root}\"\n");
    for r in ["r4", "r5", "r7"] {
        d.cmd_config().args(["activate", &format!("web:{r}")]).ok();
    }
    d.cmd_config().args(["rollback", "web"]).ok();
    assert_eq!(d.current().as_deref(), Some("r5"));
    assert_eq!(bad(&d), ["r7"]);
    d.cmd_config().args(["rollback", "web"]).ok();
    assert_eq!(d.current().as_deref(), Some("r4"));
    let mut marked = bad(&d);
    marked.sort();
    assert_eq!(marked, ["r5", "r7"]);
    let r = d.cmd_config().args(["rollback", "web"]).expect(1);
    assert!(
        r.one_line_error().contains("no earlier good release"),
        "{r}"
    );

    d.cmd_config()
        .args(["mark-good", "web:r7", "--reason", "fixed the config"])
        .ok();
    assert_eq!(bad(&d), ["r5"]);
    d.cmd_config().args(["rollback", "web"]).ok();
    assert_eq!(d.current().as_deref(), Some("r7"));
    assert_eq!(
        events(&d)[3..],
        [
            "reverted r5",
            "reverted r4",
            "marked_good r7",
            "reverted r7",
        ]
    );

    let before = d.tree();
    let r = d.cmd_config().args(["mark-bad", "web:r9"]).expect(2);
    assert!(r.one_line_error().contains("r9"), "{r}");
    before.assert_same(&d.tree(), &r.shown);
}

/// Every history entry says what is live after it, who and what started
/// releasectl, and how long the activation took; `history` shows the live
/// release, so a rollback reads as "v2 failed, v1 live".
#[test]
fn history_entries_say_what_is_live_who_and_how_long() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        &format!("root = \"{{root}}\"\n[health]\ncommand = [\"/bin/sh\", \"-c\", '{FAIL_ON_V2}']\nretries = 1\n"),
    );
    d.cmd_config().args(["activate", "web:v1"]).ok();
    d.cmd_config().args(["activate", "web:v2"]).expect(11);
    let h = d.history();
    let me = rustix::process::geteuid().as_raw();
    // Run from a unit (some CI runners are), releasectl says so.
    let trigger = if std::env::var_os("INVOCATION_ID").is_some() {
        "unit"
    } else {
        "cli"
    };
    for (e, live) in h.iter().zip(["v1", "v1"]) {
        assert_eq!(e["live"], live, "{e}");
        assert_eq!(e["uid"], me, "{e}");
        assert_eq!(e["trigger"], trigger, "{e}");
        assert!(e["duration_ms"].is_u64(), "{e}");
    }
    let text = d.cmd_config().args(["history"]).ok().stdout;
    assert!(
        text.contains("rolled_back     v2 failed; v1 restored: "),
        "{text}"
    );
    assert!(text.contains(&format!("[{trigger}, uid {me}, ")), "{text}");
}

/// With several apps configured and none named, `status`, `list` and
/// `history` show every app; commands that act still ask which one.
#[test]
fn views_without_an_app_show_every_app() {
    let d = Dir::new();
    d.config("web", "root = \"{root}\"\n");
    let api_root = d.outside().join("api");
    std::fs::create_dir_all(api_root.join("releases/a1")).unwrap();
    d.config("api", &format!("root = \"{}\"\n", api_root.display()));
    d.releases(&["v1"]);
    d.cmd_config().args(["activate", "web:v1"]).ok();
    d.cmd_config().args(["activate", "api:a1"]).ok();
    let list = d.cmd_config().args(["list"]).ok().stdout;
    assert!(list.contains("== api ==\na1 "), "{list}");
    assert!(list.contains("== web ==\nv1 "), "{list}");
    let status = d.cmd_config().args(["--json", "status"]).ok().json()["apps"].clone();
    let apps: Vec<_> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["app"].clone())
        .collect();
    assert_eq!(apps, ["api", "web"]);
    assert_eq!(status[1]["current"], "v1");
    let history = d.cmd_config().args(["--json", "history"]).ok().json()["apps"].clone();
    assert_eq!(history[0]["entries"][0]["to"], "a1", "{history:#}");
    let r = d.cmd_config().args(["rollback"]).expect(2);
    assert!(
        r.one_line_error().contains("several apps configured"),
        "{r}"
    );
    // An interrupted activation of one app (its intent left, the lock
    // free): every app is still shown, then exit 13 naming that app.
    std::fs::write(
        api_root.join(".releasectl/pending.json"),
        "{\"from\":\"a1\",\"to\":\"a1\",\"pid\":999999,\"started\":\"2026-01-01T00:00:00Z\",\"history_offset\":0}\n",
    )
    .unwrap();
    let r = d.cmd_config().args(["--json", "status"]).expect(13);
    let doc = r.json()["apps"].clone();
    assert_eq!(doc[0]["interrupted"], true, "{doc:#}");
    assert_eq!(doc[1]["interrupted"], false, "{doc:#}");
    let error = &r.envelope()["error"];
    assert_eq!(error["kind"], "needs_recovery", "{error:#}");
    assert!(r.one_line_error().contains(": api: the activation"), "{r}");
}

/// `check` names a hook or health program that is missing or not
/// executable (they run as root without $PATH: every activation would fail).
#[test]
fn check_names_programs_that_cannot_run() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.config(
        "web",
        "root = \"{root}\"\n[hooks]\npre_activate = [[\"/bin/true\"]]\n\
         post_swap = [[\"/nonexistent/nginx\", \"-t\"]]\n[health]\ncommand = [\"{base}/etc/web.toml\"]\n",
    );
    let r = d.cmd_config().args(["check", "web"]).expect(1);
    assert!(r.stdout.contains("ok    pre_activate /bin/true"), "{r}");
    assert!(
        r.stdout.contains("FAIL  post_swap /nonexistent/nginx"),
        "{r}"
    );
    assert!(r.stdout.contains("FAIL  health "), "{r}");
    assert!(r.one_line_error().contains("2 check(s) failed"), "{r}");
}

/// `check` is a pre-flight: on a host set up per the README (config in
/// place, ROOT created, nothing staged yet) it passes, says no release is
/// staged yet, and creates nothing.
#[test]
fn check_passes_on_a_fresh_host() {
    let d = Dir::new();
    d.config(
        "web",
        "root = \"{root}\"\n[hooks]\npre_activate = [[\"/bin/true\"]]\n",
    );
    let before = d.tree();
    let r = d.cmd_config().args(["check", "web"]).ok();
    assert!(
        r.stdout
            .contains("ok    releases/: not created yet: no release is staged yet"),
        "{r}"
    );
    assert!(r.stdout.contains("ok    current: none yet"), "{r}");
    assert!(!r.stdout.contains("FAIL"), "{r}");
    before.assert_same(&d.tree(), "check");
}

/// post_swap runs with `current` already on the new release (so `nginx -t`
/// checks the configuration it ships), and its failure rolls back.
#[test]
fn failing_post_swap_hook_rolls_back() {
    // Fails only when current names v2 at the time it runs.
    let check = "[ \"$(readlink \"$RELEASECTL_ROOT/current\")\" != releases/v2 ] || exit 7";
    fails_and_restores(
        &format!("[hooks]\npost_swap = [[\"/bin/sh\", \"-c\", '{check}']]\n"),
        "rolled_back",
        "post_swap",
    );
}

/// A hook that hangs is killed at `hooks.timeout` and the activation rolls
/// back, instead of holding the lock forever.
#[test]
fn hanging_hook_is_killed_at_its_timeout() {
    fails_and_restores(
        "[hooks]\ntimeout = 1\npost_activate = [[\"/bin/sh\", \"-c\", '[ \"$RELEASECTL_RELEASE\" != v2 ] || sleep 60']]\n",
        "rolled_back",
        "timed out",
    );
}

#[test]
fn failing_first_activation_removes_current_again() {
    let d = Dir::new();
    d.releases(&["v1"]);
    d.config(
        "web",
        "root = \"{root}\"\n[health]\ncommand = [\"/bin/false\"]\nretries = 1\n",
    );
    d.cmd_config().args(["activate", "web:v1"]).expect(11);
    assert!(
        d.current().is_none(),
        "current left pointing at a failed release"
    );
    assert!(d.pending().is_none());
    assert_eq!(events(&d), ["rolled_back v1"]);
}

#[test]
fn request_files_name_the_release() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config("web", "root = \"{root}\"\n");
    let requests = d.outside().join("requests");
    std::fs::create_dir(&requests).unwrap();
    let activate = |d: &Dir| {
        let mut c = d.cmd_config();
        c.args(["activate", "--request", "web", "--requests-dir"])
            .arg(&requests);
        c
    };
    std::fs::write(requests.join("web"), "v1\n").unwrap();
    activate(&d).ok();
    assert_eq!(d.assert_current_complete(), "v1");
    // The history says a request file started it.
    assert_eq!(d.history().pop().unwrap()["trigger"], "path");

    // Hostile or odd request files are refused and change nothing.
    let before = d.tree();
    for content in ["../v2\n", "v2\nv1\n", "web:v2\n", ""] {
        std::fs::write(requests.join("web"), content).unwrap();
        let r = activate(&d).expect(2);
        assert!(r.one_line_error().contains("request file"), "{r}");
        let now = d.tree();
        let changed = |t: &common::Tree| t.clone().without("outside/requests/web");
        changed(&before).assert_same(&changed(&now), &format!("request {content:?}"));
    }
    std::fs::remove_file(requests.join("web")).unwrap();
    std::os::unix::fs::symlink(d.outside().join("elsewhere"), requests.join("web")).unwrap();
    activate(&d).expect(2);

    std::fs::remove_file(requests.join("web")).unwrap();
    std::fs::write(requests.join("web"), "v2\n").unwrap();
    activate(&d).ok();
    assert_eq!(d.assert_current_complete(), "v2");
}

#[test]
fn a_request_written_during_an_activation_is_followed() {
    // The watch service is already running when the deployer writes a newer
    // request: systemd does not start it again, so the running activation
    // must notice the change itself.
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    let requests = d.outside().join("requests");
    std::fs::create_dir(&requests).unwrap();
    let req = requests.join("web");
    let hook = format!(
        "[ \"$RELEASECTL_RELEASE\" = v1 ] && echo v2 > {0}.tmp && mv {0}.tmp {0}; exit 0",
        req.display()
    );
    d.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[hooks]\npre_activate = [[\"/bin/sh\", \"-c\", {hook:?}]]\n"
        ),
    );
    std::fs::write(&req, "v1\n").unwrap();
    d.cmd_config()
        .args(["activate", "--request", "web", "--requests-dir"])
        .arg(&requests)
        .ok();
    assert_eq!(d.assert_current_complete(), "v2");
    assert_eq!(events(&d), ["activated v1", "activated v2"]);
}

#[test]
fn a_timed_out_health_check_is_killed_with_its_children() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    // A sleep whose command line is unique to this test run.
    let marker = format!("sleep 29.{}", std::process::id());
    d.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[health]\ncommand = [\"/bin/sh\", \"-c\", \"{marker} >/dev/null 2>&1; true\"]\nretries = 1\ntimeout = 1\n"
        ),
    );
    d.cmd_config()
        .args(["activate", "web:v1", "--no-health"])
        .ok();
    d.cmd_config().args(["activate", "web:v2"]).expect(11);
    assert_eq!(d.assert_current_complete(), "v1");
    // `sleep` is the shell's child (its output redirected, so it cannot keep
    // our pipes open): it must be gone with the shell.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let left = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "health check child still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn request_files_are_judged_by_what_was_opened() {
    // Writers are unprivileged; releasectl runs as root. A hard link to a
    // file they cannot read, or a fifo, must be refused without reading it
    // (and without hanging on the fifo).
    let d = Dir::new();
    d.releases(&["v1"]);
    d.config("web", "root = \"{root}\"\n");
    let requests = d.outside().join("requests");
    std::fs::create_dir(&requests).unwrap();
    let secret = d.outside().join("secret");
    std::fs::write(&secret, "v1\n").unwrap();
    std::fs::hard_link(&secret, requests.join("web")).unwrap();
    let before = d.tree();
    let activate = || {
        let mut c = d.cmd_config();
        c.args(["activate", "--request", "web", "--requests-dir"])
            .arg(&requests);
        c
    };
    let r = activate().expect(2);
    assert!(r.one_line_error().contains("one link"), "{r}");
    std::fs::remove_file(requests.join("web")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(requests.join("web"))
        .status()
        .unwrap();
    assert!(made.success());
    let r = activate().expect(2);
    assert!(r.one_line_error().contains("regular file"), "{r}");
    std::fs::remove_file(requests.join("web")).unwrap();
    before
        .without("outside/requests/web")
        .assert_same(&d.tree(), "refused request files");
}

#[test]
fn request_app_names_accept_systemd_escapes() {
    // deploy-watch@my\x2dapp.service passes the escaped instance as %i.
    let d = Dir::new();
    d.releases(&["v1"]);
    d.config("my-app", "root = \"{root}\"\n");
    let requests = d.outside().join("requests");
    std::fs::create_dir(&requests).unwrap();
    std::fs::write(requests.join("my-app"), "v1\n").unwrap();
    d.cmd_config()
        .args(["activate", "--request", "my\\x2dapp", "--requests-dir"])
        .arg(&requests)
        .ok();
    assert_eq!(d.assert_current_complete(), "v1");
}

/// A committed activation publishes the live release for the app's units
/// in /run/releasectl/apps/APP.env (root's, 0644); releasectl writes
/// nothing into the release itself.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_commit_publishes_the_live_release_in_run() {
    common::require_root("/run/releasectl is root's");
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    // A name of this test's own: /run is shared with every other test.
    let app = format!("envpub{}", std::process::id());
    d.config(&app, "root = \"{root}\"\n");
    let v2 = d.root().join("releases/v2");
    let before = common::Tree::of(&v2);
    d.cmd_config().args(["activate", &format!("{app}:v1")]).ok();
    d.cmd_config().args(["activate", &format!("{app}:v2")]).ok();
    let file = std::path::PathBuf::from(format!("/run/releasectl/apps/{app}.env"));
    let text = std::fs::read_to_string(&file).unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        text,
        format!("RELEASECTL_APP={app}\nRELEASECTL_RELEASE=v2\nRELEASECTL_PREVIOUS=v1\n")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
    before.assert_same(&common::Tree::of(&v2), "the release after its activation");
}

/// An HTTP server on 127.0.0.1 answering every request 200 with `header`
/// (a full header line) and `body`, until the test process ends; its URL.
fn serve_forever(header: &'static str, body: &'static str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/revision.php", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\n{header}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// The `[health]` table of the README's nginx + php-fpm recipe (the TOML
/// block in "Behind nginx" whose `expect` is a list), with `url` pointing
/// at `url`. Its units are not here: this suite has no systemd.
fn readme_php_fpm_gate(url: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let (_, section) = readme.split_once("\n## Behind nginx").unwrap();
    let block = section
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split_once("```").unwrap().0)
        .find(|b| b.contains("expect = ["))
        .expect("the README's nginx + php-fpm recipe (`expect = [...]`)");
    let health: Vec<&str> = block
        .lines()
        .skip_while(|l| *l != "[health]")
        .take_while(|l| *l == "[health]" || !l.starts_with('['))
        .map(|l| if l.starts_with("url = ") { "" } else { l })
        .collect();
    assert!(health.len() > 2, "no [health] in the recipe:\n{block}");
    format!("{}\nurl = \"{url}\"\n", health.join("\n"))
}

/// The README's nginx + php-fpm gate, two markers: an answer carrying only
/// the code's (old nginx workers in front of the new PHP) or only the
/// configuration's rolls the release back (exit 11); both commit.
#[test]
fn every_expect_marker_must_be_in_the_answer() {
    for (header, body, commits) in [
        ("X-Release: config v1;", "code v2;", false),
        ("X-Release: config v2;", "code v1;", false),
        ("X-Release: config v2;", "code v2;", true),
    ] {
        let d = Dir::new();
        d.releases(&["v1", "v2"]);
        let gate = readme_php_fpm_gate(&serve_forever(header, body));
        // The recipe's 20 s would make each failing case wait that long.
        let gate = gate.replace("timeout = 20", "timeout = 1");
        d.config("web", &format!("root = \"{{root}}\"\n{gate}"));
        d.cmd_config()
            .args(["activate", "web:v1", "--no-health"])
            .ok();
        if commits {
            d.cmd_config().args(["activate", "web:v2"]).ok();
            assert_eq!(d.assert_current_complete(), "v2");
            continue;
        }
        let r = d.cmd_config().args(["activate", "web:v2"]).expect(11);
        assert!(r.stderr.contains("answered, but not with"), "{r}");
        assert_eq!(d.assert_current_complete(), "v1", "{header} {body}");
        assert_eq!(events(&d), ["activated v1", "rolled_back v2"]);
    }
}

/// `timeout` bounds the gate, not `retries`: a command that passes only
/// 1.5 s after the first attempt, tried every 0.1 s within 5 s and no
/// `retries`, commits.
#[test]
fn a_slow_start_passes_within_the_timeout() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    let script = "now=$(date +%s%3N); [ -e {base}/t0 ] || echo $now > {base}/t0; \
                  [ $((now - $(cat {base}/t0))) -ge 1500 ]";
    d.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[health]\ncommand = [\"/bin/sh\", \"-c\", \"{script}\"]\n\
             interval = 0.1\ntimeout = 5\n"
        ),
    );
    d.cmd_config().args(["activate", "web:v2"]).ok();
    assert_eq!(d.assert_current_complete(), "v2");
    assert_eq!(events(&d), ["activated v2"]);
}

/// A gate that never passes gives up when `timeout` has passed, saying how
/// many attempts failed in how long.
#[test]
fn a_gate_that_never_passes_says_how_often_it_tried() {
    let d = Dir::new();
    d.releases(&["v1", "v2"]);
    d.config(
        "web",
        "root = \"{root}\"\n[health]\ncommand = [\"/bin/false\"]\ninterval = 0.1\ntimeout = 1\n",
    );
    d.cmd_config()
        .args(["activate", "web:v1", "--no-health"])
        .ok();
    let r = d.cmd_config().args(["activate", "web:v2"]).expect(11);
    assert_eq!(d.assert_current_complete(), "v1");
    let reason = d.history().pop().unwrap()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let n: u32 = reason
        .split("health check failed ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {reason:?}\n{r}"));
    assert!(n > 1, "{reason}");
    assert!(reason.contains(" times in "), "{reason}");
    assert!(r.stderr.contains(&format!("failed {n} times in ")), "{r}");
}
