//! releasectl inside a booted container: the built binary, the units from
//! `units/`, and apps with releases whose state the scenarios read back.

use super::nspawn::Container;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The binary under test, the debug build cargo made for this target.
pub const BIN: &str = env!("CARGO_BIN_EXE_releasectl");

/// Generous guard against hangs; never a performance claim.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The unit files shipped in `units/`. `RELEASECTL_TEST_UNITS=DIR` points the
/// suite at another directory, to try unit changes before they land there.
fn units_dir() -> PathBuf {
    std::env::var_os("RELEASECTL_TEST_UNITS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("units"))
}

/// Before boot: the binary goes where the units expect it, the units where an
/// administrator would put them, sysusers/tmpfiles entries in their places.
/// Missing files are not an error here: the scenarios that need them fail,
/// naming what is missing.
pub fn install(c: &Container) {
    let bin = std::fs::read(BIN).expect("read the releasectl binary");
    c.write("/usr/bin/releasectl", bin);
    set_mode(&c.path("/usr/bin/releasectl"), 0o755);
    let Ok(entries) = std::fs::read_dir(units_dir()) else {
        eprintln!(
            "no {} directory: unit scenarios will fail",
            units_dir().display()
        );
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read(entry.path()).expect("read unit file");
        if name.ends_with(".service") || name.ends_with(".path") || name.ends_with(".timer") {
            c.write(&format!("/etc/systemd/system/{name}"), text);
        } else if name.ends_with(".tmpfiles.conf") {
            c.write("/etc/tmpfiles.d/releasectl.conf", text);
        } else if name.ends_with(".sysusers.conf") {
            c.write("/etc/sysusers.d/releasectl.conf", text);
        } else if name.ends_with(".rules") {
            // Where the packages put it (polkitd reads it at its start).
            c.write("/usr/share/polkit-1/rules.d/50-releasectl.rules", text);
        }
    }
}

/// After boot: apply the sysusers/tmpfiles entries (boot may skip them, they
/// are conditioned on a changed /usr) and load the units.
pub fn activate_installed(c: &Container) {
    c.sh(
        "if [ -e /etc/sysusers.d/releasectl.conf ]; then systemd-sysusers /etc/sysusers.d/releasectl.conf; fi; \
         if [ -e /etc/tmpfiles.d/releasectl.conf ]; then systemd-tmpfiles --create /etc/tmpfiles.d/releasectl.conf; fi; \
         systemctl daemon-reload",
    );
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// One configured app: `/etc/releasectl/NAME.toml` with `root = /srv/NAME`.
pub struct App<'c> {
    pub c: &'c Container,
    pub name: String,
}

impl<'c> App<'c> {
    /// Write the config (`root` plus `extra` TOML) and the releases, each a
    /// list of (file, content). Nothing is activated yet.
    pub fn create(
        c: &'c Container,
        name: &str,
        extra: &str,
        releases: &[(&str, &[(&str, &str)])],
    ) -> App<'c> {
        let app = App {
            c,
            name: name.to_string(),
        };
        c.write(
            &format!("/etc/releasectl/{name}.toml"),
            format!("root = \"{}\"\n{extra}", app.root()),
        );
        for (id, files) in releases {
            c.sh(&format!("mkdir -p {}/releases/{id}", app.root()));
            for (file, content) in *files {
                c.write(&format!("{}/releases/{id}/{file}", app.root()), content);
            }
        }
        app
    }

    /// An app created earlier (e.g. before the container was rebooted).
    pub fn existing(c: &'c Container, name: &str) -> App<'c> {
        App {
            c,
            name: name.to_string(),
        }
    }

    pub fn root(&self) -> String {
        format!("/srv/{}", self.name)
    }

    /// Make `id` current without touching services (the starting state).
    pub fn start_at(&self, id: &str) {
        self.c.sh(&format!(
            "releasectl activate {}:{id} --no-reload --no-health",
            self.name
        ));
        assert_eq!(self.current().as_deref(), Some(id));
    }

    /// The release `current` points at, read from the link itself.
    pub fn current(&self) -> Option<String> {
        let out = self.c.run(&format!("readlink {}/current", self.root()));
        let target = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            return None;
        }
        let id = target
            .strip_prefix("releases/")
            .unwrap_or_else(|| panic!("current -> {target}: not a relative releases/ link"));
        Some(id.to_string())
    }

    pub fn pending_exists(&self) -> bool {
        self.c
            .run(&format!("test -e {}/.releasectl/pending.json", self.root()))
            .status
            .success()
    }

    /// history.jsonl, one value per line.
    pub fn history(&self) -> Vec<Value> {
        let text = self.c.run_text(&format!(
            "cat {}/.releasectl/history.jsonl 2>/dev/null",
            self.root()
        ));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("history line {l}: {e}")))
            .collect()
    }

    pub fn last_event(&self) -> Value {
        self.history().pop().expect("history is empty")
    }
}

/// `systemctl show -p PROP --value UNIT`.
pub fn show(c: &Container, unit: &str, prop: &str) -> String {
    c.sh(&format!("systemctl show -p {prop} --value '{unit}'"))
}

/// The journal of `unit` (synced first), message text only.
pub fn journal(c: &Container, unit: &str) -> String {
    c.journal_sync();
    c.run_text(&format!("journalctl --no-pager -o cat -u '{unit}'"))
}

/// Wait until a unit that was started without blocking is no longer
/// activating/deactivating; returns (ActiveState, Result).
pub fn wait_settled(c: &Container, unit: &str) -> (String, String) {
    c.wait_for(&format!("{unit} to finish"), PATIENCE, || {
        let state = show(c, unit, "ActiveState");
        let job = show(c, unit, "Job");
        if state.ends_with("ing") || !job.is_empty() {
            return Err(format!("{state}, job {job:?}"));
        }
        Ok((state, show(c, unit, "Result")))
    })
}

/// A small Python HTTP client, run inside, that hits `url` until the file
/// `stop` appears (bounded by `max_requests` and `max_seconds` too) and
/// prints `requests=N failures=M first_failure=...`. A request counts as good
/// only with status 200 and a body in `good` (one per line in `good_file`).
pub const LOAD_PY: &str = r#"
import sys, os, time, urllib.request
url, stop, good_file, max_requests, max_seconds = sys.argv[1:6]
good = set(open(good_file).read().split("\n")) - {""}
n = bad = 0
first = ""
end = time.monotonic() + float(max_seconds)
while n < int(max_requests) and time.monotonic() < end and not os.path.exists(stop):
    n += 1
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode().strip()
            if r.status != 200 or body not in good:
                raise ValueError("status %d body %r" % (r.status, body))
    except Exception as e:
        bad += 1
        first = first or str(e).replace(" ", "_")
print("requests=%d failures=%d first_failure=%s" % (n, bad, first or "-"))
"#;

/// Parse `requests=N failures=M …` from [`LOAD_PY`].
pub fn load_counts(output: &str) -> (u64, u64) {
    let field = |k: &str| {
        output
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in load output {output:?}"))
    };
    (field("requests="), field("failures="))
}
