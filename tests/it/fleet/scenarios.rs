//! The scenarios, each from a starting state it sets up itself (releasectl
//! run directly on every host), judged by the hosts afterwards.

use super::ansible::{tail, Ansible, Run};
use super::apps::{demo_body, fail_on, BG, BG_ROOT, SOCK, SOCK_ROOT};
use super::fixture::{http_get, index_html, Fleet, Host, APP, PATIENCE, ROOT};

use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every host: `current` is `release`, nginx serves it, status exits 0 with
/// nothing pending.
#[track_caller]
fn assert_all_on(fleet: &Fleet, release: &str) {
    for h in &fleet.hosts {
        assert_on(h, release);
    }
}

#[track_caller]
fn assert_on(h: &Host, release: &str) {
    assert_eq!(
        h.current().as_deref(),
        Some(release),
        "current on {}",
        h.name
    );
    assert_eq!(h.http_body(), index_html(release), "served by {}", h.name);
    assert_consistent(h);
}

/// `releasectl status` exits 0 and reports no interrupted or pending
/// activation; `current` resolves to a complete release.
#[track_caller]
fn assert_consistent(h: &Host) {
    let (code, doc) = h.status();
    assert_eq!(code, 0, "status on {}: {doc:#}", h.name);
    let pending =
        h.c.run(&format!("test -e {ROOT}/.releasectl/pending.json"))
            .status
            .success();
    assert!(!pending, "{}: pending.json left behind: {doc:#}", h.name);
    let r = &doc["result"];
    assert_eq!(r["interrupted"], false, "{}: status: {doc:#}", h.name);
    assert!(r["pending"].is_null(), "{}: status: {doc:#}", h.name);
    assert_eq!(
        r["current"].as_str().map(str::to_string),
        h.current(),
        "{}: status and the link disagree",
        h.name
    );
    let id = h.current().expect("current exists");
    let body = h.c.sh(&format!("cat {ROOT}/current/index.html"));
    assert_eq!(
        format!("{body}\n"),
        index_html(&id),
        "{}: current/ is not release {id} complete",
        h.name
    );
}

#[track_caller]
fn assert_failed(run: &Run, what: &str) {
    assert!(
        !run.ok(),
        "{what}: the play should have failed but exited {:?}:\n{}",
        run.code,
        tail(&run.out, 80)
    );
}

#[track_caller]
fn assert_succeeded(run: &Run, what: &str) {
    assert!(
        run.ok(),
        "{what}: the play failed ({:?}):\n{}",
        run.code,
        tail(&run.out, 120)
    );
}

/// Requests made, failed, and the first failure.
type LoadCount = (u64, u64, String);

/// A load loop per host: HTTP GETs of `/` on one of its ports until
/// stopped, counting answers that are not 200 with one of `good` as body.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, std::thread::JoinHandle<LoadCount>)>,
}

impl Load {
    /// On each host's nginx serving `web`, whose releases serve
    /// `index_html(id)`.
    fn start(fleet: &Fleet, good: &[&str]) -> Load {
        let good: Vec<String> = good.iter().map(|r| index_html(r)).collect();
        Load::start_on(fleet, |h| h.http_port, good)
    }

    /// On the port `port` picks on each host, `good` being the bodies
    /// themselves.
    fn start_on(fleet: &Fleet, port: fn(&Host) -> u16, good: Vec<String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = fleet
            .hosts
            .iter()
            .map(|h| {
                let (stop, good, port) = (stop.clone(), good.clone(), port(h));
                let t = std::thread::spawn(move || {
                    let (mut n, mut bad, mut first) = (0u64, 0u64, String::new());
                    let end = Instant::now() + Duration::from_secs(600);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        n += 1;
                        match http_get(port) {
                            Ok((200, body)) if good.contains(&body) => {}
                            other => {
                                bad += 1;
                                if first.is_empty() {
                                    first = format!("{other:?}");
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    (n, bad, first)
                });
                (h.name.clone(), t)
            })
            .collect();
        Load { stop, threads }
    }

    fn stop(self) -> Vec<(String, u64, u64, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|(name, t)| {
                let (n, bad, first) = t.join().expect("load thread");
                (name, n, bad, first)
            })
            .collect()
    }
}

/// Print the counts of a [`Load`], and assert that every host saw enough
/// requests and none failed.
#[track_caller]
fn assert_no_failed_request(counts: Vec<(String, u64, u64, String)>) {
    for (host, n, bad, first) in &counts {
        eprintln!("load on {host}: {n} requests, {bad} failed (first: {first})");
    }
    for (host, n, bad, first) in counts {
        assert!(n >= 20, "{host}: only {n} requests made during the rollout");
        assert_eq!(
            bad, 0,
            "{host}: {bad} of {n} requests failed; first: {first}"
        );
    }
}

/// On hosts with no release yet (the test empties their app roots first).
pub(super) fn first_rollout_to_hosts_without_a_release(fleet: &mut Fleet, ans: &Ansible) {
    for h in &fleet.hosts {
        assert_eq!(h.current(), None, "{} already has a release", h.name);
    }
    let run = ans.rollout("v1", json!({}), &[]);
    assert_succeeded(&run, "first rollout of v1");
    assert_all_on(fleet, "v1");
}

pub(super) fn happy_path_without_a_failed_request(fleet: &mut Fleet, ans: &Ansible) {
    fleet.start_all_at("h1");

    let load = Load::start(fleet, &["h1", "h2"]);
    let run = ans.rollout("h2", json!({}), &[]);
    let counts = load.stop();
    assert_succeeded(&run, "rollout of h2 under load");
    assert_all_on(fleet, "h2");
    assert_no_failed_request(counts);
}

pub(super) fn stage_fails_on_one_host_nothing_switches(fleet: &mut Fleet, ans: &Ansible) {
    fleet.start_all_at("s1");
    // host2 already has a release s2, with other content: staging the
    // artifact as s2 there is refused (exit 2).
    fleet
        .host("host2")
        .stage_direct("s2", "something else entirely\n");
    let trees_before: Vec<String> = fleet.hosts.iter().map(|h| h.tree()).collect();
    let run = ans.rollout("s2", json!({}), &[]);
    assert_failed(&run, "rollout of s2 with a conflicting s2 on host2");
    for (h, before) in fleet.hosts.iter().zip(&trees_before) {
        assert_on(h, "s1");
        let current_line = |t: &str| {
            t.lines()
                .find(|l| l.ends_with(&format!("{ROOT}/current releases/s1")))
                .map(str::to_string)
        };
        assert!(
            current_line(before).is_some() && current_line(&h.tree()) == current_line(before),
            "{}: current changed",
            h.name
        );
    }
    assert!(
        run.out.contains("host2"),
        "the failure names host2:\n{}",
        tail(&run.out, 60)
    );
}

pub(super) fn health_fails_on_the_last_host_all_roll_back(fleet: &mut Fleet, ans: &Ansible) {
    fleet.start_all_at("f1");
    // host3's nginx answers 404 for release f2 only: its resolved root
    // ($realpath_root follows `current`) is that release.
    let h3 = fleet.host("host3");
    h3.nginx_extra("if ($realpath_root ~ \"/releases/f2$\") { return 404; }\n");
    let run = ans.rollout("f2", json!({}), &[]);
    fleet.host("host3").nginx_extra("");
    assert_failed(&run, "rollout of f2 with host3 answering 404");
    assert_all_on(fleet, "f1");
    // The failure lists one line per host (collection README, "The
    // summary"): the two switched hosts rolled back, host3's own activation
    // failed (releasectl restored f1 there itself).
    for line in [
        "\"host1: rolled back to f1",
        "\"host2: rolled back to f1",
        "\"host3: failed: ",
    ] {
        assert!(
            run.out.contains(line),
            "no {line} in the per-host summary:\n{}",
            tail(&run.out, 80)
        );
    }
}

pub(super) fn host_lost_mid_run_others_roll_back_it_recovers(fleet: &mut Fleet, ans: &Ansible) {
    fleet.start_all_at("u1");
    // host3 hangs right after its swap (a post_swap hook), so it is cut off
    // mid-activation: `current` already switched, pending.json on disk.
    let port = fleet.host("host3").http_port;
    let hang =
        super::fixture::app_config(port, "\n[hooks]\npost_swap = [[\"/bin/sleep\", \"300\"]]\n");
    fleet
        .host("host3")
        .c
        .write(&format!("/etc/releasectl/{APP}.toml"), hang);
    let vars = ans.vars("u2", json!({}));
    let child = ans.spawn_rollout(&vars, &[]);
    let h3 = fleet.host("host3");
    h3.c.wait_for("host3 to hang after its swap", PATIENCE, || {
        let pending =
            h3.c.run(&format!("test -e {ROOT}/.releasectl/pending.json"))
                .status
                .success();
        if pending && h3.current().as_deref() == Some("u2") {
            Ok(())
        } else {
            Err(format!("current {:?}, pending {pending}", h3.current()))
        }
    });
    fleet.host_mut("host3").c.power_cut();
    let run = ans.finish(child);
    eprintln!(
        "--- rollout u2 with host3 lost: exit {:?}\n{}",
        run.code,
        tail(&run.out, 60)
    );
    assert_failed(&run, "rollout of u2 losing host3");
    for name in ["host1", "host2"] {
        assert_on(fleet.host(name), "u1");
    }
    // The failure's per-host summary: `host3: unreachable, …`.
    for name in ["host1", "host2"] {
        assert!(
            run.out.contains(&format!("\"{name}: rolled back to u1")),
            "{name} not reported rolled back:\n{}",
            tail(&run.out, 60)
        );
    }
    assert!(
        run.out.contains("\"host3: unreachable"),
        "host3 not reported unreachable:\n{}",
        tail(&run.out, 60)
    );
    // Unreachable in the recap too (not "ignored"), and every line about
    // the rollback names its host, not an unrendered `{{ item }}`.
    let recap = run.recap();
    assert_eq!(
        recap["host3"].get("unreachable").copied(),
        Some(1),
        "host3 not counted unreachable: {recap:?}"
    );
    assert!(
        !run.out.contains("{{"),
        "an unrendered template in the output:\n{}",
        tail(&run.out, 60)
    );

    // Back on: the hook is gone (an operator fixed the config), and the boot
    // unit releasectl-recover.service finishes the interrupted activation.
    let h3 = fleet.host_mut("host3");
    h3.c.write(
        &format!("/etc/releasectl/{APP}.toml"),
        super::fixture::app_config(port, ""),
    );
    h3.c.boot();
    let h3 = fleet.host("host3");
    fleet.wait_ssh(h3);
    h3.c.wait_for("nginx after reboot", PATIENCE, || {
        h3.c.run("systemctl is-active nginx.service")
            .status
            .success()
            .then_some(())
            .ok_or_else(|| h3.c.run_text("systemctl status --no-pager nginx.service"))
    });
    // Cut off after its swap, host3 came back on u2 with pending.json:
    // only the boot unit's `releasectl recover` puts u1 back.
    let result =
        h3.c.sh("systemctl show -p Result --value releasectl-recover.service");
    let log = super::fixture::journal(&h3.c, "releasectl-recover.service");
    eprintln!("host3 releasectl-recover.service: {result}\n{log}");
    assert_eq!(result, "success", "releasectl-recover.service:\n{log}");
    assert!(
        log.contains("interrupted; restored u1"),
        "the boot unit did not recover host3:\n{log}"
    );
    assert_on(h3, "u1");
}

pub(super) fn check_mode_changes_nothing_and_rerun_is_unchanged(fleet: &mut Fleet, ans: &Ansible) {
    fleet.start_all_at("c1");
    let trees = |fleet: &Fleet| -> Vec<String> {
        fleet.hosts.iter().map(|h| h.tree_with_times()).collect()
    };
    let before = trees(fleet);
    let run = ans.rollout("c2", json!({}), &["--check"]);
    assert_succeeded(&run, "rollout of c2 in check mode");
    for (h, before) in fleet.hosts.iter().zip(&before) {
        assert_eq!(
            &h.tree_with_times(),
            before,
            "{}: --check changed the tree",
            h.name
        );
    }
    assert_all_on(fleet, "c1");

    let run = ans.rollout("c2", json!({}), &[]);
    assert_succeeded(&run, "rollout of c2");
    assert_all_on(fleet, "c2");
    // Check mode and a resumed run of a release already staged and
    // active write nothing under ROOT: not a temp tree under releases/,
    // not the lock file (mtimes compared).
    let after = trees(fleet);
    let run = ans.rollout("c2", json!({}), &["--check"]);
    assert_succeeded(&run, "rollout of the staged c2 in check mode");
    for (h, after) in fleet.hosts.iter().zip(&after) {
        assert_eq!(
            &h.tree_with_times(),
            after,
            "{}: --check of a staged release changed the tree",
            h.name
        );
    }
    let run = ans.rollout("c2", json!({}), &[]);
    assert_succeeded(&run, "second rollout of c2");
    for h in &fleet.hosts {
        assert_eq!(
            run.count(&h.name, "changed"),
            0,
            "{}: a rerun of the same release reported a change:\n{}",
            h.name,
            run.changes().join("\n")
        );
    }
    assert_all_on(fleet, "c2");
    for (h, after) in fleet.hosts.iter().zip(&after) {
        assert_eq!(
            &h.tree_with_times(),
            after,
            "{}: the rerun changed the tree",
            h.name
        );
    }

    // The module alone, ad hoc, as the README shows for going back: in
    // check mode with --diff it says what would change and changes nothing;
    // then for real, every host back on c1.
    let back = "app=web state=rolled_back release=c1 expect_current=c2";
    let adhoc = |extra: &[&str]| {
        let out = ans
            .cmd("ansible")
            .args(["web", "-m", "releasectl.fleet.release", "-a", back])
            .args(extra)
            .output()
            .expect("running ansible");
        let text = super::ansible::text(&out);
        assert!(out.status.success(), "ansible {back} {extra:?}:\n{text}");
        text
    };
    let shown = adhoc(&["--check", "--diff"]);
    assert!(
        shown.contains("-current: c2") && shown.contains("+current: c1"),
        "--diff does not show current going from c2 to c1:\n{}",
        tail(&shown, 60)
    );
    for (h, after) in fleet.hosts.iter().zip(&after) {
        assert_eq!(
            &h.tree_with_times(),
            after,
            "{}: --check of rolled_back changed the tree",
            h.name
        );
    }
    adhoc(&[]);
    assert_all_on(fleet, "c1");
}

pub(super) fn two_rollouts_at_once_one_wins(fleet: &mut Fleet, ans: &Ansible) {
    fleet.start_all_at("k1");
    let (va, vb) = (ans.vars("k2", json!({})), ans.vars("k3", json!({})));
    let a = ans.spawn_rollout(&va, &[]);
    let b = ans.spawn_rollout(&vb, &[]);
    let (ra, rb) = (ans.finish(a), ans.finish(b));
    eprintln!(
        "--- k2: exit {:?}\n{}\n--- k3: exit {:?}\n{}",
        ra.code,
        tail(&ra.out, 40),
        rb.code,
        tail(&rb.out, 40)
    );
    assert!(
        ra.ok() != rb.ok(),
        "one rollout must win and one fail: k2 exited {:?}, k3 {:?}",
        ra.code,
        rb.code
    );
    let winner = if ra.ok() { "k2" } else { "k3" };
    for h in &fleet.hosts {
        let cur = h.current();
        assert!(
            matches!(cur.as_deref(), Some("k2") | Some("k3")),
            "{}: on {cur:?}, not on one of the two releases",
            h.name
        );
        assert_consistent(h);
    }
    assert_all_on(fleet, winner);
}

/// `start` on every host at once (each host is independent).
fn on_every_host(fleet: &Fleet, start: impl Fn(&Host) + Sync) {
    std::thread::scope(|s| {
        for h in &fleet.hosts {
            let start = &start;
            s.spawn(move || start(h));
        }
    });
}

/// `bg` on `h` runs `release`, in exactly one instance, the one the front
/// names, and serves it through nginx; `status` says so and exits 0 with
/// nothing pending.
#[track_caller]
fn assert_bg_on(h: &Host, release: &str) {
    let who = &h.name;
    assert_eq!(
        h.current_in(BG_ROOT).as_deref(),
        Some(release),
        "current of bg on {who}"
    );
    let (code, doc) = h.status_of(BG);
    assert_eq!(code, 0, "status bg on {who}: {doc:#}");
    let r = &doc["result"];
    assert_eq!(r["interrupted"], false, "{who}: status bg: {doc:#}");
    assert!(r["pending"].is_null(), "{who}: status bg: {doc:#}");
    assert_eq!(
        r["serving"]["release"], release,
        "{who}: status bg does not say {release} serves: {doc:#}"
    );
    let active = h.bg_active();
    assert_eq!(active.len(), 1, "{who}: bg instances active: {active:?}");
    let slot = active[0];
    assert_eq!(r["serving"]["slot"], slot, "{who}: status bg: {doc:#}");
    assert_eq!(
        h.bg_front(),
        format!("server 127.0.0.1:{};\n", h.bg_port(slot)),
        "{who}: the front does not name the active instance bg@{slot}"
    );
    assert_eq!(
        h.body_on(h.ports.bg_front),
        demo_body(release),
        "{who}: served through nginx"
    );
}

/// Load on every host's nginx in front of `bg`, answering either release.
fn bg_load(fleet: &Fleet, releases: [&str; 2]) -> Load {
    let good = releases.iter().map(|r| demo_body(r)).collect();
    Load::start_on(fleet, |h| h.ports.bg_front, good)
}

pub(super) fn bluegreen_rollout_without_a_failed_request(fleet: &mut Fleet, ans: &Ansible) {
    on_every_host(fleet, |h| h.start_bluegreen_at("g1"));
    for h in &fleet.hosts {
        assert_bg_on(h, "g1");
    }
    // The app lives outside its releases: a release only has to exist.
    let artifact = ans.artifact_files("g2", &[("index.html", "bg g2\n")]);
    let load = bg_load(fleet, ["g1", "g2"]);
    let run = ans.rollout(
        "g2",
        json!({"releasectl_app": BG, "releasectl_artifact": artifact}),
        &[],
    );
    let counts = load.stop();
    assert_succeeded(&run, "blue/green rollout of g2 under load");
    for h in &fleet.hosts {
        assert_bg_on(h, "g2");
    }
    assert_no_failed_request(counts);
}

pub(super) fn bluegreen_health_fails_on_the_last_host_all_roll_back(
    fleet: &mut Fleet,
    ans: &Ansible,
) {
    on_every_host(fleet, |h| h.start_bluegreen_at("r1"));
    // r2's instance cannot start on host3 only (its template unit refuses
    // a release that ships FAIL_ON_host3): host1 and host2 switch first.
    let artifact = ans.artifact_files("r2", &[("index.html", "bg r2\n"), (&fail_on("host3"), "")]);
    let load = bg_load(fleet, ["r1", "r2"]);
    let run = ans.rollout(
        "r2",
        json!({"releasectl_app": BG, "releasectl_artifact": artifact}),
        &[],
    );
    let counts = load.stop();
    assert_failed(
        &run,
        "blue/green rollout of r2 with host3's instance failing",
    );
    for h in &fleet.hosts {
        assert_bg_on(h, "r1");
    }
    for line in [
        "\"host1: rolled back to r1",
        "\"host2: rolled back to r1",
        "\"host3: failed: ",
    ] {
        assert!(
            run.out.contains(line),
            "no {line} in the per-host summary:\n{}",
            tail(&run.out, 80)
        );
    }
    // The switch and the switch back, on host1 and host2, drop nothing.
    assert_no_failed_request(counts);
}

/// `sock` on `h` runs `release` and answers on the socket's port; `status`
/// exits 0 with nothing pending.
#[track_caller]
fn assert_sock_on(h: &Host, release: &str) {
    let who = &h.name;
    assert_eq!(
        h.current_in(SOCK_ROOT).as_deref(),
        Some(release),
        "current of sock on {who}"
    );
    let (code, doc) = h.status_of(SOCK);
    assert_eq!(code, 0, "status sock on {who}: {doc:#}");
    assert!(doc["result"]["pending"].is_null(), "{who}: {doc:#}");
    h.c.sh("systemctl is-active -q sock.socket sock.service");
    assert_eq!(
        h.body_on(h.ports.sock),
        demo_body(release),
        "{who}: served on the socket"
    );
}

pub(super) fn socket_handover_rollout_without_a_failed_request(fleet: &mut Fleet, ans: &Ansible) {
    on_every_host(fleet, |h| h.start_socket_app_at("p1"));
    for h in &fleet.hosts {
        assert_sock_on(h, "p1");
    }
    let artifact = ans.artifact_files("p2", &[("index.html", "sock p2\n")]);
    let good = ["p1", "p2"].iter().map(|r| demo_body(r)).collect();
    let load = Load::start_on(fleet, |h| h.ports.sock, good);
    let run = ans.rollout(
        "p2",
        json!({"releasectl_app": SOCK, "releasectl_artifact": artifact}),
        &[],
    );
    let counts = load.stop();
    assert_succeeded(&run, "socket-handover rollout of p2 under load");
    for h in &fleet.hosts {
        assert_sock_on(h, "p2");
    }
    assert_no_failed_request(counts);
}
