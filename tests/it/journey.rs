//! The operator's journey, as one system test: the built .deb installed in
//! a booted systemd, an app served by real nginx in front of real php-fpm
//! with `storage/` and `.env` shared, set up and deployed by the README's
//! own commands (read from README.md, so the two cannot drift):
//!
//! root sets the host up ("Without root", "Behind nginx", the privilege-drop
//! recipe, shared paths) → `check` passes on the fresh host → a member
//! stages and requests v1 → a broken nginx snippet (v2) and broken PHP (v3)
//! are refused by the two-marker gate and rolled back, one through a
//! request, one through `systemctl start deploy@` via polkit → good v4 and
//! v6 → two rollbacks → SIGKILL of an activation while its migration hook
//! runs, then `recover` leaves no process behind. Along the way: one
//! request is one activation (history and journal), the migration ran as
//! the app's user every time with the action it ran for, history names the
//! member who asked, the app's writes land in shared storage, and a unit
//! reading `/run/releasectl/apps/APP.env` sees the live release.
//!
//! Needs root, systemd-nspawn, nginx and php8.2-fpm on the machine, and the
//! .deb built by `packaging/build.sh`: `#[ignore]`d, so a plain `cargo test`
//! counts it as ignored; with `--include-ignored` a missing prerequisite
//! fails it.

use crate::common::missing;
use crate::common::readme::{block_with, command, commands, readme, section, swap};
use crate::systemd::nspawn::{self, Container};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(120);

/// Builds release ID of kind KIND as `./ID.tar.zst` in the working
/// directory: a Laravel-shaped tree whose nginx snippet adds the header
/// `X-Release: config ID;` and whose `public/revision.php` prints
/// `code ID;` and the shared `.env`, appending to `storage/hits`.
/// `badconfig` ships a snippet that answers 500, `badcode` PHP that dies,
/// `slowmigrate` a migration that hangs.
const MKREL: &str = r#"#!/bin/sh
set -e
id=$1; kind=$2
d=$(mktemp -d); mkdir -p $d/public $d/nginx $d/bin
printf 'add_header X-Release "config %s;" always;\n' $id > $d/nginx/release.conf
if [ "$kind" = badconfig ]; then
  printf 'location = /revision.php { return 500; }\n' >> $d/nginx/release.conf
fi
if [ "$kind" = badcode ]; then
  printf '<?php\nundefined_function();\necho "code %s;\\n";\n' $id > $d/public/revision.php
else
  printf '<?php\nfile_put_contents(__DIR__ . "/../storage/hits", "%s\\n", FILE_APPEND);\necho "code %s; " . trim(file_get_contents(__DIR__ . "/../.env")) . "\\n";\n' $id $id > $d/public/revision.php
fi
if [ "$kind" = slowmigrate ]; then
  printf '#!/bin/sh\necho "$(id -u) $RELEASECTL_ACTION $RELEASECTL_RELEASE" >> storage/migrations.log\nexec sleep 3737\n' > $d/bin/migrate
else
  printf '#!/bin/sh\necho "$(id -u) $RELEASECTL_ACTION $RELEASECTL_RELEASE" >> storage/migrations.log\n' > $d/bin/migrate
fi
chmod 755 $d/bin/migrate
printf 'APP_NAME=shipped-by-%s\n' $id > $d/.env
tar --zstd -C $d -cf ./$id.tar.zst .
rm -rf $d
"#;

/// nginx in front of php-fpm, `root` and the included snippet under
/// `current` ($realpath_root: php-fpm sees the release's own path).
const SITE: &str = r#"server {
  listen 127.0.0.1:80;
  root /srv/shop/current/public;
  include /srv/shop/current/nginx/*.conf;
  location ~ \.php$ {
    include snippets/fastcgi-php.conf;
    fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
    fastcgi_param DOCUMENT_ROOT $realpath_root;
    fastcgi_pass unix:/run/php/php8.2-fpm.sock;
  }
}
"#;

/// The README's commands and configuration for app `shop`, whose user is
/// www-data (the README's examples say `web` for both).
struct Recipes {
    root_setup: Vec<String>,
    shared_setup: Vec<String>,
    stage: String,
    request: String,
    start: String,
    config: String,
}

fn recipes() -> Recipes {
    let readme = readme();
    let without_root = section(&readme, "## Without root");
    let nginx = section(
        &readme,
        "## Behind nginx (or any server whose reload is a signal)",
    );
    let member = block_with(&without_root, "sh", "releasectl request web:v2 --wait");
    let app = |s: &str| s.replace("/srv/web", "/srv/shop").replace("web:", "shop:");
    // The gate of the two-marker recipe, its timeout shortened: two broken
    // releases each wait it out before they are rolled back.
    let gate = swap(
        &block_with(&nginx, "toml", "expect = [\"config {release};\""),
        "timeout = 20",
        "timeout = 6",
    );
    let hooks = swap(
        &block_with(&readme, "toml", "setpriv"),
        "--reuid=web\", \"--regid=web\"",
        "--reuid=www-data\", \"--regid=www-data\"",
    );
    let shared = swap(
        &block_with(&readme, "toml", "owner = \"www-data\""),
        "dirs = [\"storage\", \"bootstrap/cache\"]",
        "dirs = [\"storage\"]\nfiles = [\".env\"]",
    );
    Recipes {
        root_setup: commands(&block_with(
            &without_root,
            "sh",
            "install -d -o root -g releasectl",
        ))
        .iter()
        .map(|c| {
            c.replace("/srv/web", "/srv/shop")
                .replace("@web.", "@shop.")
        })
        .collect(),
        shared_setup: commands(&block_with(&without_root, "sh", "/srv/web/shared/.env"))
            .iter()
            .map(|c| app(c))
            .collect(),
        stage: swap(
            &command(&member, "releasectl stage"),
            "--app web ./build.tar.zst --id v2",
            "--app shop ./ID.tar.zst --id ID",
        ),
        request: app(&command(&member, "releasectl request")).replace("v2", "ID"),
        start: app(&command(&member, "systemctl start deploy@")).replace("v2", "ID"),
        config: format!("root = \"/srv/shop\"\n{gate}\n{hooks}\n{shared}\n[prune]\nkeep = 3\n"),
    }
}

/// What a member runs: (exit code, stdout, stderr).
fn as_ci(c: &Container, cmd: &str) -> (Option<i32>, String, String) {
    let out = c.run(&format!("cd /home/ci && runuser -u ci -- {cmd}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// What nginx serves now: the X-Release header and the body.
fn served(c: &Container) -> (String, String) {
    let out = c.run_text("curl -sS -D - http://127.0.0.1/revision.php");
    let header = out
        .lines()
        .find_map(|l| l.strip_prefix("X-Release: "))
        .unwrap_or("")
        .trim()
        .to_string();
    let body = out.lines().last().unwrap_or("").trim().to_string();
    (header, body)
}

fn current(c: &Container) -> String {
    c.sh("readlink /srv/shop/current")
}

/// `current` is `id` and nginx + php-fpm serve its configuration and code.
#[track_caller]
fn assert_live(c: &Container, id: &str) {
    assert_eq!(current(c), format!("releases/{id}"));
    let (header, body) = served(c);
    assert_eq!(header, format!("config {id};"), "nginx's configuration");
    assert_eq!(
        body,
        format!("code {id}; APP_NAME=operator"),
        "php's code and the shared .env"
    );
}

fn history(c: &Container) -> Vec<serde_json::Value> {
    c.sh("cat /srv/shop/.releasectl/history.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a history line"))
        .collect()
}

/// History entries of activations of `to` (not the `requested` notes).
fn runs_of(c: &Container, to: &str) -> Vec<serde_json::Value> {
    history(c)
        .into_iter()
        .filter(|e| e["to"] == to && e["event"] != "requested")
        .collect()
}

#[test]
#[ignore = "needs root, systemd-nspawn, php8.2-fpm and the .deb packaging/build.sh builds (run with --include-ignored, as .ci/run does)"]
fn operator_journey_from_the_readme() {
    let deb = crate::packaging::deb();
    if !std::path::Path::new("/usr/sbin/php-fpm8.2").exists() {
        missing("php8.2-fpm is not installed (apt-get install php8.2-fpm)");
    }
    let r = recipes();
    let mut opts = nspawn::Options::default();
    opts.mask.retain(|u| u != "php8.2-fpm.service");
    let mut c = Container::create_checked("rctl-journey", opts);
    c.write("/root/pkg/releasectl.deb", std::fs::read(&deb).unwrap());
    c.write("/usr/local/bin/mkrel", MKREL);
    c.write("/etc/nginx/sites-enabled/shop", SITE);
    let _ = std::fs::remove_file(c.path("/etc/nginx/sites-enabled/default"));
    c.boot();

    // Root sets the host up, as the README says.
    c.sh("dpkg -i /root/pkg/releasectl.deb && chmod 755 /usr/local/bin/mkrel && useradd -m ci");
    c.write("/etc/releasectl/shop.toml", &r.config);
    for cmd in r.root_setup.iter().chain(&r.shared_setup) {
        c.sh(cmd);
    }
    c.sh("printf 'APP_NAME=operator\\n' > /srv/shop/shared/.env");
    let check = c.run_text("releasectl check shop; echo exit=$?");
    assert!(
        check.trim_end().ends_with("exit=0"),
        "check on the new host:\n{check}"
    );

    // The member builds and stages every release; nothing is live yet.
    let staged = |id: &str, kind: &str| {
        let (code, _, err) = as_ci(&c, &format!("/usr/local/bin/mkrel {id} {kind}"));
        assert_eq!(code, Some(0), "mkrel {id}: {err}");
        let (code, out, err) = as_ci(&c, &r.stage.replace("ID", id));
        assert_eq!(code, Some(0), "{}: {err}", r.stage.replace("ID", id));
        assert_eq!(out, id);
    };
    let request = |id: &str| as_ci(&c, &r.request.replace("ID", id));
    for (id, kind) in [("v1", "good"), ("v2", "badconfig"), ("v3", "badcode")] {
        staged(id, kind);
    }

    // v1: the first deploy, by request; nginx starts with it.
    let (code, out, err) = request("v1");
    assert_eq!(code, Some(0), "request v1: {out} {err}");
    assert_eq!(out, "shop: v1 activated (previous: none)");
    assert_live(&c, "v1");

    // v2: its nginx snippet answers 500 while its PHP is fine; the gate
    // needs both markers, so it rolls back. One request, one activation.
    let (code, _, err) = request("v2");
    assert_eq!(code, Some(11), "request v2: {err}");
    assert!(err.contains("health check failed"), "{err}");
    std::thread::sleep(Duration::from_secs(3)); // time for a second run to show
    assert_eq!(runs_of(&c, "v2").len(), 1, "{:#?}", history(&c));
    c.sh("journalctl --sync");
    let watch = c.run_text("journalctl -o cat -u deploy-watch@shop.service");
    assert_eq!(
        watch.matches("shop: v1 → v2: activating").count(),
        1,
        "{watch}"
    );
    assert_live(&c, "v1");
    let listed = c.sh("releasectl history shop");
    assert!(listed.contains("requested by ci"), "{listed}");

    // v3: broken PHP, started through polkit by the member.
    let (code, _, err) = as_ci(&c, &r.start.replace("ID", "v3"));
    assert_eq!(code, Some(1), "systemctl start deploy@shop:v3: {err}");
    let journal = c.run_text("journalctl -o cat -u deploy@shop:v3.service");
    assert!(journal.contains("health check failed"), "{journal}");
    assert_eq!(runs_of(&c, "v3")[0]["event"], "rolled_back");
    assert_live(&c, "v1");

    // v4 and v6: good.
    for id in ["v4", "v6"] {
        staged(id, "good");
        let (code, out, err) = request(id);
        assert_eq!(code, Some(0), "request {id}: {out} {err}");
        assert_live(&c, id);
    }

    // The release id reaches the app's own units: deploy-watch@ wrote
    // APP.env, and a unit reading it as the README says sees v6.
    c.write(
        "/etc/systemd/system/shop-env.service",
        "[Service]\nType=oneshot\nEnvironmentFile=-/run/releasectl/apps/shop.env\n\
         ExecStart=/bin/sh -c 'echo \"$RELEASECTL_RELEASE after $RELEASECTL_PREVIOUS\" > /root/shop-env'\n",
    );
    c.sh("systemctl daemon-reload && systemctl start shop-env.service");
    assert_eq!(c.sh("cat /root/shop-env"), "v6 after v4");

    // Two rollbacks, each to the good release before.
    for to in ["v4", "v1"] {
        c.sh("releasectl rollback shop");
        assert_live(&c, to);
    }

    // SIGKILL while the migration hook runs; recover kills what is left.
    staged("v5", "slowmigrate");
    let mut activation = c.spawn("releasectl activate shop:v5");
    c.wait_for("the migration of v5 to run", PATIENCE, || {
        match c
            .run("pgrep -u www-data -f '^sleep 3737$'")
            .status
            .success()
        {
            true => Ok(()),
            false => Err("no sleep yet".into()),
        }
    });
    c.sh("pkill -KILL -x releasectl");
    let _ = activation.wait();
    let recovered = c.sh("releasectl recover shop 2>&1");
    assert!(
        recovered.contains("killed what was left of hook"),
        "{recovered}"
    );
    assert!(
        !c.run("pgrep -f '^sleep 3737$'").status.success(),
        "the hook's process outlived recover"
    );
    assert_live(&c, "v1");

    // Every migration ran as www-data, with the action it ran for.
    let www = c.sh("id -u www-data");
    let log = c.sh("cat /srv/shop/shared/storage/migrations.log");
    let expected: Vec<String> = [
        "activate v1",
        "activate v2",
        "activate v3",
        "activate v4",
        "activate v6",
        "rollback v4",
        "rollback v1",
        "activate v5",
    ]
    .iter()
    .map(|l| format!("{www} {l}"))
    .collect();
    assert_eq!(log.lines().collect::<Vec<_>>(), expected);
    // The app wrote into shared storage, as www-data ([shared] owner).
    assert_eq!(c.sh("stat -c %U /srv/shop/shared/storage/hits"), "www-data");
}
