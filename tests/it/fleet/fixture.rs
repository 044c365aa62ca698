//! Three SSH-reachable systemd hosts on this machine: systemd-nspawn
//! containers sharing the host network, each with sshd on its own loopback
//! port (root login by a key made for this run), nginx on its own port
//! serving `/srv/web/current`, the built releasectl .deb installed and an app
//! `web` configured to reload nginx and check that the release answers.
//!
//! Everything is written into the overlays before boot, so the services come
//! up configured; dropping the [`Fleet`] (also on a panic) tears every
//! container down.

use crate::common::{have, missing};
use crate::systemd::nspawn::{self, Container, Options};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous guard against hangs; never a performance claim.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub const APP: &str = "web";
pub const ROOT: &str = "/srv/web";

pub struct Host {
    pub c: Container,
    /// The inventory name: host1, host2, host3.
    pub name: String,
    pub ssh_port: u16,
    pub http_port: u16,
    /// Every port of the host, the two above included.
    pub ports: Ports,
}

pub struct Fleet {
    pub hosts: Vec<Host>,
    /// Holds the private key (and whatever a scenario makes on the
    /// controller side).
    pub tmp: tempfile::TempDir,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/debian/releasectl_*.deb`, as `packaging/build.sh` leaves it.
pub fn built_deb() -> Option<PathBuf> {
    let dir = repo().join("target/debian");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("releasectl_") && n.ends_with(".deb")
        })
        .collect();
    found.sort();
    found.pop()
}

/// The loopback ports of one host. The hosts share the machine's network,
/// so every listener of every host has a port of its own.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub ssh: u16,
    /// nginx serving `web`.
    pub http: u16,
    /// nginx in front of the blue/green app `bg`.
    pub bg_front: u16,
    /// The two instances of `bg`.
    pub blue: u16,
    pub green: u16,
    /// The listener `sock.socket` holds for the socket-handover app.
    pub sock: u16,
}

/// Ports for `count` hosts: host i (from 0) gets `base + 10*i + 1..=6`. The
/// base is derived from the process id and checked free, so two runs at once
/// (or anything else listening) do not collide. All lie below the
/// ephemeral range: some are bound long after boot (an instance's port at
/// each start, a socket unit), when a port the kernel lent to one of the
/// thousands of connections a load makes (or left in TIME_WAIT) would make
/// that bind fail.
fn pick_ports(count: u16) -> Vec<Ports> {
    let pid = std::process::id();
    let blocks = (ephemeral_low().saturating_sub(10000) / 100)
        .saturating_sub(1)
        .max(1);
    for attempt in 0..200u32 {
        let base = 10000 + ((pid.wrapping_mul(7) + attempt * 97) % blocks) as u16 * 100;
        let ports: Vec<Ports> = (0..count)
            .map(|i| {
                let b = base + 10 * i;
                Ports {
                    ssh: b + 1,
                    http: b + 2,
                    bg_front: b + 3,
                    blue: b + 4,
                    green: b + 5,
                    sock: b + 6,
                }
            })
            .collect();
        let free = ports.iter().all(|p| {
            [p.ssh, p.http, p.bg_front, p.blue, p.green, p.sock]
                .iter()
                .all(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        });
        if free {
            return ports;
        }
    }
    panic!("no free loopback ports for the fleet");
}

/// The first port of the kernel's ephemeral range (32768 if unreadable).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// The app's config on host with nginx on `http_port`. `expect` carries an
/// end mark so that one id that begins another cannot match (README,
/// "Behind nginx").
pub fn app_config(http_port: u16, extra: &str) -> String {
    format!(
        r#"root = "{ROOT}"

[services]
units = ["nginx.service"]
action = "reload"

[health]
url = "http://127.0.0.1:{http_port}/"
expect = "release {{release}};"
consecutive = 3
retries = 2000
interval = 0
timeout = 20
{extra}"#
    )
}

/// nginx serving the app's `current` on this host's port only. The extra
/// include lets a scenario change one host's behaviour (and put it back).
fn nginx_site(http_port: u16) -> String {
    format!(
        "server {{\n    listen 127.0.0.1:{http_port};\n    root {ROOT}/current;\n    \
         index index.html;\n    include /etc/nginx/fleet-extra.conf;\n}}\n"
    )
}

impl Fleet {
    /// Boot three hosts, or fail naming the missing prerequisite.
    pub fn boot_checked() -> Fleet {
        Fleet::boot_n_checked(3)
    }

    pub fn boot_n_checked(count: u16) -> Fleet {
        nspawn::require_prerequisites("fleet");
        for tool in [
            "ssh",
            "ssh-keygen",
            "/usr/sbin/sshd",
            "/usr/sbin/nginx",
            "curl",
        ] {
            if !have(tool) {
                missing(&format!(
                    "fleet: {tool} is not installed (apt-get install openssh-server nginx-light curl)"
                ));
            }
        }
        let Some(deb) = built_deb() else {
            missing("fleet: no target/debian/releasectl_*.deb: run packaging/build.sh first");
        };
        let started = Instant::now();
        let tmp = tempfile::Builder::new()
            .prefix("rctl-fleet")
            .tempdir()
            .expect("tempdir");
        let key = tmp.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "releasectl-fleet-test",
                "-f",
            ])
            .arg(&key)
            .output()
            .expect("run ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {out:?}");
        let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let deb_bytes = std::fs::read(&deb).expect("read the .deb");

        let ports = pick_ports(count);
        let mut hosts = Vec::new();
        for (i, ports) in ports.iter().enumerate() {
            let opts = Options {
                private_network: false,
                mask: vec!["postgresql.service".into(), "postgresql@.service".into()],
                ..Options::default()
            };
            let c = Container::create("rctl-fleet", opts);
            let host = Host {
                c,
                name: format!("host{}", i + 1),
                ssh_port: ports.ssh,
                http_port: ports.http,
                ports: *ports,
            };
            host.prepare(&pubkey, &deb_bytes);
            hosts.push(host);
        }
        let fleet = Fleet { hosts, tmp };
        // Boot and install in parallel: each host is independent. A panic in
        // one thread is re-raised here, and `fleet` (owning every
        // container) is dropped on the way out.
        let mut fleet = fleet;
        std::thread::scope(|s| {
            for h in fleet.hosts.iter_mut() {
                s.spawn(move || {
                    let t = Instant::now();
                    h.c.boot();
                    let booted = t.elapsed();
                    h.after_boot();
                    eprintln!(
                        "fleet: {} booted in {booted:.1?}, ready in {:.1?}",
                        h.name,
                        t.elapsed()
                    );
                });
            }
        });
        for h in &fleet.hosts {
            fleet.wait_ssh(h);
        }
        eprintln!(
            "fleet: {} hosts up and answering SSH in {:.1?} ({ports:?})",
            fleet.hosts.len(),
            started.elapsed(),
        );
        fleet
    }

    /// Boot again any host a failed scenario left powered off, with its
    /// stock app config, so the next scenario starts from a whole fleet.
    pub fn revive(&mut self) {
        for i in 0..self.hosts.len() {
            if self.hosts[i].c.is_booted() {
                continue;
            }
            let h = &mut self.hosts[i];
            eprintln!("fleet: booting {} again", h.name);
            h.c.write(
                &format!("/etc/releasectl/{APP}.toml"),
                app_config(h.http_port, ""),
            );
            h.c.boot();
            self.wait_ssh(&self.hosts[i]);
        }
    }

    /// Every host back to no release at all: ROOT empty, as after boot.
    pub fn empty_app_roots(&self) {
        for h in &self.hosts {
            h.c.sh(&format!("rm -rf {ROOT} && mkdir -p {ROOT}"));
        }
    }

    pub fn key(&self) -> PathBuf {
        self.tmp.path().join("id_ed25519")
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    pub fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `ssh root@127.0.0.1 -p PORT true` answers (the way Ansible gets in).
    pub fn wait_ssh(&self, h: &Host) {
        h.c.wait_for("sshd to let root in", PATIENCE, || {
            let out = Command::new("ssh")
                .args(ssh_options(&self.key()))
                .arg("-p")
                .arg(h.ssh_port.to_string())
                .args(["root@127.0.0.1", "true"])
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).to_string())
            }
        });
    }

    /// `releasectl stage` + `activate` of `release` on every host directly
    /// (no Ansible): the known starting state of a scenario.
    pub fn start_all_at(&self, release: &str) {
        std::thread::scope(|s| {
            for h in &self.hosts {
                s.spawn(move || h.deploy_direct(release, &index_html(release)));
            }
        });
        for h in &self.hosts {
            assert_eq!(h.current().as_deref(), Some(release), "on {}", h.name);
            assert_eq!(h.http_body(), index_html(release), "served by {}", h.name);
        }
    }
}

/// What a release serves: the id with an end mark, which the health check's
/// `expect` looks for.
pub fn index_html(release: &str) -> String {
    format!("release {release};\n")
}

/// ssh options for the test's own calls (Ansible gets the same from its
/// config).
pub fn ssh_options(key: &Path) -> Vec<String> {
    [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([key.display().to_string()])
    .collect()
}

impl Host {
    /// Before boot: sshd, nginx, root's dotfiles, the app config and the
    /// .deb, all through the overlay.
    fn prepare(&self, pubkey: &str, deb: &[u8]) {
        let c = &self.c;
        c.write(
            "/etc/ssh/sshd_config.d/10-fleet.conf",
            format!(
                "ListenAddress 127.0.0.1:{}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n\
                 MaxStartups 100:30:200\nMaxSessions 100\n",
                self.ssh_port
            ),
        );
        enable(c, "ssh.service");
        enable(c, "nginx.service");
        c.write("/root/.ssh/authorized_keys", pubkey);
        chmod(&c.path("/root/.ssh"), 0o700);
        chmod(&c.path("/root/.ssh/authorized_keys"), 0o600);
        // Debian's stock dotfiles: the machine's own run `pyenv init`,
        // which would slow down every Ansible call.
        for f in [".bashrc", ".profile"] {
            let text = std::fs::read(format!("/etc/skel/{f}")).unwrap_or_default();
            c.write(&format!("/root/{f}"), text);
        }
        for f in [".bash_profile", ".bash_login"] {
            let _ = std::fs::remove_file(c.path(&format!("/root/{f}")));
        }
        // Nothing on :80: every host's nginx listens on its own port only.
        let _ = std::fs::remove_file(c.path("/etc/nginx/sites-enabled/default"));
        c.write(
            "/etc/nginx/conf.d/fleet-web.conf",
            nginx_site(self.http_port),
        );
        c.write("/etc/nginx/fleet-extra.conf", "");
        c.write(
            &format!("/etc/releasectl/{APP}.toml"),
            app_config(self.http_port, ""),
        );
        c.write("/root/pkg/releasectl.deb", deb);
        // man-db's dpkg trigger rebuilds the whole manual index (tens of
        // seconds per host); these hosts never read a man page.
        let _ = std::fs::remove_file(c.path("/var/lib/man-db/auto-update"));
    }

    /// After boot: install the .deb the way an operator does.
    fn after_boot(&self) {
        self.c.sh("dpkg -i /root/pkg/releasectl.deb >/dev/null");
        self.c.sh(&format!("mkdir -p {ROOT}"));
        self.c.wait_for("ssh and nginx", PATIENCE, || {
            let out = self.c.run("systemctl is-active ssh.service nginx.service");
            if out.status.success() {
                Ok(())
            } else {
                Err(self
                    .c
                    .run_text("systemctl status --no-pager ssh.service nginx.service"))
            }
        });
    }

    /// Where `current` points (the release id), read from the link itself.
    pub fn current(&self) -> Option<String> {
        self.current_in(ROOT)
    }

    /// Where `current` of the app root `root` points (the release id).
    pub fn current_in(&self, root: &str) -> Option<String> {
        let out = self.c.run(&format!("readlink {root}/current"));
        if !out.status.success() {
            return None;
        }
        let target = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(
            target
                .strip_prefix("releases/")
                .unwrap_or_else(|| panic!("{}: current -> {target}", self.name))
                .to_string(),
        )
    }

    /// `releasectl status web --json`: its exit code and document.
    pub fn status(&self) -> (i32, serde_json::Value) {
        self.status_of(APP)
    }

    /// `releasectl status APP --json` of any app on the host.
    pub fn status_of(&self, app: &str) -> (i32, serde_json::Value) {
        let out = self.c.run(&format!("releasectl --json status {app}"));
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: status --json is not JSON ({e}): {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), doc)
    }

    /// What this host's nginx serves at `/` right now (from the machine, as
    /// a client would see it), or the error.
    pub fn http_body(&self) -> String {
        match http_get(self.http_port) {
            Ok((200, body)) => body,
            Ok((code, body)) => format!("HTTP {code}: {body}"),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Stage `release` from a tarball holding `index.html` = `content`, and
    /// activate it, with releasectl on the host.
    pub fn deploy_direct(&self, release: &str, content: &str) {
        self.stage_direct(release, content);
        self.c.sh(&format!(
            "releasectl -q activate {APP}:{release} --lock-timeout 60"
        ));
    }

    pub fn stage_direct(&self, release: &str, content: &str) {
        self.c.write(
            &format!("/root/src-{release}/index.html"),
            content.as_bytes(),
        );
        self.c.sh(&format!(
            "releasectl -q stage --app {APP} --id {release} /root/src-{release}"
        ));
    }

    /// `find /srv/web -printf …`, sorted: types, modes, owners, paths and
    /// link targets of the whole app root.
    pub fn tree(&self) -> String {
        self.c
            .sh(&format!("find {ROOT} -printf '%y %m %u %p %l\\n' | sort"))
    }

    /// `find /srv/web -printf '%p %y %m %U %T@'`, sorted: the paths, types,
    /// modes, owners and modification times of the whole app root, to
    /// prove a run wrote nothing there (not even a file rewritten alike).
    pub fn tree_with_times(&self) -> String {
        self.c
            .sh(&format!("find {ROOT} -printf '%p %y %m %U %T@\\n' | sort"))
    }

    /// Rewrite the nginx include of this host and reload nginx.
    pub fn nginx_extra(&self, conf: &str) {
        self.c.write("/etc/nginx/fleet-extra.conf", conf);
        self.c.sh("nginx -t -q && systemctl reload nginx.service");
    }
}

fn enable(c: &Container, unit: &str) {
    let link = c.path(&format!(
        "/etc/systemd/system/multi-user.target.wants/{unit}"
    ));
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_file(c.path(&format!("/etc/systemd/system/{unit}")));
    std::os::unix::fs::symlink(format!("/lib/systemd/system/{unit}"), &link).expect("enable");
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// One HTTP/1.0 GET of `/` on 127.0.0.1:`port`: status and body.
pub fn http_get(port: u16) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// The journal of `unit` inside `c` (synced first), message text only.
pub fn journal(c: &Container, unit: &str) -> String {
    c.journal_sync();
    c.run_text(&format!("journalctl --no-pager -o cat -b -u '{unit}'"))
}
