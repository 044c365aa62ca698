//! Timeouts too large to add to a clock, refused when the config is loaded.

use super::*;

// 12. Timeouts too large to add to a clock

/// `[health] timeout`, `[services] timeout` and `--lock-timeout` of
/// u64::MAX or i64::MAX seconds: refused at load with exit 2, stderr naming
/// the key or flag, nothing created (no .releasectl).
#[test]
fn huge_timeouts_are_refused_at_load() {
    let s = Scene::new();
    s.release("v1", 0, 0);
    s.release("v2", 0, 0);
    let mut f = Findings::default();
    for n in ["18446744073709551615", "9223372036854775807"] {
        for (key, body) in [
            (
                "health.timeout",
                format!("[health]\ncommand = [\"/bin/true\"]\ntimeout = {n}\n"),
            ),
            (
                "services.timeout",
                format!("[services]\nunits = [\"nothing-{n}.service\"]\ntimeout = {n}\n"),
            ),
        ] {
            s.config("web", &format!("root = \"{{root}}\"\n{body}"));
            let before = Tree::of(s.base());
            let r = s.rctl_config().args(["activate", "web:v2"]).try_run();
            let mut sub = Findings::default();
            expect_exit_naming(&mut sub, &r, 2, &[key]);
            for x in sub.0 {
                f.add(format!("{key} = {n}: {x}"));
            }
            if before != Tree::of(s.base()) {
                f.add(format!("{key} = {n}: the tree changed"));
            }
        }
        fs::remove_file(s.etc().join("web.toml")).unwrap();
        let before = Tree::of(s.base());
        let r = s
            .rctl()
            .args(["activate", "v2", "--lock-timeout", n])
            .try_run();
        let mut sub = Findings::default();
        expect_exit_naming(&mut sub, &r, 2, &["lock-timeout"]);
        for x in sub.0 {
            f.add(format!("--lock-timeout {n}: {x}"));
        }
        if before != Tree::of(s.base()) {
            f.add(format!(
                "--lock-timeout {n}: the tree changed (.releasectl exists: {})",
                s.path(".releasectl").exists()
            ));
        }
    }
    f.done("huge timeouts");
}
