//! The packages, tested as an operator uses them: lintian and rpmlint, the
//! rpm's file list, scriptlets and layout, and — in a real systemd booted in
//! a container — the releasectl .deb's install, upgrade, remove and purge,
//! and an app's own packages activating, refusing and rolling back releases
//! through the hooks in packaging/hooks/.
//!
//! The packages are built by `packaging/build.sh` (cargo deb, cargo
//! generate-rpm) before these tests run; building them here would need the
//! cargo lock this test run holds. So these tests are `#[ignore]`d (a plain
//! `cargo test` counts them as ignored) and run with `--include-ignored`,
//! as `.ci/run` does after building the packages; without the packages they
//! fail with the command to run.

use crate::common::{have, missing, require_tool};
use crate::systemd::nspawn;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_releasectl");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The one package in `dir` whose file name starts with `prefix`.
fn built(dir: &str, prefix: &str, ext: &str) -> Option<PathBuf> {
    let dir = repo().join("target").join(dir);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(ext)
        })
        .collect();
    found.sort();
    found.pop()
}

#[track_caller]
pub(crate) fn deb() -> PathBuf {
    built("debian", "releasectl_", ".deb").unwrap_or_else(|| {
        missing("no target/debian/releasectl_*.deb: run packaging/build.sh first")
    })
}

#[track_caller]
fn rpm() -> PathBuf {
    built("generate-rpm", "releasectl-", ".rpm").unwrap_or_else(|| {
        missing("no target/generate-rpm/releasectl-*.rpm: run packaging/build.sh first")
    })
}

#[track_caller]
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// One file of a .deb, read without installing it.
fn deb_file(deb: &Path, path: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(tmp.path()));
    std::fs::read(tmp.path().join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path} in {}: {e}", deb.display()))
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

// ---------------------------------------------------------------- linters

/// `packaging/lint.sh`: lintian with no error or warning, rpmlint with no
/// error; it prints both summaries.
#[test]
#[ignore = "needs the packages packaging/build.sh builds (run with --include-ignored, as .ci/run does)"]
fn lintian_and_rpmlint_are_clean() {
    require_tool("lintian");
    require_tool("rpmlint");
    deb();
    rpm();
    let out = Command::new(repo().join("packaging/lint.sh"))
        .output()
        .unwrap();
    println!("{}", text(&out));
    assert!(out.status.success(), "lint failed:\n{}", text(&out));
}

/// The maintainer scripts and hooks are POSIX sh (dash parses them).
#[test]
fn scripts_parse_as_posix_sh() {
    let mut scripts = Vec::new();
    for dir in ["packaging/hooks", "packaging/debian", "packaging/rpm"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".sh") || ["postinst", "prerm", "postrm"].contains(&name.as_str()) {
                scripts.push(p);
            }
        }
    }
    assert!(scripts.len() >= 10, "found only {scripts:?}");
    for s in scripts {
        run(Command::new("dash").arg("-n").arg(&s));
    }
}

// ---------------------------------------------------------------- contents

/// The .deb carries the man pages and completions of this source tree: a
/// package built from stale sources fails here.
#[test]
#[ignore = "needs the packages packaging/build.sh builds (run with --include-ignored, as .ci/run does)"]
fn deb_contents_match_the_sources() {
    let deb = deb();
    let page = gunzip(&deb_file(&deb, "/usr/share/man/man1/releasectl.1.gz"));
    assert_eq!(
        page,
        std::fs::read(repo().join("man/releasectl.1")).unwrap(),
        "releasectl.1 in the .deb differs from man/releasectl.1: rebuild the package"
    );
    for (shell, path) in [
        ("bash", "/usr/share/bash-completion/completions/releasectl"),
        ("zsh", "/usr/share/zsh/vendor-completions/_releasectl"),
        (
            "fish",
            "/usr/share/fish/vendor_completions.d/releasectl.fish",
        ),
    ] {
        let fresh = run(Command::new(BIN).args(["completions", shell])).stdout;
        assert!(
            String::from_utf8_lossy(&fresh).contains("RELEASECTL_COMPLETE="),
            "{shell} completion does not ask releasectl for candidates"
        );
        assert_eq!(
            deb_file(&deb, path),
            fresh,
            "{path} in the .deb is stale: rebuild the package"
        );
    }
    let control = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)));
    for script in ["postinst", "prerm", "postrm"] {
        assert!(control.contains(script), "no {script} in:\n{control}");
    }
}

const RPM_FILES: &[&str] = &[
    "/usr/bin/releasectl",
    "/usr/lib/systemd/system/deploy@.service",
    "/usr/lib/systemd/system/deploy-watch@.path",
    "/usr/lib/systemd/system/deploy-watch@.service",
    "/usr/lib/systemd/system/releasectl-recover.service",
    "/usr/lib/tmpfiles.d/releasectl.conf",
    "/usr/lib/sysusers.d/releasectl.conf",
    "/usr/share/polkit-1/rules.d/50-releasectl.rules",
    "/usr/share/man/man1/releasectl.1.gz",
    "/usr/share/man/man5/releasectl.toml.5.gz",
    "/usr/share/man/man8/deploy@.service.8.gz",
    "/usr/share/bash-completion/completions/releasectl",
    "/usr/share/zsh/site-functions/_releasectl",
    "/usr/share/fish/vendor_completions.d/releasectl.fish",
    "/usr/share/doc/releasectl/examples/web.toml",
    "/usr/share/doc/releasectl/examples/hooks/deb-postinst.sh",
    "/usr/share/doc/releasectl/examples/hooks/rpm-posttrans.sh",
];

/// `rpm -qlp` lists the expected files, `rpm -qp --scripts` the expected
/// scriptlets, and `rpm -i --root` lays the files out where the list says.
#[test]
#[ignore = "needs the packages packaging/build.sh builds (run with --include-ignored, as .ci/run does)"]
fn rpm_lists_and_lays_out_its_files() {
    require_tool("rpm");
    let rpm = rpm();
    let list = text(&run(Command::new("rpm").arg("-qlp").arg(&rpm)));
    println!("rpm -qlp:\n{list}");
    let listed: Vec<&str> = list.lines().filter(|l| l.starts_with('/')).collect();
    for f in RPM_FILES {
        assert!(listed.contains(f), "{f} not in rpm -qlp:\n{list}");
    }

    let scripts = text(&run(Command::new("rpm")
        .args(["-qp", "--scripts"])
        .arg(&rpm)));
    println!("rpm -qp --scripts:\n{scripts}");
    for (scriptlet, must) in [
        ("postinstall scriptlet", "systemd-sysusers releasectl.conf"),
        (
            "postinstall scriptlet",
            "systemd-tmpfiles --create releasectl.conf",
        ),
        ("postinstall scriptlet", "enable releasectl-recover.service"),
        (
            "preuninstall scriptlet",
            "disable releasectl-recover.service",
        ),
        ("postuninstall scriptlet", "daemon-reload"),
    ] {
        let body = scripts
            .split_once(scriptlet)
            .unwrap_or_else(|| panic!("no {scriptlet}:\n{scripts}"))
            .1;
        let body = body.split(" scriptlet").next().unwrap();
        assert!(body.contains(must), "{scriptlet} lacks `{must}`:\n{body}");
    }

    // An empty root has no /bin/sh for the scriptlets, so they are not run:
    // this checks the payload; the container tests check the scripts.
    let root = tempfile::tempdir().unwrap();
    run(Command::new("rpm")
        .args(["-i", "--nodeps", "--noscripts", "--root"])
        .arg(root.path())
        .arg(&rpm));
    for f in &listed {
        let p = root.path().join(f.trim_start_matches('/'));
        assert!(p.exists(), "{f} listed but not laid out");
    }
    let bin = root.path().join("usr/bin/releasectl");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&bin).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755, "mode of /usr/bin/releasectl");
    for unit in [
        "deploy@.service",
        "deploy-watch@.path",
        "releasectl-recover.service",
    ] {
        assert_eq!(
            std::fs::read(root.path().join("usr/lib/systemd/system").join(unit)).unwrap(),
            std::fs::read(repo().join("units").join(unit)).unwrap(),
            "{unit} in the rpm differs from units/{unit}"
        );
    }
    let out = run(Command::new(bin).arg("--version"));
    assert!(text(&out).contains("releasectl"));
}

// ---------------------------------------------------------------- containers

fn container(prefix: &str, deb: &Path) -> nspawn::Container {
    let mut opts = nspawn::Options::default();
    opts.mask.push("nginx.service".into());
    let mut c = nspawn::Container::create_checked(prefix, opts);
    let data = std::fs::read(deb).unwrap();
    c.write("/root/pkg/releasectl.deb", data);
    c.boot();
    c
}

/// A copy of `deb` with a higher version: what a rebuilt newer package is
/// to dpkg.
fn bumped(deb: &Path, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let old = std::fs::read_to_string(&control).unwrap();
    let version = old
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("Version")
        .to_string();
    let newer = format!("{version}+rebuild1");
    std::fs::write(
        &control,
        old.replace(&format!("Version: {version}"), &format!("Version: {newer}")),
    )
    .unwrap();
    let out = dir.join("releasectl-newer.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&tree)
        .arg(&out));
    out
}

/// Install, use, upgrade, remove and purge the releasectl .deb on a real
/// systemd host.
#[test]
#[ignore = "needs root, systemd-nspawn and the .deb packaging/build.sh builds (run with --include-ignored, as .ci/run does)"]
fn deb_install_upgrade_remove_purge() {
    let deb = deb();
    let tmp = tempfile::tempdir().unwrap();
    let newer = bumped(&deb, tmp.path());
    let c = container("pkg-deb", &deb);
    c.write(
        "/root/pkg/releasectl-newer.deb",
        std::fs::read(&newer).unwrap(),
    );

    c.sh("dpkg -i /root/pkg/releasectl.deb");
    let files = c.sh("dpkg -L releasectl");

    // Units installed; only the recover unit is enabled.
    for unit in [
        "deploy@.service",
        "deploy-watch@.path",
        "deploy-watch@.service",
        "releasectl-recover.service",
    ] {
        c.sh(&format!("systemctl cat {unit} >/dev/null"));
    }
    assert_eq!(
        c.run_text("systemctl is-enabled releasectl-recover.service")
            .trim(),
        "enabled"
    );
    assert_eq!(
        c.sh("ls /etc/systemd/system/*.wants/ | grep -c '^deploy' || true"),
        "0"
    );
    // Group and requests directory.
    c.sh("getent group releasectl");
    assert_eq!(
        c.sh("stat -c '%a %U %G' /var/lib/releasectl/requests"),
        "2775 root releasectl"
    );
    c.sh("test -d /etc/releasectl && man -w releasectl deploy@.service releasectl.toml");
    assert_eq!(
        c.sh("stat -c '%a %U %G' /var/lib/releasectl/results"),
        "750 root releasectl"
    );
    c.sh("test -f /usr/share/polkit-1/rules.d/50-releasectl.rules");

    // An app, activated through the installed units: by systemctl, then by a
    // request file written by an unprivileged member of group releasectl.
    c.write(
        "/etc/releasectl/web.toml",
        "root = \"/srv/web\"\nkeep = 5\n",
    );
    c.sh("mkdir -p /srv/web/releases/v1 /srv/web/releases/v2 && echo v1 > /srv/web/releases/v1/version && echo v2 > /srv/web/releases/v2/version");
    c.sh("systemctl start deploy@web:v1");
    assert_eq!(c.sh("cat /srv/web/current/version"), "v1");
    assert_eq!(c.sh("readlink /srv/web/current"), "releases/v1");

    // The shipped completions ask the installed binary, which knows the
    // configured app and its releases; fish finds its script where the
    // package put it.
    c.write(
        "/root/complete.sh",
        r#"source /usr/share/bash-completion/completions/releasectl
COMP_LINE="releasectl activate web:"
COMP_POINT=${#COMP_LINE}
_releasectl releasectl "" ""
printf '%s\n' "${COMPREPLY[@]}"
"#,
    );
    assert_eq!(c.sh("bash /root/complete.sh"), "v2\nv1");
    if have("fish") {
        assert_eq!(
            c.sh("fish -c 'complete --do-complete \"releasectl activate web:\"'"),
            "web:v2\nweb:v1\tcurrent"
        );
    }
    c.sh("useradd --system --groups releasectl deployer");
    c.sh("systemctl enable --now deploy-watch@web.path");
    c.sh("runuser -u deployer -- sh -c 'echo v2 > /var/lib/releasectl/requests/.web.tmp && mv /var/lib/releasectl/requests/.web.tmp /var/lib/releasectl/requests/web'");
    c.wait_for(
        "the path unit to activate v2",
        Duration::from_secs(60),
        || {
            let v = c.run_text("cat /srv/web/current/version");
            if v.trim() == "v2" {
                Ok(())
            } else {
                Err(v)
            }
        },
    );
    c.sh("journalctl --sync; journalctl -u deploy-watch@web.service -o cat | grep -q v2");
    // The same through `releasectl request --wait`: the installed results
    // directory lets the member read its outcome.
    assert_eq!(
        c.sh("runuser -u deployer -- releasectl request web:v1 --wait"),
        "web: v1 activated (previous: v2)"
    );
    assert_eq!(c.sh("readlink /srv/web/current"), "releases/v1");

    // Upgrade keeps the operator's modified config.
    c.sh("echo '# tuned by the operator' >> /etc/releasectl/web.toml");
    let before = c.sh("sha256sum /etc/releasectl/web.toml");
    c.sh("dpkg -i /root/pkg/releasectl-newer.deb");
    assert!(c
        .sh("dpkg-query -W -f '${Version}' releasectl")
        .ends_with("+rebuild1"));
    assert_eq!(c.sh("sha256sum /etc/releasectl/web.toml"), before);
    assert_eq!(
        c.run_text("systemctl is-enabled releasectl-recover.service")
            .trim(),
        "enabled"
    );
    c.sh("systemctl start deploy@web:v1");
    assert_eq!(c.sh("readlink /srv/web/current"), "releases/v1");

    // Remove, then purge: nothing of the package stays behind.
    c.sh("dpkg -r releasectl");
    c.sh("test ! -e /usr/bin/releasectl && test ! -e /lib/systemd/system/deploy@.service");
    assert_eq!(
        c.sh(
            "systemctl list-units --all --plain --no-legend 'deploy*' | grep -v not-found || true"
        ),
        ""
    );
    c.sh("dpkg -P releasectl");
    assert_eq!(
        c.sh("dpkg-query -W -f '${db:Status-Status}' releasectl 2>/dev/null || echo not-installed"),
        "not-installed"
    );
    for f in files.lines().filter(|l| l.starts_with('/')) {
        // A path the package owned exists now only if the host (the image
        // the container is an overlay of) has it too: a shared directory.
        let inside = c.path(f).symlink_metadata().is_ok();
        let shared = Path::new(f).symlink_metadata().is_ok();
        // And /etc/releasectl, which dpkg keeps while the operator's config
        // is in it (checked below); the package's own file there is gone.
        let kept_for_config = f == "/etc/releasectl"
            && std::fs::read_dir(c.path(f)).is_ok_and(|mut d| d.next().is_some());
        assert!(
            !inside || shared || kept_for_config,
            "{f} left behind after purge"
        );
    }
    let leftovers = c.sh(
        "find /etc/systemd /var/lib/systemd/deb-systemd-helper-enabled /var/lib/releasectl \
         /usr/lib/tmpfiles.d /usr/lib/sysusers.d \\( -name '*deploy*' -o -name '*releasectl*' \\) 2>/dev/null || true",
    );
    assert_eq!(leftovers, "", "left behind after purge");
    // The operator's releases and config are theirs.
    assert_eq!(c.sh("ls /srv/web/releases"), "v1\nv2");
    assert_eq!(c.sh("sha256sum /etc/releasectl/web.toml"), before);
}

/// The example app: each release package activates its release on
/// install; a release whose health check fails leaves the previous one
/// active and fails dpkg with releasectl's message; removing the active
/// release's package rolls back, or is refused when there is nothing to roll
/// back to.
#[test]
#[ignore = "needs root, systemd-nspawn and the .deb packaging/build.sh builds (run with --include-ignored, as .ci/run does)"]
fn app_packages_activate_and_roll_back() {
    let deb = deb();
    let out = tempfile::tempdir().unwrap();
    run(Command::new(repo().join("packaging/examples/hello/build.sh")).arg(out.path()));
    let c = container("pkg-app", &deb);
    for e in std::fs::read_dir(out.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        c.write(&format!("/root/pkg/{name}"), std::fs::read(&p).unwrap());
    }
    let served = || c.run_text("curl -fsS http://127.0.0.1:8480/");
    let current = || c.sh("readlink /srv/hello/current");
    let reloads = || {
        c.journal_sync();
        c.sh("journalctl -u hello.service -o cat | grep -c '^Reloading' || true")
            .parse::<u32>()
            .unwrap()
    };

    c.sh("dpkg -i /root/pkg/releasectl.deb /root/pkg/hello-common_1.0_all.deb");

    // 1.0: installed and served.
    c.sh("dpkg -i /root/pkg/hello-1.0_1.0_all.deb");
    assert_eq!(current(), "releases/1.0");
    assert_eq!(served().trim(), "hello 1.0");
    c.sh("journalctl --sync; journalctl -u deploy@hello:1.0.service -o cat | grep -q .");

    // 2.0: current moves after a reload of the running server.
    let before = reloads();
    c.sh("dpkg -i /root/pkg/hello-2.0_2.0_all.deb");
    assert_eq!(current(), "releases/2.0");
    assert_eq!(served().trim(), "hello 2.0");
    assert!(reloads() > before, "hello.service was not reloaded");

    // 3.0: unhealthy; dpkg fails with releasectl's message, 2.0 stays.
    let (_, msg) = c.sh_fails("dpkg -i /root/pkg/hello-3.0_3.0_all.deb");
    println!("dpkg -i hello-3.0:\n{msg}");
    assert!(
        msg.contains("health check"),
        "no releasectl message in:\n{msg}"
    );
    assert!(msg.contains("hello-3.0"), "{msg}");
    assert_eq!(current(), "releases/2.0");
    assert_eq!(served().trim(), "hello 2.0");
    assert_eq!(
        c.sh("dpkg-query -W -f '${db:Status-Status}' hello-3.0"),
        "half-configured"
    );
    // Later dpkg runs (apt and unattended-upgrades run `dpkg --configure -a`)
    // do not swap production onto the known-bad release again.
    let history = || c.sh("wc -l < /srv/hello/.releasectl/history.jsonl");
    let (lines, reloaded) = (history(), reloads());
    for _ in 0..3 {
        let (_, msg) = c.sh_fails("dpkg --configure -a");
        assert!(msg.contains("3.0 is marked bad"), "{msg}");
        assert!(msg.contains("RELEASECTL_FORCE=1"), "{msg}");
        assert_eq!(current(), "releases/2.0");
    }
    assert_eq!(history(), lines, "a retry of the bad release was recorded");
    assert_eq!(reloads(), reloaded, "a retry reloaded the service");

    // Removing the active release's package rolls back to the previous good
    // release (1.0; 3.0 is marked bad).
    let out = c.run_text("dpkg -r hello-2.0 2>&1");
    println!("dpkg -r hello-2.0:\n{out}");
    assert_eq!(current(), "releases/1.0", "{out}");
    assert_eq!(served().trim(), "hello 1.0");
    c.sh("test ! -e /srv/hello/releases/2.0");
    // Removing a release that is not active changes nothing else.
    c.sh("dpkg -r hello-3.0");
    assert_eq!(current(), "releases/1.0");
    // The last release: nothing to roll back to, so the removal is refused.
    let (_, msg) = c.sh_fails("dpkg -r hello-1.0");
    println!("dpkg -r hello-1.0:\n{msg}");
    assert!(msg.contains("refusing to remove hello:1.0"), "{msg}");
    assert_eq!(
        c.sh("dpkg-query -W -f '${db:Status-Status}' hello-1.0"),
        "installed"
    );
    assert_eq!(current(), "releases/1.0");
    assert_eq!(served().trim(), "hello 1.0");
    // ... unless the operator says so.
    c.sh("RELEASECTL_REMOVE_ACTIVE=1 dpkg -r hello-1.0");
    c.sh("test ! -e /srv/hello/releases/1.0");
}
