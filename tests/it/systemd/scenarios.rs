//! The scenarios of the real-systemd suite: what the README claims about
//! running under systemd, lettered in the order they were added (each is a
//! test of its own, listed in `tests/it/systemd.rs`). Each one
//! sets up its own app under /srv/APP, its own units and its own nginx port, and
//! asserts on what systemd, nginx, the `current` link and history.jsonl say
//! afterwards: never on the exit code alone.

use super::fixture::{journal, load_counts, show, wait_settled, App, LOAD_PY, PATIENCE};
use super::nspawn::Container;

/// Scratch space inside the container for test services (not /tmp: the
/// units under test may have a private one).
const SCRATCH: &str = "/var/lib/rctl-test";

/// Before boot: nginx without Debian's default site (scenarios add theirs),
/// the HTTP load client, and the scratch directory.
pub fn prepare(c: &Container) {
    let _ = std::fs::remove_file(c.path("/etc/nginx/sites-enabled/default"));
    c.write("/usr/local/lib/rctl-load.py", LOAD_PY);
    c.write(&format!("{SCRATCH}/.keep"), "");
}

/// Serve /srv/APP/current on 127.0.0.1:PORT (the container has its own
/// network namespace, so the port is ours alone) and make nginx pick it up.
fn nginx_site(c: &Container, app: &str, port: u16) {
    c.write(
        &format!("/etc/nginx/sites-enabled/{app}"),
        format!(
            "server {{\n  listen 127.0.0.1:{port};\n  root /srv/{app}/current;\n  \
             location / {{ default_type text/plain; }}\n}}\n"
        ),
    );
    c.sh("nginx -t -q && systemctl reload-or-restart nginx.service && systemctl is-active nginx.service");
    // A reload only signals a running master, which binds the new `listen`
    // when it gets to it: wait for the port, whichever scenario started
    // nginx first.
    c.wait_for(&format!("nginx to listen on {port}"), PATIENCE, || {
        let listening = c.run(&format!("ss -Hltn 'sport = :{port}' | grep -q LISTEN"));
        match listening.status.success() {
            true => Ok(()),
            false => Err("not listening yet".into()),
        }
    });
}

fn curl(c: &Container, port: u16) -> String {
    c.sh(&format!("curl -fsS http://127.0.0.1:{port}/index.html"))
}

/// A test service: `sleep infinity` whose ExecReload is `reload` (a shell
/// line) and that runs after `systemctl start`.
fn test_service(c: &Container, unit: &str, reload: &str) {
    c.write(
        &format!("/etc/systemd/system/{unit}"),
        format!("[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/sh -c '{reload}'\n"),
    );
    c.sh(&format!(
        "systemctl daemon-reload && systemctl start {unit}"
    ));
}

/// Lines of `journalctl -u UNIT` that contain `needle`.
fn count_in_journal(c: &Container, unit: &str, needle: &str) -> usize {
    journal(c, unit)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

fn event(v: &serde_json::Value) -> (&str, &str, &str) {
    let s = |k: &str| v[k].as_str().unwrap_or("");
    (s("event"), s("from"), s("to"))
}

#[track_caller]
fn assert_contains(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.contains(needle),
        "{what} should mention {needle:?}; it is:\n{haystack}"
    );
}

/// a. nginx serves `current`; `systemctl start deploy@static:v2` switches
/// what it serves, reloads nginx once, and tells the story.
///
/// systemd drops a oneshot's StatusText when it goes inactive, so the status
/// is read while the activation runs: its health check (an HTTP check plus a
/// command that waits for a go file) holds it in place until we have looked.
pub(super) fn a_nginx_switches_release(c: &mut Container) {
    let port = 18080;
    let go = format!("{SCRATCH}/a-go");
    let app = App::create(
        c,
        "static",
        &format!(
            "[services]\nunits = [\"nginx.service\"]\naction = \"reload\"\n\
             [health]\nurl = \"http://127.0.0.1:{port}/index.html\"\n\
             command = [\"/bin/sh\", \"-c\", \"while [ ! -e {go} ]; do sleep 0.1; done\"]\n\
             retries = 1\ntimeout = 600\n"
        ),
        &[
            ("v1", &[("index.html", "hello 1\n")]),
            ("v2", &[("index.html", "hello 2\n")]),
        ],
    );
    app.start_at("v1");
    nginx_site(c, "static", port);
    assert_eq!(curl(c, port), "hello 1");
    let reloads_before = count_in_journal(c, "nginx.service", "Reloaded");
    let unit = "deploy@static:v2.service";

    c.sh(&format!("systemctl start --no-block {unit}"));
    let status = c.wait_for("the activation to reach its health check", PATIENCE, || {
        let status = show(c, unit, "StatusText");
        if status.contains("health") {
            Ok(status)
        } else {
            Err(status)
        }
    });
    assert_contains(&status, "static: v1 → v2", "StatusText");
    assert_eq!(
        curl(c, port),
        "hello 2",
        "swapped and reloaded before health"
    );
    assert!(app.pending_exists(), "not committed before health passes");
    c.write(&go, "");
    assert_eq!(wait_settled(c, unit), ("inactive".into(), "success".into()));

    assert_eq!(curl(c, port), "hello 2");
    assert_eq!(app.current().as_deref(), Some("v2"));
    assert!(!app.pending_exists());
    assert_eq!(event(&app.last_event()), ("activated", "v1", "v2"));
    assert_eq!(
        count_in_journal(c, "nginx.service", "Reloaded"),
        reloads_before + 1,
        "nginx should have been reloaded exactly once"
    );
    let story = journal(c, unit);
    assert_contains(&story, "v1 → v2", "the journal of deploy@static:v2");
    assert_contains(&story, "nginx.service", "the journal of deploy@static:v2");
    assert_contains(&story, "committed", "the journal of deploy@static:v2");
}

/// An app's activations are in the journal by field (the README's
/// "outcomes in the journal"):
/// `journalctl RELEASECTL_APP=APP` lists them with release, previous and
/// outcome fields.
pub(super) fn a2_journal_fields(c: &mut Container) {
    let app = App::create(
        c,
        "fields",
        "",
        &[("v1", &[("a", "1")]), ("v2", &[("a", "2")])],
    );
    app.start_at("v1");
    c.sh("systemctl start deploy@fields:v2");
    c.journal_sync();
    let by_field =
        c.run_text("journalctl --no-pager -o verbose RELEASECTL_APP=fields RELEASECTL_RELEASE=v2");
    assert_contains(
        &by_field,
        "RELEASECTL_PREVIOUS=v1",
        "journalctl RELEASECTL_APP=fields",
    );
    assert_contains(
        &by_field,
        "RELEASECTL_OUTCOME=",
        "journalctl RELEASECTL_APP=fields",
    );
    assert_contains(&by_field, "MESSAGE_ID=", "journalctl RELEASECTL_APP=fields");
    // start_at ran releasectl from a plain shell (stderr not the journal):
    // its outcome is in the app's journal history all the same.
    let direct = c.run_text(
        "journalctl --no-pager -o cat RELEASECTL_APP=fields RELEASECTL_RELEASE=v1 RELEASECTL_OUTCOME=activated",
    );
    assert_contains(
        &direct,
        "fields: (none) → v1: activated",
        "the direct run's journal entry",
    );
}

/// b. The unit's ExecReload fails on v2 (its config is broken): the start
/// fails, `current` is v1 again, and history and journal say why.
pub(super) fn b_failing_reload_rolls_back(c: &mut Container) {
    test_service(
        c,
        "rctl-b.service",
        "grep -qx ok /srv/brokenreload/current/config || \
         { echo \"config of $(readlink /srv/brokenreload/current) is broken\"; exit 1; }",
    );
    let app = App::create(
        c,
        "brokenreload",
        "[services]\nunits = [\"rctl-b.service\"]\n",
        &[
            ("v1", &[("config", "ok\n")]),
            ("v2", &[("config", "broken\n")]),
        ],
    );
    app.start_at("v1");

    c.sh_fails("systemctl start deploy@brokenreload:v2");

    assert_eq!(app.current().as_deref(), Some("v1"));
    assert!(!app.pending_exists());
    let last = app.last_event();
    assert_eq!(event(&last), ("rolled_back", "v1", "v2"));
    let reason = last["reason"].as_str().unwrap_or_default();
    assert_contains(reason, "rctl-b.service", "the rollback reason");
    let unit = "deploy@brokenreload:v2.service";
    assert_eq!(show(c, unit, "Result"), "exit-code");
    assert_eq!(
        show(c, unit, "ExecMainStatus"),
        "11",
        "exit 11: previous release restored"
    );
    let story = journal(c, unit);
    assert_contains(
        &story,
        "rctl-b.service",
        "the journal of the failed activation",
    );
    assert_contains(
        &story,
        "rolling back",
        "the journal of the failed activation",
    );
    // The service itself says why its reload failed, and is still running.
    assert_contains(
        &journal(c, "rctl-b.service"),
        "config of releases/v2 is broken",
        "the journal of rctl-b.service",
    );
    assert_eq!(show(c, "rctl-b.service", "ActiveState"), "active");
}

/// What 127.0.0.1:PORT answers with, trimmed.
fn served(c: &Container, port: u16) -> String {
    c.sh(&format!("curl -sS http://127.0.0.1:{port}/"))
        .trim()
        .to_string()
}

/// Wait until nginx answers `want` on PORT (a reload's new workers take
/// over shortly after the reload job is done). Until then the port may not
/// even be open: nginx's reload only signals the master, which binds a
/// newly configured `listen` when it gets to it.
fn wait_served(c: &Container, port: u16, want: &str) {
    c.wait_for(&format!("nginx to serve {want:?}"), PATIENCE, || {
        let out = c.run(&format!("curl -sS http://127.0.0.1:{port}/"));
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && got == want {
            Ok(got)
        } else {
            Err(format!(
                "{got} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    });
}

/// The README's nginx recipe (the TOML block of its "Behind nginx"
/// section) as it stands, with the URL on `port`: the scenarios that use it
/// prove what operators are told to configure, and follow the README when
/// it changes.
fn readme_nginx_recipe(port: u16) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let (_, section) = readme
        .split_once("\n## Behind nginx")
        .expect("README.md has a \"Behind nginx\" section");
    let (_, block) = section
        .split_once("```toml\n")
        .expect("a ```toml block in the README's \"Behind nginx\" section");
    let (recipe, _) = block.split_once("```").expect("the TOML block ends");
    let url = "url = \"http://127.0.0.1/\"";
    assert!(
        recipe.contains(url),
        "the README's nginx recipe no longer has {url}:\n{recipe}"
    );
    recipe.replace(url, &format!("url = \"http://127.0.0.1:{port}/\""))
}

/// A release's nginx configuration (included from `current`), answering
/// what the README tells a release to answer: its id.
fn nginx_release_site(v: &str) -> String {
    format!("location / {{ default_type text/plain; return 200 \"release {v}\\n\"; }}\n")
}

/// l. A storm of apps sharing one unit (the README's "units shared by
/// several apps"): 16 apps behind one real nginx, each with its own server
/// block including its `current`, configured with the README's nginx
/// recipe (reload of nginx.service, the health gate, the `nginx -t`
/// post_swap hook). All are activated 20 times in parallel, half
/// through `systemctl start deploy@APP:vN`, half through the CLI: all 320
/// activations commit, three storms in a row. Every reload of one app's
/// activation lands on a unit that other apps' reloads keep busy (and
/// systemd merges concurrent reloads into one job). In the same storm one
/// more app's activation genuinely fails (a second unit's reload refuses
/// its release): it is rolled back every time, and it alone.
///
/// The storm can fail: with the wait for a shared unit to settle taken out
/// of `src/systemd`, 6 and 8 of 320 activations were rolled back in two of
/// three storms ("nginx.service is reloading after reload, not active").
/// Each storm's wall time is printed.
pub(super) fn l_sixteen_apps_behind_one_nginx_storm(c: &mut Container) {
    const APPS: u16 = 16;
    const ROUNDS: usize = 20;
    const STORMS: usize = 3;
    const BASE_PORT: u16 = 18100;
    // Zero-padded: no id's answer contains another's ("release v1" is part
    // of "release v10").
    let ids: Vec<String> = (0..=ROUNDS).map(|n| format!("v{n:02}")).collect();
    let sites: Vec<String> = ids.iter().map(|v| nginx_release_site(v)).collect();
    let files: Vec<[(&str, &str); 1]> = sites
        .iter()
        .map(|s| [("nginx/site.conf", s.as_str())])
        .collect();
    let releases: Vec<(&str, &[(&str, &str)])> = ids
        .iter()
        .zip(&files)
        .map(|(v, f)| (v.as_str(), &f[..]))
        .collect();
    let apps: Vec<(String, u16)> = (1..=APPS)
        .map(|n| (format!("storm{n:02}"), BASE_PORT + n))
        .collect();
    let mut servers = String::new();
    for (name, port) in &apps {
        App::create(c, name, &readme_nginx_recipe(*port), &releases).start_at(&ids[0]);
        servers += &format!(
            "server {{\n  listen 127.0.0.1:{port};\n  include /srv/{name}/current/nginx/*.conf;\n}}\n"
        );
    }

    // The app that fails: the same recipe, plus a unit whose reload refuses
    // its v2 (a broken config) and that only this app uses.
    let (bad, bad_port, bad_unit) = ("stormbad", BASE_PORT + APPS + 1, "rctl-storm-bad.service");
    test_service(
        c,
        bad_unit,
        &format!(
            "grep -qx ok /srv/{bad}/current/config || \
             {{ echo \"config of $(readlink /srv/{bad}/current) is broken\"; exit 1; }}"
        ),
    );
    let units = "units = [\"nginx.service\"]";
    let recipe = readme_nginx_recipe(bad_port);
    assert!(recipe.contains(units), "the README's recipe has no {units}");
    let (ok1, ok2) = (nginx_release_site("v1"), nginx_release_site("v2"));
    let bad_app = App::create(
        c,
        bad,
        &recipe.replace(
            units,
            &format!("units = [\"nginx.service\", \"{bad_unit}\"]"),
        ),
        &[
            (
                "v1",
                &[("nginx/site.conf", ok1.as_str()), ("config", "ok\n")],
            ),
            (
                "v2",
                &[("nginx/site.conf", ok2.as_str()), ("config", "broken\n")],
            ),
        ],
    );
    bad_app.start_at("v1");
    servers += &format!(
        "server {{\n  listen 127.0.0.1:{bad_port};\n  include /srv/{bad}/current/nginx/*.conf;\n}}\n"
    );
    c.write("/etc/nginx/sites-enabled/storm", servers);
    c.sh("nginx -t -q && systemctl reload-or-restart nginx.service");
    for (_, port) in &apps {
        wait_served(c, *port, &format!("release {}", ids[0]));
    }
    wait_served(c, bad_port, "release v1");

    // One shell loop per app, all at once. Each line: `APP:ID STATUS`.
    let mut script = String::new();
    for (n, (name, _)) in apps.iter().enumerate() {
        let how = if n % 2 == 0 {
            "systemctl start deploy@"
        } else {
            "releasectl -q activate "
        };
        script += &format!(
            "( for v in {}; do timeout 600 {how}{name}:$v >/dev/null 2>>{SCRATCH}/storm.log; \
               echo \"{name}:$v $?\"; done ) &\n",
            ids[1..].join(" ")
        );
    }
    script += &format!(
        "( for i in $(seq {ROUNDS}); do timeout 600 releasectl -q activate {bad}:v2 \
           >/dev/null 2>>{SCRATCH}/storm-bad.log; echo \"{bad}:v2 $?\"; done ) &\nwait\n"
    );

    let mut problems = Vec::new();
    for storm in 1..=STORMS {
        let before: Vec<(Option<String>, usize)> = apps
            .iter()
            .map(|(name, _)| {
                let app = App::existing(c, name);
                (app.current(), app.history().len())
            })
            .collect();
        let bad_before = bad_app.history().len();
        c.sh(&format!(
            "rm -f {SCRATCH}/storm.log {SCRATCH}/storm-bad.log"
        ));

        let started = std::time::Instant::now();
        let out = c.run(&script);
        let took = started.elapsed();

        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.rsplit_once(' ')).collect();
        let committed = lines
            .iter()
            .filter(|(what, rc)| !what.starts_with(bad) && *rc == "0")
            .count();
        let failed: Vec<&str> = lines
            .iter()
            .filter(|(what, rc)| !what.starts_with(bad) && *rc != "0")
            .map(|(what, _)| *what)
            .collect();
        let rolled_back = lines
            .iter()
            .filter(|(what, rc)| what.starts_with(bad) && *rc == "11")
            .count();
        let mut durations: Vec<u64> = Vec::new();
        let mut mine = |p: String| problems.push(format!("storm {storm}: {p}"));
        if lines.len() != apps.len() * ROUNDS + ROUNDS {
            mine(format!("{} activations reported:\n{text}", lines.len()));
        }
        if !failed.is_empty() {
            let log = c.run_text(&format!("cat {SCRATCH}/storm.log"));
            let journals: String = failed
                .iter()
                .map(|w| format!("--- {w}\n{}", journal(c, &format!("deploy@{w}.service"))))
                .collect();
            mine(format!(
                "did not commit: {failed:?}\n--- CLI stderr\n{log}{journals}"
            ));
        }
        if rolled_back != ROUNDS {
            let log = c.run_text(&format!("cat {SCRATCH}/storm-bad.log"));
            mine(format!(
                "{bad} rolled back (exit 11) {rolled_back} of {ROUNDS} times:\n{text}\n{log}"
            ));
        }

        for (n, ((name, port), (from, len))) in apps.iter().zip(&before).enumerate() {
            let app = App::existing(c, name);
            let history = app.history();
            let new = &history[(*len).min(history.len())..];
            let trigger = if n % 2 == 0 { "unit" } else { "cli" };
            let mut prev = from.clone();
            for (e, want) in new.iter().zip(&ids[1..]) {
                let got = (event(e), e["trigger"].as_str().unwrap_or(""));
                let expected = (
                    ("activated", prev.as_deref().unwrap_or(""), want.as_str()),
                    trigger,
                );
                if got != expected {
                    mine(format!("{name}: history has {e}, not {expected:?}"));
                    break;
                }
                durations.extend(e["duration_ms"].as_u64());
                prev = Some(want.clone());
            }
            if new.len() != ROUNDS {
                mine(format!(
                    "{name}: {} new history entries, not {ROUNDS}",
                    new.len()
                ));
            }
            let last = ids.last().unwrap();
            if app.current().as_ref() != Some(last) {
                mine(format!(
                    "{name}: current is {:?}, not {last}",
                    app.current()
                ));
            }
            let want = format!("release {last}");
            let got = served(c, *port);
            if got != want {
                // A reload's old workers answer a request or two more at
                // most: what is served must settle on the last release.
                wait_served(c, *port, &want);
            }
        }
        let history = bad_app.history();
        let new = &history[bad_before.min(history.len())..];
        let wrong: Vec<_> = new
            .iter()
            .filter(|e| {
                event(e) != ("rolled_back", "v1", "v2")
                    || e["live"] != "v1"
                    || !e["reason"].as_str().unwrap_or("").contains(bad_unit)
            })
            .collect();
        if new.len() != ROUNDS || !wrong.is_empty() {
            mine(format!(
                "{bad}: {} new history entries, unexpected: {wrong:?}",
                new.len()
            ));
        }
        if bad_app.current().as_deref() != Some("v1") {
            mine(format!("{bad}: current is {:?}", bad_app.current()));
        }
        for unit in ["nginx.service", bad_unit] {
            let state = show(c, unit, "ActiveState");
            if state != "active" {
                mine(format!("{unit} is {state}"));
            }
        }
        wait_served(c, bad_port, "release v1");

        durations.sort_unstable();
        let pct = |p: usize| {
            durations
                .get(durations.len() * p / 100)
                .copied()
                .unwrap_or(0)
        };
        eprintln!(
            "l: storm {storm}: {committed}/{} committed, {bad} rolled back {rolled_back}/{ROUNDS}, \
             took {took:.1?}; one activation: median {} ms, p90 {} ms, max {} ms",
            apps.len() * ROUNDS,
            pct(50),
            pct(90),
            durations.last().copied().unwrap_or(0)
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let _ = std::fs::remove_file(c.path("/etc/nginx/sites-enabled/storm"));
    c.sh("systemctl reload nginx.service");
}

/// m. The reload race (the README's "Behind nginx"), with its recipe as it
/// stands (reload of nginx.service, the health gate, `nginx -t` after the
/// swap): each release ships its nginx configuration (included from
/// `current`), and v2's answers 500 on `/`. After `systemctl reload nginx`
/// the old workers answer for a while with the old configuration; a plain
/// 2xx check then passes the broken release. With the gate only the new
/// release's own answer passes: v2 is rolled back 20 times of 20 and nginx
/// serves v1 after each, and the good v3 commits 20 times of 20 (and v1
/// after it, each time). The control, the same recipe without the gate
/// (`expect`, `consecutive`), must commit the broken v2 at least once in
/// 20 tries, or this scenario could not tell.
pub(super) fn m_health_gate_sees_the_new_nginx_config(c: &mut Container) {
    const ROUNDS: usize = 20;
    let port = 18090;
    let bad2 = "location / { default_type text/plain; return 500; }\n# v2\n";
    let (ok1, ok3) = (nginx_release_site("v1"), nginx_release_site("v3"));
    // The README's gate with a shorter budget: a broken release waits out
    // the whole `timeout` before it is rolled back (20 rounds of 20 s would
    // be most of CI), and 3 s is still far above what a reload takes here.
    let recipe = readme_nginx_recipe(port);
    let budget = "timeout = 20 ";
    assert!(
        recipe.contains(budget),
        "the README's gate changed:\n{recipe}"
    );
    let recipe = recipe.replace(budget, "timeout = 3 ");
    let app = App::create(
        c,
        "gate",
        &recipe,
        &[
            ("v1", &[("nginx/site.conf", ok1.as_str())]),
            ("v2", &[("nginx/site.conf", bad2)]),
            ("v3", &[("nginx/site.conf", ok3.as_str())]),
        ],
    );
    app.start_at("v1");
    c.write(
        "/etc/nginx/sites-enabled/gate",
        format!("server {{\n  listen 127.0.0.1:{port};\n  include /srv/gate/current/nginx/*.conf;\n}}\n"),
    );
    c.sh("nginx -t -q && systemctl reload-or-restart nginx.service");
    wait_served(c, port, "release v1");
    for round in 1..=ROUNDS {
        c.sh_fails("releasectl -q activate gate:v2");
        assert_eq!(app.current().as_deref(), Some("v1"), "round {round}");
        let last = app.last_event();
        assert_eq!(event(&last), ("rolled_back", "v1", "v2"), "round {round}");
        // The rollback's reload is done when nginx got the signal; its new
        // workers take over shortly after.
        wait_served(c, port, "release v1");
    }
    eprintln!("m: with the gate, the broken v2 was rolled back {ROUNDS} of {ROUNDS} times");
    // Good releases commit every time. The gate proves the new
    // configuration answers; an old worker may still answer a request or
    // two right after (nginx retires them gracefully), so the test waits
    // for the new answer rather than asserting the first request.
    for round in 1..=ROUNDS {
        for v in ["v3", "v1"] {
            c.sh(&format!("releasectl -q activate gate:{v}"));
            assert_eq!(app.current().as_deref(), Some(v), "round {round}");
            assert_eq!(event(&app.last_event()).0, "activated", "round {round}");
            let want = format!("release {v}");
            wait_served(c, port, &want);
        }
    }
    eprintln!("m: with the gate, the good v3 committed {ROUNDS} of {ROUNDS} times");
    // Control: the same recipe without the gate, a plain 2xx check,
    // commits the broken v2 (most of the time when this was written): the
    // gate is what catches it.
    let plain: Vec<&str> = recipe
        .lines()
        .filter(|l| !l.starts_with("expect") && !l.starts_with("consecutive"))
        .collect();
    assert_eq!(
        plain.len() + 2,
        recipe.lines().count(),
        "the README's recipe should have one `expect` and one `consecutive`:\n{recipe}"
    );
    c.write(
        "/etc/releasectl/gate.toml",
        format!("root = \"/srv/gate\"\n{}\n", plain.join("\n")),
    );
    let mut committed = 0;
    for _ in 0..ROUNDS {
        let out = c.run("releasectl -q activate gate:v2");
        if out.status.success() {
            committed += 1;
            c.sh("releasectl -q activate gate:v1 --no-health");
        }
        wait_served(c, port, "release v1");
    }
    eprintln!("m: control without the gate: the broken v2 committed {committed} of {ROUNDS} times");
    assert!(
        committed > 0,
        "the control never committed v2: the scenario cannot tell"
    );
    let _ = std::fs::remove_file(c.path("/etc/nginx/sites-enabled/gate"));
    c.sh("systemctl reload nginx.service");
}

/// n. `post_swap = [["/usr/sbin/nginx", "-t", "-q"]]` under deploy@ (its
/// sandbox): nginx tests the configuration `current` now ships, including
/// a `listen` on port 80. A release shipping a broken configuration is
/// refused by the hook and rolled back before any reload (nginx's reload
/// count does not move); a good one passes the same hook under the unit.
pub(super) fn n_nginx_t_post_swap_under_the_unit(c: &mut Container) {
    let ok = |v: &str| {
        format!("location / {{ default_type text/plain; return 200 \"release {v}\\n\"; }}\n")
    };
    let (ok1, ok3) = (ok("v1"), ok("v3"));
    let app = App::create(
        c,
        "ngt",
        "[services]\nunits = [\"nginx.service\"]\naction = \"reload\"\n\
         [health]\nurl = \"http://127.0.0.1:80/\"\nexpect = \"release {release}\"\n\
         interval = 0.1\ntimeout = 20\n\
         [hooks]\npost_swap = [[\"/usr/sbin/nginx\", \"-t\", \"-q\"]]\n",
        &[
            ("v1", &[("nginx/site.conf", ok1.as_str())]),
            (
                "v2",
                &[("nginx/site.conf", "this is not nginx configuration;\n")],
            ),
            ("v3", &[("nginx/site.conf", ok3.as_str())]),
        ],
    );
    app.start_at("v1");
    c.write(
        "/etc/nginx/sites-enabled/ngt",
        "server {\n  listen 127.0.0.1:80;\n  include /srv/ngt/current/nginx/*.conf;\n}\n",
    );
    c.sh("nginx -t -q && systemctl reload-or-restart nginx.service");
    let reloads = || count_in_journal(c, "nginx.service", "Reloaded");
    let before = reloads();

    c.sh_fails("systemctl start deploy@ngt:v2");
    assert_eq!(app.current().as_deref(), Some("v1"));
    let last = app.last_event();
    assert_eq!(event(&last), ("rolled_back", "v1", "v2"));
    assert_contains(
        last["reason"].as_str().unwrap_or_default(),
        "post_swap",
        "the rollback reason",
    );
    assert_eq!(
        reloads(),
        before,
        "nginx was reloaded for a refused release"
    );
    assert_eq!(show(c, "nginx.service", "ActiveState"), "active");

    c.sh("systemctl start deploy@ngt:v3");
    assert_eq!(app.current().as_deref(), Some("v3"));
    assert_eq!(event(&app.last_event()), ("activated", "v1", "v3"));
    assert!(reloads() > before, "v3 was not reloaded");
    let story = journal(c, "deploy@ngt:v3.service");
    assert!(
        !story.contains("Permission denied") && !story.contains("Operation not permitted"),
        "nginx -t was refused something under the unit:\n{story}"
    );
    let _ = std::fs::remove_file(c.path("/etc/nginx/sites-enabled/ngt"));
    c.sh("systemctl reload nginx.service");
}

/// p. The README's nginx recipe on a new host: nginx cannot run before a
/// release is current (its site includes `current/nginx/site.conf`), so the
/// first deploy finds it stopped, or failed. `check` is the pre-flight: it
/// passes with nginx stopped and nothing staged ("will be started on the
/// first activation"), and names nginx once it has failed. The first
/// deploy then starts nginx instead of reloading it, commits, and nginx
/// serves the release.
pub(super) fn p_nginx_recipe_first_deploy_starts_nginx(c: &mut Container) {
    let port = 18097;
    let recipe = readme_nginx_recipe(port);
    c.sh("mkdir -p /srv/first");
    c.write(
        "/etc/releasectl/first.toml",
        format!("root = \"/srv/first\"\n{recipe}"),
    );
    c.write(
        &format!("{SCRATCH}/p-v1/nginx/site.conf"),
        nginx_release_site("v1"),
    );
    c.write(
        "/etc/nginx/sites-enabled/first",
        format!(
            "server {{\n  listen 127.0.0.1:{port};\n  include /srv/first/current/nginx/site.conf;\n}}\n"
        ),
    );
    c.sh("systemctl stop nginx.service");

    let fresh = c.sh("releasectl check first");
    assert_contains(&fresh, "no release is staged yet", "check on a fresh host");
    assert_contains(
        &fresh,
        "unit nginx.service: inactive: will be started on the first activation",
        "check on a fresh host",
    );

    // What boot does with this site before any release: nginx fails.
    c.sh_fails("systemctl start nginx.service");
    assert_eq!(show(c, "nginx.service", "ActiveState"), "failed");
    let (_, failed) = c.sh_fails("releasectl check first");
    assert_contains(
        &failed,
        "FAIL  unit nginx.service: nginx.service is failed",
        "check with nginx failed",
    );

    c.sh(&format!(
        "releasectl deploy --app first {SCRATCH}/p-v1 --id v1"
    ));
    let app = App::existing(c, "first");
    assert_eq!(app.current().as_deref(), Some("v1"));
    assert_eq!(event(&app.last_event()), ("activated", "", "v1"));
    assert_eq!(show(c, "nginx.service", "ActiveState"), "active");
    wait_served(c, port, "release v1");

    let _ = std::fs::remove_file(c.path("/etc/nginx/sites-enabled/first"));
    c.sh("systemctl reload nginx.service");
}

/// q. The shipped `releasectl-prune@.timer` is enabled per app and its
/// service prunes that app to its `keep` under the units' sandbox.
pub(super) fn q_prune_timer_prunes_an_app(c: &mut Container) {
    let app = App::create(
        c,
        "pruned",
        "keep = 1\n",
        &[
            ("v1", &[("a", "1")]),
            ("v2", &[("a", "2")]),
            ("v3", &[("a", "3")]),
        ],
    );
    for v in ["v1", "v2", "v3"] {
        app.start_at(v);
    }
    c.sh("systemctl enable --now releasectl-prune@pruned.timer");
    assert_eq!(
        show(c, "releasectl-prune@pruned.timer", "ActiveState"),
        "active"
    );
    c.sh("systemctl start releasectl-prune@pruned.service");
    assert_eq!(
        show(c, "releasectl-prune@pruned.service", "Result"),
        "success"
    );
    let left = c.sh("ls /srv/pruned/releases");
    assert_eq!(left.split_whitespace().collect::<Vec<_>>(), ["v2", "v3"]);
    assert_eq!(app.current().as_deref(), Some("v3"));
    c.sh("systemctl disable --now releasectl-prune@pruned.timer");
}

/// c. v2 fails its health check: rollback, and the service is reloaded again
/// while `current` points at v1 (its ExecReload logs what it saw).
pub(super) fn c_failing_health_reloads_old_release(c: &mut Container) {
    let log = format!("{SCRATCH}/c-reloads");
    test_service(
        c,
        "rctl-c.service",
        &format!("readlink /srv/unhealthy/current >> {log}"),
    );
    let app = App::create(
        c,
        "unhealthy",
        "[services]\nunits = [\"rctl-c.service\"]\n\
         [health]\ncommand = [\"/bin/sh\", \"-c\", \"test -e healthy\"]\n\
         retries = 2\ninterval = 1\ntimeout = 30\n",
        &[("v1", &[("healthy", "")]), ("v2", &[("sick", "")])],
    );
    app.start_at("v1");

    c.sh_fails("systemctl start deploy@unhealthy:v2");

    assert_eq!(app.current().as_deref(), Some("v1"));
    assert_eq!(
        c.sh(&format!("cat {log}")),
        "releases/v2\nreleases/v1",
        "reloaded once on v2, then once more on v1 by the rollback"
    );
    let last = app.last_event();
    assert_eq!(event(&last), ("rolled_back", "v1", "v2"));
    assert_contains(
        last["reason"].as_str().unwrap_or_default(),
        "health",
        "the rollback reason",
    );
    assert_contains(
        &journal(c, "deploy@unhealthy:v2.service"),
        "health",
        "the journal of deploy@unhealthy:v2",
    );
}

/// d. `systemctl stop` while the health check hangs: SIGTERM, and the
/// rollback still completes.
pub(super) fn d_stop_during_health_check_rolls_back(c: &mut Container) {
    let app = App::create(
        c,
        "slowhealth",
        "[health]\ncommand = [\"/bin/sleep\", \"600\"]\nretries = 1\ntimeout = 900\n",
        &[("v1", &[("a", "1")]), ("v2", &[("a", "2")])],
    );
    app.start_at("v1");
    let unit = "deploy@slowhealth:v2.service";

    c.sh(&format!("systemctl start --no-block {unit}"));
    c.wait_for("the health check to be running", PATIENCE, || {
        let status = show(c, unit, "StatusText");
        if status.contains("health") {
            Ok(())
        } else {
            Err(status)
        }
    });
    assert_eq!(
        app.current().as_deref(),
        Some("v2"),
        "swapped before health"
    );
    assert!(app.pending_exists());

    c.sh(&format!("systemctl stop {unit}"));

    assert_eq!(app.current().as_deref(), Some("v1"));
    assert!(!app.pending_exists());
    let last = app.last_event();
    assert_eq!(event(&last), ("rolled_back", "v1", "v2"));
    assert_contains(
        last["reason"].as_str().unwrap_or_default(),
        "SIGTERM",
        "the rollback reason",
    );
}

/// e. An unprivileged member of group `releasectl` drops a request file
/// (temp file + rename): the path unit activates it. A request for a missing
/// or invalid release fails the watch service with a clear line and changes
/// nothing.
pub(super) fn e_path_unit_activates_requests(c: &mut Container) {
    let app = App::create(
        c,
        "watched",
        "",
        &[("v1", &[("a", "1")]), ("v2", &[("a", "2")])],
    );
    app.start_at("v1");
    c.sh("getent group releasectl");
    c.sh("useradd --no-create-home --groups releasectl rctl-ci");
    let watch = "deploy-watch@watched.service";
    c.sh("systemctl start deploy-watch@watched.path");
    assert_eq!(
        show(c, "deploy-watch@watched.path", "ActiveState"),
        "active"
    );

    // Being in the group lets the user request, not activate directly.
    c.sh_fails("runuser -u rctl-ci -- releasectl activate watched:v2");
    assert_eq!(app.current().as_deref(), Some("v1"));

    let request = |id: &str| {
        let before = show(c, watch, "InvocationID");
        c.sh(&format!(
            "cd /var/lib/releasectl/requests && runuser -u rctl-ci -- \
             sh -c 'printf \"%s\\n\" \"{id}\" > .watched.new && mv .watched.new watched'"
        ));
        c.wait_for(&format!("{watch} to run for {id:?}"), PATIENCE, || {
            let (state, result) = wait_settled(c, watch);
            let now = show(c, watch, "InvocationID");
            if now != before && !now.is_empty() {
                Ok((state, result, now))
            } else {
                Err(format!("{state}/{result}, invocation {now:?}"))
            }
        })
    };

    let (_, result, _) = request("v2");
    assert_eq!(result, "success");
    assert_eq!(app.current().as_deref(), Some("v2"));
    assert_eq!(event(&app.last_event()), ("activated", "v1", "v2"));
    let events = app.history().len();

    for (bad, needle) in [("v9", "v9"), ("../../etc", "etc")] {
        c.sh(&format!("systemctl reset-failed {watch} || true"));
        let (state, result, invocation) = request(bad);
        assert_eq!((state.as_str(), result.as_str()), ("failed", "exit-code"));
        c.journal_sync();
        let lines = c.run_text(&format!(
            "journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}"
        ));
        assert_contains(
            &lines,
            needle,
            &format!("the journal of the request {bad:?}"),
        );
        assert_eq!(
            app.current().as_deref(),
            Some("v2"),
            "{bad:?} changed current"
        );
        assert_eq!(app.history().len(), events, "{bad:?} changed history");
    }
}

/// o. The unprivileged path, as README's recipe sets it up: ROOT is root's,
/// `releases/` is root:releasectl 3775. A member of group `releasectl`
/// stages releases, asks for them with `request --wait` (and gets the
/// outcome and the exit status, which the journal would not give it), and
/// starts and stops `deploy@` through the polkit rule; a user outside the
/// group is refused at each of these steps, and changes nothing.
pub(super) fn o_unprivileged_member_stages_requests_and_starts(c: &mut Container) {
    let app = App::create(
        c,
        "unpriv",
        "[health]\ncommand = [\"/bin/sh\", \"-c\", \"case $RELEASECTL_RELEASE in bad) exit 1;; slow) sleep 60;; esac\"]\nretries = 1\ntimeout = 90\n",
        &[("v1", &[("version", "v1")])],
    );
    app.start_at("v1");
    let root = app.root();
    c.sh(&format!(
        "chown root:root {root} && chmod 0755 {root} && \
         chown root:releasectl {root}/releases && chmod 3775 {root}/releases"
    ));
    c.sh("useradd --no-create-home --groups releasectl rctl-dev && useradd --no-create-home rctl-out");
    c.sh("systemctl start deploy-watch@unpriv.path");
    // A build tree each user may read.
    let build = format!("{SCRATCH}/unpriv-build");
    c.sh(&format!(
        "mkdir -p {build} && echo built > {build}/version && chmod -R a+rX {build}"
    ));
    let as_user = |user: &str, cmd: &str| {
        let out = c.run(&format!("runuser -u {user} -- {cmd}"));
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    // The member stages releases: no root needed.
    for id in ["good", "bad", "slow"] {
        let (code, _, err) = as_user(
            "rctl-dev",
            &format!("releasectl stage --app unpriv {build} --id {id}"),
        );
        assert_eq!(code, Some(0), "member stages {id}: {err}");
    }
    assert_eq!(
        c.sh(&format!("stat -c %U {root}/releases/good")),
        "rctl-dev"
    );

    // request --wait: the outcome and the activation's exit status.
    let (code, out, err) = as_user("rctl-dev", "releasectl request unpriv:good --wait");
    assert_eq!(code, Some(0), "request good: {out} {err}");
    assert_eq!(out, "unpriv: good activated (previous: v1)");
    assert_eq!(app.current().as_deref(), Some("good"));
    let (code, out, err) = as_user(
        "rctl-dev",
        "releasectl --json request unpriv:bad --wait --timeout 120",
    );
    assert_eq!(code, Some(11), "request bad: {out} {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["result"]["outcome"], "rolled_back", "{doc}");
    assert_eq!(doc["result"]["exit_code"], 11);
    assert_eq!(doc["exit_code"], 11);
    assert_eq!(doc["error"]["kind"], "activation_failed", "{doc}");
    assert_contains(&err, "health check failed", "the error line of request bad");
    assert_eq!(app.current().as_deref(), Some("good"));
    // One request, one activation: `request` closes its write handle before
    // the rename, so its exit does not fire PathChanged= a second time
    // (time for a second start of the watcher to show, had it fired).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let runs = |to: &str| {
        app.history()
            .iter()
            .filter(|e| e["to"] == to && e["event"] != "requested")
            .count()
    };
    assert_eq!(
        runs("bad"),
        1,
        "history after one request of bad: {:#?}",
        app.history()
    );
    assert_eq!(
        runs("good"),
        1,
        "history after one request of good: {:#?}",
        app.history()
    );
    assert_eq!(app.current().as_deref(), Some("good"));
    // The member reads the state root keeps, without root.
    let (code, out, err) = as_user("rctl-dev", "releasectl status unpriv");
    assert_eq!(code, Some(0), "status: {err}");
    assert_contains(&out, "good", "status as a member");

    // systemctl start/stop of deploy@ through the polkit rule.
    let (code, _, err) = as_user("rctl-dev", "systemctl start deploy@unpriv:v1");
    assert_eq!(code, Some(0), "member starts deploy@unpriv:v1: {err}");
    assert_eq!(app.current().as_deref(), Some("v1"));
    let (code, _, _) = as_user("rctl-dev", "systemctl start deploy@unpriv:bad");
    assert_ne!(code, Some(0), "a failing activation fails systemctl start");
    assert_eq!(app.current().as_deref(), Some("v1"));
    // Stopping a running activation rolls it back.
    let (code, _, err) = as_user("rctl-dev", "systemctl start --no-block deploy@unpriv:slow");
    assert_eq!(code, Some(0), "member starts deploy@unpriv:slow: {err}");
    c.wait_for(
        "the slow release to be swapped in",
        PATIENCE,
        || match app.current().as_deref() {
            Some("slow") => Ok(()),
            other => Err(format!("current {other:?}")),
        },
    );
    let (code, _, err) = as_user("rctl-dev", "systemctl stop deploy@unpriv:slow");
    assert_eq!(code, Some(0), "member stops deploy@unpriv:slow: {err}");
    assert_eq!(app.current().as_deref(), Some("v1"));
    assert_eq!(
        event(&app.last_event()),
        ("rolled_back", "v1", "slow"),
        "the stop rolled the activation back"
    );
    // Nothing else: other verbs and other units still need root.
    for cmd in [
        "systemctl restart deploy@unpriv:v1",
        "systemctl start releasectl-recover.service",
        "systemctl start deploy-watch@unpriv.service",
        "systemctl stop deploy-watch@unpriv.path",
    ] {
        let (code, _, err) = as_user("rctl-dev", cmd);
        assert_ne!(code, Some(0), "member may not `{cmd}`");
        assert_contains(
            &err.to_lowercase(),
            "auth",
            &format!("the refusal of `{cmd}`"),
        );
    }
    assert_eq!(show(c, "deploy-watch@unpriv.path", "ActiveState"), "active");

    // Outside the group: refused everywhere, nothing changes.
    let history = app.history().len();
    let releases = c.sh(&format!("ls {root}/releases"));
    for (cmd, needle) in [
        (
            format!("releasectl stage --app unpriv {build} --id out"),
            format!("{root}/releases"),
        ),
        (
            "releasectl request unpriv:good".to_string(),
            "/var/lib/releasectl/requests".to_string(),
        ),
        (
            "releasectl request unpriv:good --wait".to_string(),
            "/var/lib/releasectl/results".to_string(),
        ),
    ] {
        let (code, out, err) = as_user("rctl-out", &cmd);
        assert_eq!(code, Some(1), "non-member `{cmd}`: {out} {err}");
        assert_contains(&err, &needle, &format!("the refusal of `{cmd}`"));
        assert_contains(
            &err,
            "Permission denied",
            &format!("the refusal of `{cmd}`"),
        );
    }
    let (code, _, err) = as_user("rctl-out", "systemctl start deploy@unpriv:good");
    assert_ne!(code, Some(0), "non-member starts deploy@: {err}");
    assert_eq!(app.current().as_deref(), Some("v1"));
    assert_eq!(c.sh(&format!("ls {root}/releases")), releases);
    assert_eq!(app.history().len(), history);
    c.sh("systemctl stop deploy-watch@unpriv.path");

    // The rule judged directly with pkcheck, with the details each systemd
    // version sends (see the comment in units/releasectl.rules): a plain
    // start/stop of deploy@ (unit, verb, the job's polkit.message) is
    // allowed for a member; a transient unit of that name (systemd >= 257:
    // unit, verb start, the transient message; before: no details), unit
    // and verb without a message, other verbs and other units are refused;
    // nothing at all for a non-member.
    let start = "Authentication is required to start '$(unit)'.";
    let stop = "Authentication is required to stop '$(unit)'.";
    let transient = "Authentication is required to start transient unit '$(unit)'.";
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: &[Case] = &[
        (
            "plain start",
            &[
                ("unit", "deploy@x.service"),
                ("verb", "start"),
                ("polkit.message", start),
                ("polkit.gettext_domain", "systemd"),
            ],
            true,
        ),
        (
            "plain stop",
            &[
                ("unit", "deploy@x.service"),
                ("verb", "stop"),
                ("polkit.message", stop),
                ("polkit.gettext_domain", "systemd"),
            ],
            true,
        ),
        (
            "transient start (>= 257)",
            &[
                ("unit", "deploy@x.service"),
                ("verb", "start"),
                ("polkit.message", transient),
                ("polkit.gettext_domain", "systemd"),
            ],
            false,
        ),
        ("transient start (< 257)", &[], false),
        (
            "unit and verb alone",
            &[("unit", "deploy@x.service"), ("verb", "start")],
            false,
        ),
        (
            "stop with the start message",
            &[
                ("unit", "deploy@x.service"),
                ("verb", "stop"),
                ("polkit.message", start),
            ],
            false,
        ),
        (
            "restart of deploy@",
            &[
                ("unit", "deploy@x.service"),
                ("verb", "restart"),
                (
                    "polkit.message",
                    "Authentication is required to restart '$(unit)'.",
                ),
            ],
            false,
        ),
        (
            "start of another unit",
            &[
                ("unit", "ssh.service"),
                ("verb", "start"),
                ("polkit.message", start),
            ],
            false,
        ),
        (
            "stop of another unit",
            &[
                ("unit", "deploy-watch@x.path"),
                ("verb", "stop"),
                ("polkit.message", stop),
            ],
            false,
        ),
        (
            "restart of another unit",
            &[
                ("unit", "nginx.service"),
                ("verb", "restart"),
                (
                    "polkit.message",
                    "Authentication is required to restart '$(unit)'.",
                ),
            ],
            false,
        ),
    ];
    for user in ["rctl-dev", "rctl-out"] {
        for (what, details, allowed) in cases {
            let args: String = details
                .iter()
                // Single-quoted: the messages hold `$(unit)` and quotes.
                .map(|(k, v)| format!(" --detail {k} '{}'", v.replace('\'', "'\\''")))
                .collect();
            let out = c.run_text(&format!(
                "setpriv --reuid=$(id -u {user}) --regid=$(id -g {user}) --init-groups sleep 30 & pid=$!; \
                 sleep 0.2; pkcheck --action-id org.freedesktop.systemd1.manage-units \
                 --process $pid{args} >/dev/null 2>&1; echo $?; kill $pid"
            ));
            let granted = out.lines().next().map(str::trim) == Some("0");
            let want = *allowed && user == "rctl-dev";
            assert_eq!(granted, want, "pkcheck {what} as {user}: exit {out:?}");
        }
    }

    // Control: without the rule, the member's start needs authentication
    // too (polkitd notices the removal by itself).
    let rule = "/usr/share/polkit-1/rules.d/50-releasectl.rules";
    c.sh(&format!("mv {rule} {SCRATCH}/rule.off"));
    let refused = c.wait_for("polkitd to drop the rule", PATIENCE, || {
        match as_user("rctl-dev", "systemctl start deploy@unpriv:good") {
            (Some(0), ..) => Err("still allowed".to_string()),
            (_, _, err) => Ok(err),
        }
    });
    c.sh(&format!("mv {SCRATCH}/rule.off {rule}"));
    assert_contains(&refused, "authentication", "the refusal without the rule");
    assert_eq!(app.current().as_deref(), Some("v1"));
}

/// f. Two instances started at the same instant: the flock serialises them
/// (a pre_activate hook would see a second holder), and the final state is
/// the one history names last.
pub(super) fn f_simultaneous_starts_are_serialised(c: &mut Container) {
    let app = App::create(
        c,
        "race",
        "[hooks]\npre_activate = [[\"/bin/sh\", \"-c\", \
         \"mkdir \\\"$RELEASECTL_ROOT/.inside\\\" || exit 99; sleep 1; rmdir \\\"$RELEASECTL_ROOT/.inside\\\"\"]]\n",
        &[("v1", &[("a", "1")]), ("v2", &[("a", "2")]), ("v3", &[("a", "3")])],
    );
    app.start_at("v1");

    c.sh("systemctl start --no-block deploy@race:v2 deploy@race:v3");
    for unit in ["deploy@race:v2.service", "deploy@race:v3.service"] {
        assert_eq!(wait_settled(c, unit).1, "success", "{unit}");
    }

    let history = app.history();
    let [.., first, second] = history.as_slice() else {
        panic!("history too short: {history:?}")
    };
    let (e1, _, to1) = event(first);
    let (e2, from2, to2) = event(second);
    assert_eq!((e1, e2), ("activated", "activated"), "{history:?}");
    assert_eq!(
        from2, to1,
        "the second activation saw the first one's result"
    );
    assert_ne!(to1, to2);
    assert_eq!(app.current().as_deref(), Some(to2));
}

/// g. `action = "restart"` on a Type=notify service: a new invocation, which
/// became ready on the new release before `systemctl start` returned.
pub(super) fn g_restart_of_notify_service(c: &mut Container) {
    c.write(
        "/usr/local/bin/rctl-notify-svc",
        "#!/usr/bin/python3\n\
         import os, socket, time\n\
         time.sleep(1)  # not ready at once: releasectl must wait for READY=1\n\
         addr = os.environ['NOTIFY_SOCKET']\n\
         addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         msg = 'READY=1\\nSTATUS=serving ' + os.readlink('/srv/notify/current')\n\
         s.sendto(msg.encode(), addr)\n\
         while True:\n    time.sleep(3600)\n",
    );
    c.sh("chmod 755 /usr/local/bin/rctl-notify-svc");
    c.write(
        "/etc/systemd/system/rctl-g.service",
        "[Service]\nType=notify\nNotifyAccess=all\nExecStart=/usr/local/bin/rctl-notify-svc\n",
    );
    let app = App::create(
        c,
        "notify",
        "[services]\nunits = [\"rctl-g.service\"]\naction = \"restart\"\n",
        &[("v1", &[("a", "1")]), ("v2", &[("a", "2")])],
    );
    app.start_at("v1");
    c.sh("systemctl daemon-reload && systemctl start rctl-g.service");
    assert_eq!(
        show(c, "rctl-g.service", "StatusText"),
        "serving releases/v1"
    );
    let before = show(c, "rctl-g.service", "InvocationID");

    c.sh("systemctl start deploy@notify:v2");

    assert_ne!(show(c, "rctl-g.service", "InvocationID"), before);
    assert_eq!(show(c, "rctl-g.service", "ActiveState"), "active");
    assert_eq!(
        show(c, "rctl-g.service", "StatusText"),
        "serving releases/v2"
    );
    assert_eq!(event(&app.last_event()), ("activated", "v1", "v2"));
}

/// h. Zero downtime: HTTP load on nginx while 100 activations alternate two
/// releases with reloads: no failed request. The same load against
/// `rm -f current && ln -s` swaps does see failures, which proves the load
/// can see a gap.
pub(super) fn h_zero_downtime_under_load(c: &mut Container) {
    let port = 18081;
    let app = App::create(
        c,
        "zd",
        "[services]\nunits = [\"nginx.service\"]\naction = \"reload\"\n",
        &[
            ("v1", &[("index.html", "hello 1\n")]),
            ("v2", &[("index.html", "hello 2\n")]),
        ],
    );
    app.start_at("v1");
    nginx_site(c, "zd", port);
    c.write(&format!("{SCRATCH}/zd-good"), "hello 1\nhello 2\n");

    let under_load = |swaps: &str| -> (u64, u64) {
        let stop = format!("{SCRATCH}/zd-stop");
        c.sh(&format!("rm -f {stop}"));
        let load = c.spawn(&format!(
            "exec python3 /usr/local/lib/rctl-load.py http://127.0.0.1:{port}/index.html \
             {stop} {SCRATCH}/zd-good 2000000 900"
        ));
        let swapped = c.run(swaps);
        c.sh(&format!("touch {stop}"));
        let out = load.wait_with_output().expect("load client");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            swapped.status.success(),
            "swaps failed: {}",
            String::from_utf8_lossy(&swapped.stderr)
        );
        assert!(
            out.status.success(),
            "load client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("h: {text}");
        load_counts(&text)
    };

    let reloads_before = count_in_journal(c, "nginx.service", "Reloaded");
    let events_before = app.history().len();
    let (requests, failures) = under_load(
        "for i in $(seq 50); do \
           systemctl start deploy@zd:v2 && systemctl start deploy@zd:v1 || exit 1; done",
    );
    eprintln!("h: releasectl: 100 activations, {requests} requests, {failures} failed");
    assert_eq!(app.history().len() - events_before, 100);
    assert!(count_in_journal(c, "nginx.service", "Reloaded") >= reloads_before + 100);
    assert!(requests > 0);
    assert_eq!(failures, 0, "requests failed during releasectl activations");

    let (requests, failures) = under_load(
        "cd /srv/zd && for i in $(seq 1000); do \
           rm -f current && ln -s releases/v2 current; \
           rm -f current && ln -s releases/v1 current; done",
    );
    eprintln!("h: rm + ln -s baseline: 2000 swaps, {requests} requests, {failures} failed");
    assert!(
        failures > 0,
        "the baseline shows no gap: the load cannot see one"
    );
}

/// i. An activation is SIGKILLed mid-flight (in a slow post_activate hook,
/// after the swap); releasectl-recover.service restores `from` and records it.
pub(super) fn i_killed_activation_is_recovered(c: &mut Container) {
    let app = App::create(
        c,
        "crash",
        "",
        &[("v1", &[("a", "1")]), ("v2", &[("a", "2")])],
    );
    app.start_at("v1");
    c.write(
        "/etc/releasectl/crash.toml",
        "root = \"/srv/crash\"\n[hooks]\npost_activate = [[\"/bin/sleep\", \"600\"]]\n",
    );
    let unit = "deploy@crash:v2.service";

    c.sh(&format!("systemctl start --no-block {unit}"));
    c.wait_for("the post_activate hook to be running", PATIENCE, || {
        let status = show(c, unit, "StatusText");
        if status.contains("post_activate") {
            Ok(())
        } else {
            Err(status)
        }
    });
    c.sh(&format!("systemctl kill --signal=SIGKILL {unit}"));
    let (state, result) = wait_settled(c, unit);
    assert_eq!((state.as_str(), result.as_str()), ("failed", "signal"));
    assert_eq!(
        app.current().as_deref(),
        Some("v2"),
        "killed after the swap"
    );
    assert!(app.pending_exists(), "the intent record survives the kill");

    c.sh("systemctl start releasectl-recover.service");

    assert_eq!(app.current().as_deref(), Some("v1"));
    assert!(!app.pending_exists());
    let last = app.last_event();
    assert_eq!(event(&last), ("recovered", "v1", "v2"));
    assert_contains(
        &journal(c, "releasectl-recover.service"),
        "crash",
        "the journal of releasectl-recover.service",
    );
}

/// j. A power cut mid-activation (every process of the machine killed at
/// once, after the swap), then a real boot: the enabled
/// releasectl-recover.service puts `from` back before anything else runs.
/// For a blue/green app cut once its front named the new instance, it also
/// puts the front back on the restored release's slot before nginx and the
/// (enabled) instances start, as the README says.
pub(super) fn j_power_cut_then_boot_recovers(c: &mut Container) {
    {
        let app = App::create(
            c,
            "powercut",
            "",
            &[("v1", &[("a", "1")]), ("v2", &[("a", "2")])],
        );
        app.start_at("v1");
        c.write(
            "/etc/releasectl/powercut.toml",
            "root = \"/srv/powercut\"\n[hooks]\npost_activate = [[\"/bin/sleep\", \"600\"]]\n",
        );
        c.sh("systemctl enable releasectl-recover.service");
        // A blue/green app cut while its front names the new instance.
        handover_setup(c);
        c.sh("printf '[hooks]\\npost_activate = [[\"/bin/sleep\", \"600\"]]\\n' >> /etc/releasectl/bg.toml");
        c.sh("systemctl enable nginx.service bg@blue.service bg@green.service");
        c.sh("systemctl start --no-block deploy@bg:v1.service");
        let unit = "deploy@powercut:v2.service";
        c.sh(&format!("systemctl start --no-block {unit}"));
        c.wait_for("the post_activate hook to be running", PATIENCE, || {
            let status = show(c, unit, "StatusText");
            if status.contains("post_activate") {
                Ok(())
            } else {
                Err(status)
            }
        });
        assert_eq!(app.current().as_deref(), Some("v2"));
        c.wait_for("bg's front to name v1's instance", PATIENCE, || {
            let status = show(c, "deploy@bg:v1.service", "StatusText");
            match status.contains("post_activate") {
                true => Ok(()),
                false => Err(status),
            }
        });
        assert_eq!(blue_green_state(c).1, "server 127.0.0.1:9411;");
    }

    c.power_cut();
    // Seen from outside, on the overlay: the cut left the new release current
    // and the intent record in place.
    let link = std::fs::read_link(c.path("/srv/powercut/current")).expect("current");
    assert_eq!(link, std::path::Path::new("releases/v2"));
    assert!(c.path("/srv/powercut/.releasectl/pending.json").exists());
    c.boot();

    let app = App::existing(c, "powercut");
    assert_eq!(app.current().as_deref(), Some("v1"));
    assert!(!app.pending_exists());
    assert_eq!(event(&app.last_event()), ("recovered", "v1", "v2"));
    assert_contains(
        &c.run_text("journalctl --no-pager -o cat -b -u releasectl-recover.service"),
        "powercut",
        "this boot's journal of releasectl-recover.service",
    );

    // Blue/green: the boot unit put the front back on green, which runs
    // the restored v0, before nginx and the enabled instances started.
    let bg = App::existing(c, "bg");
    assert_eq!(bg.current().as_deref(), Some("v0"));
    assert_eq!(
        c.sh("cat /var/lib/releasectl/fronts/bg.conf"),
        "server 127.0.0.1:9412;"
    );
    c.wait_for("nginx to serve bg's v0 after the boot", PATIENCE, || {
        let served = c.run_text("curl -sS http://127.0.0.1:9410/");
        match served.trim() {
            "release v0" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    c.sh("releasectl recover bg");
    assert_eq!(
        blue_green_state(c).0,
        ["green"],
        "one instance after recover"
    );
}

/// k. The system bus is restarted (`systemctl restart dbus`) while the reload
/// job of v2 runs: releasectl's bus connection dies with the old
/// dbus-daemon, and the job's `JobRemoved` with it, although the bus is
/// back a moment later. The activation must carry on over a new
/// connection: roll back cleanly when v2 is unhealthy, commit when it is
/// healthy. Never "rollback failed" (exit 12).
pub(super) fn k_bus_restart_during_reload_rolls_back(c: &mut Container) {
    let app = bus_restart_during_reload(c, "busfault", false);
    let unit = "deploy@busfault:v2.service";
    assert_eq!(
        show(c, unit, "ExecMainStatus"),
        "11",
        "exit 11: previous release restored"
    );
    assert_eq!(app.current().as_deref(), Some("v1"));
    assert!(!app.pending_exists(), "pending.json left behind");
    let last = app.last_event();
    assert_eq!(event(&last), ("rolled_back", "v1", "v2"), "{last}");
    assert_contains(
        last["reason"].as_str().unwrap_or_default(),
        "health",
        "the rollback reason",
    );
    // The rollback's reload saw v1 again.
    let seen = c.sh(&format!("cat {SCRATCH}/busfault-reloads"));
    assert!(seen.ends_with("releases/v1"), "reloads saw:\n{seen}");
}

/// k, healthy variant: the same bus restart, and the activation commits.
pub(super) fn k_bus_restart_during_reload_commits(c: &mut Container) {
    let app = bus_restart_during_reload(c, "busfault2", true);
    let unit = "deploy@busfault2:v2.service";
    assert_eq!(
        (show(c, unit, "Result"), show(c, unit, "ExecMainStatus")),
        ("success".to_string(), "0".to_string())
    );
    assert_eq!(app.current().as_deref(), Some("v2"));
    assert!(!app.pending_exists(), "pending.json left behind");
    assert_eq!(event(&app.last_event()), ("activated", "v1", "v2"));
    let seen = c.sh(&format!("cat {SCRATCH}/busfault2-reloads"));
    assert!(seen.ends_with("releases/v2"), "reloads saw:\n{seen}");
}

/// Start `deploy@APP:v2` for an app whose unit takes 2 s to reload and
/// whose v2 is healthy or not, restart dbus while that reload runs, and
/// return once the activation has finished (whatever its outcome).
fn bus_restart_during_reload<'c>(c: &'c Container, name: &str, healthy: bool) -> App<'c> {
    let log = format!("{SCRATCH}/{name}-reloads");
    let service = format!("rctl-{name}.service");
    test_service(
        c,
        &service,
        &format!("readlink /srv/{name}/current >> {log}; sleep 2"),
    );
    let v2: &[(&str, &str)] = if healthy {
        &[("healthy", "")]
    } else {
        &[("sick", "")]
    };
    let app = App::create(
        c,
        name,
        &format!(
            "[services]\nunits = [\"{service}\"]\ntimeout = 60\n\
             [health]\ncommand = [\"/bin/sh\", \"-c\", \"test -e healthy\"]\n\
             retries = 1\ntimeout = 30\n"
        ),
        &[("v1", &[("healthy", "")]), ("v2", v2)],
    );
    app.start_at("v1");
    let dbus_before = show(c, "dbus.service", "MainPID");
    let unit = format!("deploy@{name}:v2.service");

    c.sh(&format!("systemctl start --no-block {unit}"));
    c.wait_for("the reload of v2 to be running", PATIENCE, || {
        let state = show(c, &service, "ActiveState");
        if state == "reloading" {
            Ok(())
        } else {
            Err(state)
        }
    });
    assert_eq!(
        app.current().as_deref(),
        Some("v2"),
        "swapped before reload"
    );
    c.sh("systemctl restart dbus.service");
    // The restart was a real one, and it was over before the reload was.
    assert_ne!(show(c, "dbus.service", "MainPID"), dbus_before);
    assert_eq!(show(c, &service, "ActiveState"), "reloading", "too late");

    let (state, _) = wait_settled(c, &unit);
    let story = journal(c, &unit);
    // What releasectl said about the fault, for the record of the run.
    eprintln!("k: {unit} ended {state}; its journal:\n{story}");
    assert_contains(
        &story,
        "lost the connection",
        "the journal of the activation (the restart must hit the wait)",
    );
    // systemd itself is back on the bus for the scenarios that follow.
    c.wait_for("systemd on the restarted bus", PATIENCE, || {
        let out = c.run("busctl status org.freedesktop.systemd1 >/dev/null");
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
    });
    app
}

/// The README's privilege-drop recipe, the `[hooks]` block exactly as the
/// README prints it (read from README.md, so the two cannot drift).
fn readme_setpriv_recipe() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("setpriv"))
        .expect("README.md has a ```toml block with the setpriv recipe")
        .to_string()
}

/// p. The README's privilege-drop hook under `deploy@` and under the path
/// unit (deploy-watch@): the migration runs as the app's user (it writes
/// its `id -u`), and each activation commits.
pub(super) fn r_privilege_drop_recipe_under_the_units(c: &mut Container) {
    let recipe = readme_setpriv_recipe();
    c.sh("id -u web >/dev/null 2>&1 || useradd --system --no-create-home web");
    let web_uid = c.sh("id -u web").trim().to_string();
    assert_ne!(web_uid, "0");
    let out = format!("{SCRATCH}/p-uids");
    c.sh(&format!("mkdir -p {out} && chown web {out}"));
    let migrate = format!("#!/bin/sh\nid -u > {out}/$RELEASECTL_RELEASE\n");
    let releases: Vec<(&str, [(&str, &str); 1])> = ["v1", "v2", "v3"]
        .iter()
        .map(|v| (*v, [("bin/migrate", migrate.as_str())]))
        .collect();
    let releases: Vec<(&str, &[(&str, &str)])> =
        releases.iter().map(|(v, f)| (*v, &f[..])).collect();
    let app = App::create(c, "dropper", &recipe, &releases);
    c.sh(&format!("chmod 0755 {}/releases/*/bin/migrate", app.root()));
    app.start_at("v1");
    let ran_as = |v: &str| c.sh(&format!("cat {out}/{v}")).trim().to_string();
    assert_eq!(ran_as("v1"), web_uid, "from the command line");

    c.sh("systemctl start deploy@dropper:v2");
    assert_eq!(app.current().as_deref(), Some("v2"));
    assert_eq!(event(&app.last_event()), ("activated", "v1", "v2"));
    assert_eq!(ran_as("v2"), web_uid, "under deploy@");

    let watch = "deploy-watch@dropper.service";
    c.sh("systemctl start deploy-watch@dropper.path");
    c.sh(
        "cd /var/lib/releasectl/requests && printf 'v3\\n' > .dropper.new && \
         mv .dropper.new dropper",
    );
    c.wait_for("the request for v3 to be activated", PATIENCE, || {
        let state = show(c, watch, "ActiveState");
        match app.current() {
            Some(v) if v == "v3" && state == "inactive" => Ok(()),
            v => Err(format!("current {v:?}, {watch} {state}")),
        }
    });
    assert_eq!(event(&app.last_event()), ("activated", "v2", "v3"));
    assert_eq!(ran_as("v3"), web_uid, "under deploy-watch@");
    // What the README says of runuser: it works from the command line but
    // not under the units, whose sandbox refuses pam_limits' calls.
    let runuser = format!(
        "root = \"/srv/ru\"\n[hooks]\npre_activate = [[\"/usr/sbin/runuser\", \"-u\", \
         \"web\", \"--\", \"/bin/sh\", \"-c\", \"id -u > {out}/ru-$RELEASECTL_RELEASE\"]]\n"
    );
    c.write("/etc/releasectl/ru.toml", runuser);
    c.sh("mkdir -p /srv/ru/releases/v1 /srv/ru/releases/v2");
    c.sh("releasectl activate ru:v1 --no-reload --no-health");
    assert_eq!(ran_as("ru-v1"), web_uid, "runuser from the command line");
    c.sh_fails("systemctl start deploy@ru:v2");
    // pam_limits logs through syslog: journald tells the unit of a message
    // from its sender's cgroup, which it cannot read once runuser has
    // exited, so the message is looked up by its syslog identifier too.
    let said = journal(c, "deploy@ru:v2.service")
        + &c.run_text("journalctl --no-pager -o cat -b SYSLOG_IDENTIFIER=runuser");
    assert_contains(&said, "pam_limits", "the journal of runuser under deploy@");
    let story = journal(c, "deploy@dropper:v2.service") + &journal(c, watch);
    assert!(
        !story.contains("Operation not permitted"),
        "setpriv was refused something under the units:\n{story}"
    );
}

/// s. Socket handover: an app that can only restart (examples/handover,
/// 0.5 s to start) switched 10 times under paced load by
/// `releasectl activate` with `action = "restart"` and a health gate. With
/// its listener in a `.socket` unit no request fails; without one, the same
/// run in the same machine refuses requests (or the load was too light to
/// prove anything). `check` says which of the two an app has. The setup and
/// the load are the benchmark's own (bench/handover-setup.sh,
/// bench/handover-driver.py), so the README's numbers and this test measure
/// the same thing.
pub(super) fn s_socket_handover_drops_no_request(c: &mut Container) {
    handover_setup(c);
    assert_contains(
        &c.sh("releasectl check socket"),
        "listener held by socket.socket (Accept=no",
        "check of the app with a socket unit",
    );
    assert_contains(
        &c.sh("releasectl check restart"),
        "restarts refuse connections",
        "check of the app without one",
    );

    let out = c.sh("SWITCHES=10 python3 /usr/local/lib/handover/driver.py restart socket");
    println!("{out}");
    let restart = DriverResult::of(&out, "restart");
    let socket = DriverResult::of(&out, "socket");
    let (restart_failed, restart_total) = (restart.failed, restart.total);
    let (socket_failed, socket_total) = (socket.failed, socket.total);
    assert!(
        restart_failed > 0,
        "without a socket unit no request failed ({restart_total} sent): the load was too \
         light to show what a restart refuses"
    );
    assert!(
        socket_total > 500,
        "too few requests to prove anything: {out}"
    );
    assert_eq!(
        socket_failed, 0,
        "requests failed with socket handover:\n{out}"
    );
    for app in ["restart", "socket"] {
        let activated = App::existing(c, app)
            .history()
            .iter()
            .filter(|e| e["event"] == "activated")
            .count();
        // v0 by hand, then ten switches.
        assert_eq!(activated, 11, "{app}: every switch committed");
    }
}

/// One mode's `RESULT` line of bench/handover-driver.py.
struct DriverResult {
    failed: u64,
    total: u64,
    p99_ms: f64,
}

impl DriverResult {
    fn of(out: &str, mode: &str) -> DriverResult {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("RESULT {mode} ")))
            .unwrap_or_else(|| panic!("no RESULT line for {mode} in:\n{out}"));
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line}"))
        };
        let int = |k: &str| {
            field(k)
                .parse()
                .unwrap_or_else(|e| panic!("{k} in {line}: {e}"))
        };
        DriverResult {
            failed: int("failed="),
            total: int("total="),
            p99_ms: field("p99_ms=")
                .parse()
                .unwrap_or_else(|e| panic!("p99 in {line}: {e}")),
        }
    }
}

/// Run the handover setup (bench/handover-setup.sh) in `c`, once per
/// container, and start its apps; returns nothing, panics on failure.
fn handover_setup(c: &Container) {
    let setup = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/bench/handover-setup.sh"
        ))
        .arg(c.path("/"))
        .arg("10")
        .output()
        .expect("run bench/handover-setup.sh");
    assert!(setup.status.success(), "{setup:?}");
    let start = String::from_utf8_lossy(&setup.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("START: ").map(str::to_string))
        .expect("the setup's START line");
    c.sh(&format!("systemctl daemon-reload && {start}"));
}

/// Which blue/green instances run, and which port the front names.
fn blue_green_state(c: &Container) -> (Vec<String>, String) {
    let running = ["blue", "green"]
        .into_iter()
        .filter(|s| {
            c.run(&format!("systemctl is-active -q bg@{s}.service"))
                .status
                .success()
        })
        .map(str::to_string)
        .collect();
    (running, c.sh("cat /var/lib/releasectl/fronts/bg.conf"))
}

/// t. Blue/green overlap: the new release starts in the idle instance, is
/// gated on its own port, then nginx's upstream file is switched (rename)
/// and reloaded, and the old instance drains and stops. Ten switches under
/// paced load (half through deploy@): no request fails, and the p99 stays
/// within 50 ms of the same load without switches. A release whose instance
/// fails to start is never fronted and the old instance never stops.
/// SIGKILL of releasectl at 20 instants during activations, each followed
/// by `recover`: exactly one instance runs, fronted, serving `current`.
pub(super) fn t_blue_green_overlap(c: &mut Container) {
    handover_setup(c);
    let app = App::existing(c, "bg");
    assert_eq!(app.current().as_deref(), Some("v0"));
    let (running, front) = blue_green_state(c);
    assert_eq!(running, ["green"], "the first activation started green");
    assert_eq!(front, "server 127.0.0.1:9412;");
    assert_eq!(c.sh("curl -fsS http://127.0.0.1:9410/"), "release v0");

    let out = c.sh("SWITCHES=10 python3 /usr/local/lib/handover/driver.py bluegreen");
    println!("{out}");
    let steady_p99 = DriverResult::of(&out, "steady").p99_ms;
    let bluegreen = DriverResult::of(&out, "bluegreen");
    let (failed, total, p99) = (bluegreen.failed, bluegreen.total, bluegreen.p99_ms);
    assert!(total > 500, "too few requests to prove anything: {out}");
    assert_eq!(
        failed, 0,
        "requests failed during blue/green switches:\n{out}"
    );
    assert!(
        p99 <= steady_p99 + 50.0,
        "p99 {p99} ms with switches, {steady_p99} ms without:\n{out}"
    );
    assert_eq!(app.current().as_deref(), Some("v10"));
    let (running, front) = blue_green_state(c);
    assert_eq!(
        running.len(),
        1,
        "after the drains one instance runs: {running:?}"
    );
    // The drains ended when the old instance's connections were closed,
    // not at `drain = 10` (the switches through deploy@ say so).
    c.journal_sync();
    let journal = c.run_text("journalctl --no-pager -o cat -u 'deploy@bg:*'");
    let drained = journal
        .lines()
        .filter(|l| l.contains(".service drained in "))
        .count();
    assert!(
        drained >= 5 && !journal.contains("still open after"),
        "{drained} drains ended on the count of connections:\n{journal}"
    );

    let status: serde_json::Value =
        serde_json::from_str(&c.sh("releasectl --json status bg")).expect("status --json");
    let serving = &status["result"]["serving"];
    assert_eq!(serving["slot"], running[0].as_str(), "{status}");
    assert_eq!(serving["release"], "v10", "{status}");
    assert_contains(
        &c.sh("releasectl status bg"),
        "serving:",
        "status of a blue/green app",
    );
    let check = c.sh("releasectl check bg");
    for line in [
        "ok    bluegreen front: names",
        "ok    unit bg@blue.service",
        "ok    unit bg@green.service",
    ] {
        assert_contains(&check, line, "check of a blue/green app");
    }

    // A release whose instance cannot start: never fronted, old one stays.
    let (code, err) = c.sh_fails("releasectl activate bg:broken");
    assert_eq!(code.code(), Some(11), "{err}");
    assert_eq!(blue_green_state(c), (running.clone(), front.clone()));
    assert_eq!(c.sh("curl -fsS http://127.0.0.1:9410/"), "release v10");
    assert_eq!(app.current().as_deref(), Some("v10"));

    // SIGKILL at 20 instants spread over activations, then recover.
    for round in 0..20u32 {
        let to = if round % 2 == 0 { "v9" } else { "v10" };
        let mut child = c.spawn(&format!("exec releasectl activate bg:{to}"));
        let delay = 50 + (round * 137) % 2300;
        std::thread::sleep(std::time::Duration::from_millis(delay.into()));
        let _ = c.run("pkill -KILL -x releasectl");
        let _ = child.wait();
        let recovered = c.sh("releasectl recover bg 2>&1");
        let (running, front) = blue_green_state(c);
        let current = app.current().expect("current");
        let seen = format!("round {round} (+{delay} ms), recover said:\n{recovered}");
        assert_eq!(running.len(), 1, "{seen}\nrunning: {running:?}");
        let port = if running[0] == "blue" { 9411 } else { 9412 };
        assert_eq!(front, format!("server 127.0.0.1:{port};"), "{seen}");
        let served = c.run_text("curl -sS http://127.0.0.1:9410/");
        assert_eq!(served.trim(), format!("release {current}"), "{seen}");
    }
}

/// One blue/green app's state, judged from outside: one instance runs, the
/// front names it, nginx serves `release` through it and `status` agrees.
#[track_caller]
fn assert_blue_green_serves(c: &Container, release: &str, what: &str) {
    let (running, front) = blue_green_state(c);
    assert_eq!(running.len(), 1, "{what}: running {running:?}");
    let port = if running[0] == "blue" { 9411 } else { 9412 };
    assert_eq!(front, format!("server 127.0.0.1:{port};"), "{what}");
    assert_eq!(
        c.run_text("curl -sS http://127.0.0.1:9410/").trim(),
        format!("release {release}"),
        "{what}: served through nginx"
    );
    let status: serde_json::Value =
        serde_json::from_str(&c.sh("releasectl --json status bg")).expect("status --json");
    assert_eq!(
        status["result"]["serving"]["release"], release,
        "{what}: {status}"
    );
}

/// u. Blue/green through the entry points other than `activate`: a
/// member's `request --wait` (deploy-watch@), refused for a release whose
/// instance cannot start (exit 11, the old instance serving throughout);
/// an app package's postinst (the shipped hook, real `dpkg -i`, deploy@);
/// and the boot unit after an activation killed once the front named the
/// new instance: it fronts the restored release's slot again, under its
/// own sandbox, before anything starts.
pub(super) fn u_blue_green_through_requests_packages_and_boot(c: &mut Container) {
    handover_setup(c);
    c.sh("id -u rctl-bg >/dev/null 2>&1 || useradd --no-create-home --groups releasectl rctl-bg");
    c.sh("systemctl enable --now deploy-watch@bg.path");

    // A member's request.
    let out = c.sh("runuser -u rctl-bg -- releasectl request bg:v3 --wait 2>&1");
    assert_contains(&out, "v3 activated", "request --wait of bg:v3");
    assert_blue_green_serves(c, "v3", "after the request for v3");
    let (code, err) = c.sh_fails("runuser -u rctl-bg -- releasectl request bg:broken --wait");
    assert_eq!(code.code(), Some(11), "{err}");
    assert_blue_green_serves(c, "v3", "after the refused request");
    // `check`: the idle instance the rejected release left failed is no
    // problem (the next activation restarts it); a fronted one stopped is.
    assert_contains(
        &c.sh("releasectl check bg"),
        "idle: the last release it was given did not start",
        "check after a rejected release",
    );
    let fronted = format!("bg@{}.service", blue_green_state(c).0[0]);
    c.sh(&format!("systemctl stop {fronted}"));
    let (code, out) = c.sh_fails("releasectl check bg");
    assert_eq!(code.code(), Some(1), "{out}");
    assert_contains(
        &out,
        &format!("{fronted} is fronted but inactive"),
        "check with the fronted instance stopped",
    );
    c.sh("releasectl recover bg");
    assert_blue_green_serves(c, "v3", "after recover started the fronted instance");
    // An instance unit that would run the release as root by omission.
    c.write(
        "/etc/systemd/system/bg@.service.d/root.conf",
        "[Service]\nDynamicUser=no\n",
    );
    c.sh("systemctl daemon-reload");
    let (code, out) = c.sh_fails("releasectl check bg");
    c.sh("rm -r /etc/systemd/system/bg@.service.d && systemctl daemon-reload");
    assert_eq!(code.code(), Some(1), "{out}");
    assert_contains(
        &out,
        "runs the release as root",
        "check of an instance unit with no User=",
    );

    // An app package whose postinst is the shipped hook.
    let hook = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/hooks/deb-postinst.sh"
    ))
    .unwrap();
    c.write(
        "/root/bg-p1/DEBIAN/postinst",
        format!("#!/bin/sh\nset -e\nreleasectl_app=bg\nreleasectl_release=p1\n\n{hook}\nexit 0\n"),
    );
    c.write(
        "/root/bg-p1/DEBIAN/control",
        "Package: bg-p1\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n\
         Description: release p1 of bg\n",
    );
    c.write("/root/bg-p1/srv/bg/releases/p1/README", "p1\n");
    c.sh("chmod 0755 /root/bg-p1/DEBIAN/postinst && \
          dpkg-deb --root-owner-group --build /root/bg-p1 /root/bg-p1.deb >/dev/null");
    c.sh("dpkg -i /root/bg-p1.deb >/dev/null");
    assert_blue_green_serves(c, "p1", "after dpkg -i of bg-p1");

    // Killed while a post_activate hook runs: the front names v4's slot,
    // `current` names v4, the intent is on disk. Then the power is "cut":
    // every instance stops, and the boot unit runs.
    c.sh("printf '[hooks]\\npost_activate = [[\"/bin/sleep\", \"60\"]]\\n' >> /etc/releasectl/bg.toml");
    let mut child = c.spawn("exec releasectl activate bg:v4");
    c.wait_for("the front to name v4's instance", PATIENCE, || {
        let served = c.run_text("curl -sS http://127.0.0.1:9410/");
        match served.trim() {
            "release v4" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    c.sh("pkill -KILL -x releasectl; pkill -x sleep; true");
    let _ = child.wait();
    c.sh("systemctl stop bg@blue.service bg@green.service");
    c.sh("systemctl start releasectl-recover.service");
    // As at boot with both instances enabled: they start on their slots,
    // nginx on the front the boot unit left.
    c.sh("systemctl start bg@blue.service bg@green.service && systemctl reload nginx.service");
    // A reload only signals nginx: its old workers answer a moment longer.
    c.wait_for("nginx to serve p1 through the front the boot unit left", PATIENCE, || {
        let served = c.run_text("curl -sS http://127.0.0.1:9410/");
        match served.trim() {
            "release p1" => Ok(()),
            other => Err(format!(
                "{other}; the boot unit said:\n{}",
                c.run_text("journalctl --no-pager -o cat -u releasectl-recover.service; cat /var/lib/releasectl/fronts/bg.conf")
            )),
        }
    });
    // The next `recover` (or activation) stops the instance not fronted.
    c.sh("releasectl recover bg");
    assert_blue_green_serves(c, "p1", "after the boot unit and recover");
}

/// v. The README's two recipes for apps that must restart, run as printed
/// (read from README.md): the socket handover's units, config and first
/// commands (as app `sock`, its names swapped), and the blue/green
/// template unit, nginx site, config and once-only commands (as printed,
/// app `app` on port 80). Releases ship examples/handover/app.py as
/// `bin/app`. Each is switched once more under the shipped units (a
/// request through deploy-watch@, `systemctl start deploy@`); `check`
/// passes on both, and neither app runs as root.
pub(super) fn v_handover_recipes_from_the_readme(c: &mut Container) {
    use crate::common::readme::{block_with, commands, files, readme, section};
    let text = readme();
    let app_py = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/handover/app.py"
    ));
    let release = |root: &str, id: &str| {
        c.write(&format!("{root}/releases/{id}/bin/app"), app_py);
        c.sh(&format!("chmod 0755 {root}/releases/{id}/bin/app"));
    };
    let serves = |port: u16, id: &str| {
        c.wait_for(&format!("release {id} on port {port}"), PATIENCE, || {
            let got = c.run_text(&format!("curl -sS http://127.0.0.1:{port}/"));
            match got.trim() == format!("release {id}") {
                true => Ok(()),
                false => Err(got),
            }
        });
    };

    // Socket handover, as app `sock`.
    let sec = section(
        &text,
        "## Restarts without refused connections (socket handover)",
    );
    let sock = |t: &str| {
        t.replace("/srv/app", "/srv/sock")
            .replace("app.socket", "sock.socket")
            .replace("app.service", "sock.service")
            .replace("app:v1", "sock:v1")
    };
    for (path, content) in files(&block_with(&sec, "ini", "[Socket]")) {
        c.write(&sock(&path), sock(&content));
    }
    c.write(
        "/etc/releasectl/sock.toml",
        sock(&block_with(&sec, "toml", "[services]")),
    );
    release("/srv/sock", "v1");
    release("/srv/sock", "v2");
    for cmd in commands(&block_with(&sec, "sh", "enable --now app.socket")) {
        c.sh(&sock(&cmd));
    }
    serves(8080, "v1");
    // The next switch as a member asks for it: through deploy-watch@.
    c.sh("systemctl enable --now deploy-watch@sock.path");
    c.sh("releasectl request sock:v2 --wait");
    serves(8080, "v2");
    assert_contains(
        &c.sh("releasectl check sock"),
        "listener held by sock.socket (Accept=no",
        "check of the socket recipe",
    );

    // Blue/green, as printed.
    let sec = section(&text, "## Blue/green overlap (no client waits)");
    for (path, content) in files(&block_with(&sec, "ini", "[Service]")) {
        c.write(&path, content);
    }
    for (path, content) in files(&block_with(&sec, "nginx", "upstream app")) {
        c.write(&path, content);
    }
    c.write(
        "/etc/releasectl/app.toml",
        block_with(&sec, "toml", "[bluegreen]"),
    );
    release("/srv/app", "v1");
    release("/srv/app", "v2");
    for cmd in commands(&block_with(&sec, "sh", "releasectl activate app:v1")) {
        c.sh(&cmd);
    }
    serves(80, "v1");
    // The next switch under the shipped unit, as CI or a person would.
    c.sh("systemctl start deploy@app:v2");
    serves(80, "v2");
    let running: Vec<&str> = ["blue", "green"]
        .into_iter()
        .filter(|s| {
            c.run(&format!("systemctl is-active -q app@{s}.service"))
                .status
                .success()
        })
        .collect();
    assert_eq!(
        running.len(),
        1,
        "one instance after the switch: {running:?}"
    );
    for unit in [format!("app@{}.service", running[0]), "sock.service".into()] {
        let uid = c.sh(&format!(
            "ps -o uid= -p $(systemctl show -p MainPID --value {unit})"
        ));
        assert_ne!(uid.trim(), "0", "{unit} runs as root");
    }
    assert_eq!(
        c.sh("systemctl is-enabled app@blue.service app@green.service"),
        "enabled\nenabled"
    );
    let check = c.sh("releasectl check app");
    assert_contains(
        &check,
        "ok    bluegreen front: names",
        "check of the blue/green recipe",
    );

    // Leave nothing listening for the other scenarios.
    c.sh(
        "rm /etc/nginx/sites-enabled/app && systemctl reload nginx.service && \
          systemctl disable --now app@blue.service app@green.service sock.socket sock.service deploy-watch@sock.path",
    );
}
