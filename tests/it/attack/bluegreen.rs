//! Blue/green (`[bluegreen]`): the front file is root's, in a directory
//! root's config names, and root rewrites it at boot (`recover
//! --no-reload`) and on every switch. A directory of the deploy user's on
//! the way to it lets that user decide which directory root writes in, or
//! what nginx (as root) includes: the front is refused then.

use super::*;

const FRONT_CONFIG: &str = r#"root = "{root}"
[health]
url = "http://127.0.0.1:{port}/"
[bluegreen]
unit = "web@.service"
slots = { blue = 18001, green = 18002 }
front = "{root}/conf/fronts/web.conf"
"#;

/// An app root whose `current` is v1, run by slot blue, with a front that
/// names no slot yet: the boot unit's `recover --no-reload` fronts blue.
fn scene_for_boot() -> Scene {
    let s = Scene::new();
    s.release("v1", 0, 0);
    s.set_current("v1");
    fs::create_dir_all(s.path("slots")).unwrap();
    symlink("../releases/v1", s.path("slots/blue")).unwrap();
    fs::create_dir_all(s.path(".releasectl")).unwrap();
    s.config("web", FRONT_CONFIG);
    s
}

/// The front is named below ROOT, in a directory `conf/fronts` root made
/// (root's, mode 0755: what the front's own directory is checked for). The
/// deploy user owns ROOT, so `conf` is theirs to replace: (a) by their
/// symlink to a place that holds a root-owned `fronts` (the victim here),
/// where root would then write; (b) by their own directory around root's
/// `fronts`, which they can rename away after root wrote it and replace
/// with a front of their own that nginx includes. Both are refused: the
/// boot unit fails naming the directory (`status` warns), and nothing is
/// written.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn a_front_below_a_directory_of_the_owner_is_refused() {
    attack_ready(&[]);
    let mut f = Findings::default();
    for round in ["symlink", "directory"] {
        let s = scene_for_boot();
        let victim_front = s.victim().join("fronts/web.conf");
        fs::create_dir_all(victim_front.parent().unwrap()).unwrap();
        fs::write(&victim_front, "victim's own front\n").unwrap();
        s.to_attacker();
        let conf = s.path("conf");
        if round == "symlink" {
            let ln = as_attacker("ln")
                .arg("-s")
                .arg(s.victim())
                .arg(&conf)
                .status()
                .unwrap();
            assert!(ln.success(), "the attacker's ln");
        } else {
            let mk = as_attacker("mkdir").arg(&conf).status().unwrap();
            assert!(mk.success(), "the attacker's mkdir");
            // root's, 0755, as the README asks of the front's directory
            fs::create_dir(conf.join("fronts")).unwrap();
        }
        let before = s.victim_listing();
        // The boot unit fails; status says so and goes on.
        let needles = ["bluegreen.front", &ps(&conf)];
        let r = s
            .rctl_config()
            .args(["recover", "--no-reload", "web"])
            .try_run();
        expect_exit_naming(&mut f, &r, 1, &needles);
        let r = s.rctl_config().args(["status", "web"]).try_run();
        expect_exit_naming(&mut f, &r, 0, &needles);
        if let Some(d) = changed(&before, &s.victim_listing()) {
            f.add(format!("{round}: root wrote in the victim:\n{d}"));
        }
        let written = conf.join("fronts/web.conf");
        f.check(round == "symlink" || !written.exists(), || {
            format!(
                "{round}: root wrote a front in a directory the deploy user can rename: {:?}",
                fs::read_to_string(&written)
            )
        });
    }
    f.done("front below the deploy user's conf/");
}
