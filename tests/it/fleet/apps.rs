//! The two modes for apps that must restart to run new code (README,
//! "Restarts without refused connections (socket handover)" and "Blue/green
//! overlap (no client waits)"), laid out on a fleet host the way the README
//! and `bench/handover-setup.sh` lay them out, with the demo app
//! `examples/handover/app.py` (it answers `release ID`, ID being the release
//! directory it runs in):
//!
//! - `bg`: two instances of the template unit `bg@.service` (slots blue and
//!   green, each on a port of this host's own), behind this host's nginx on
//!   [`Ports::bg_front`] through the front file releasectl writes;
//! - `sock`: `sock.service` restarted on every activation, its listener held
//!   by `sock.socket` on [`Ports::sock`].
//!
//! Only the scenarios that use them set them up, each time from nothing (no
//! instance running, an empty app root), so the stock `web` scenarios never
//! see them and the order of the scenarios does not matter.

use super::fixture::{http_get, Host, Ports};

pub const BG: &str = "bg";
pub const BG_ROOT: &str = "/srv/bg";
pub const SOCK: &str = "sock";
pub const SOCK_ROOT: &str = "/srv/sock";
const APP_PY: &str = "/usr/local/lib/handover/app.py";
const FRONT: &str = "/var/lib/releasectl/fronts/bg.conf";
const SLOTS: [&str; 2] = ["blue", "green"];

/// What the demo app answers when it runs release `id`.
pub fn demo_body(id: &str) -> String {
    format!("release {id}\n")
}

/// The file a release ships to make its `bg` instance fail to start on
/// `host` only (the template unit of each host looks for its own name).
pub fn fail_on(host: &str) -> String {
    format!("FAIL_ON_{host}")
}

fn bg_unit(host: &str) -> String {
    format!(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=notify\nNotifyAccess=main\n\
         WorkingDirectory={BG_ROOT}/slots/%i\nEnvironmentFile=/etc/bg/%i.env\n\
         Environment=DEMO_START_DELAY=0.5\n\
         ExecStartPre=/bin/sh -c '! test -e {fail}'\n\
         ExecStart=/usr/bin/python3 {APP_PY}\n",
        fail = fail_on(host)
    )
}

fn bg_config(p: &Ports) -> String {
    format!(
        r#"root = "{BG_ROOT}"

[bluegreen]
unit = "bg@.service"
slots = {{ blue = {blue}, green = {green} }}
front = "{FRONT}"
front_units = ["nginx.service"]
drain = 1

[health]
url = "http://127.0.0.1:{{port}}/"
expect = "release {{release}}"
interval = 0.1
timeout = 20
"#,
        blue = p.blue,
        green = p.green
    )
}

fn bg_nginx(p: &Ports) -> String {
    format!(
        "upstream fleet_bg {{ include {FRONT}; }}\nserver {{\n    listen 127.0.0.1:{};\n    \
         location / {{ proxy_pass http://fleet_bg; proxy_next_upstream off; }}\n}}\n",
        p.bg_front
    )
}

fn sock_units(p: &Ports) -> (String, String) {
    (
        format!("[Socket]\nListenStream=127.0.0.1:{}\nAccept=no\n", p.sock),
        format!(
            "[Unit]\nRequires=sock.socket\nAfter=sock.socket\nStartLimitIntervalSec=0\n\
             [Service]\nType=notify\nNotifyAccess=main\nWorkingDirectory={SOCK_ROOT}/current\n\
             Environment=DEMO_START_DELAY=0.5\nExecStart=/usr/bin/python3 {APP_PY}\n"
        ),
    )
}

fn sock_config(p: &Ports) -> String {
    format!(
        r#"root = "{SOCK_ROOT}"

[services]
units = ["sock.service"]
action = "restart"

[health]
url = "http://127.0.0.1:{}/"
expect = "release {{release}}"
interval = 0.1
timeout = 20
"#,
        p.sock
    )
}

impl Host {
    /// `bg` from nothing: both instances stopped, an empty app root, the
    /// front naming blue (so the first activation starts green), then
    /// `release` activated directly.
    pub fn start_bluegreen_at(&self, release: &str) {
        let c = &self.c;
        c.sh(&format!(
            "systemctl stop bg@blue.service bg@green.service 2>/dev/null; \
             systemctl reset-failed 'bg@*' 2>/dev/null; \
             rm -rf {BG_ROOT} && mkdir -p {BG_ROOT} && \
             install -d -m 0755 /var/lib/releasectl/fronts /etc/bg"
        ));
        c.write(APP_PY, include_str!("../../../examples/handover/app.py"));
        c.sh(&format!("chmod 0755 {APP_PY}"));
        c.write("/etc/systemd/system/bg@.service", bg_unit(&self.name));
        for (slot, port) in [("blue", self.ports.blue), ("green", self.ports.green)] {
            c.write(
                &format!("/etc/bg/{slot}.env"),
                format!("DEMO_PORT={port}\n"),
            );
        }
        c.write(FRONT, format!("server 127.0.0.1:{};\n", self.ports.blue));
        c.write("/etc/releasectl/bg.toml", bg_config(&self.ports));
        c.write("/etc/nginx/conf.d/fleet-bg.conf", bg_nginx(&self.ports));
        c.sh("systemctl daemon-reload && nginx -t -q && systemctl reload nginx.service");
        self.deploy_files(BG, release, &[("index.html", &demo_body(release))]);
    }

    /// `sock` from nothing: the service stopped, an empty app root, the
    /// socket listening, then `release` activated directly (its restart
    /// starts the service).
    pub fn start_socket_app_at(&self, release: &str) {
        let c = &self.c;
        c.sh(&format!(
            "systemctl stop sock.service sock.socket 2>/dev/null; \
             systemctl reset-failed sock.service sock.socket 2>/dev/null; \
             rm -rf {SOCK_ROOT} && mkdir -p {SOCK_ROOT}"
        ));
        c.write(APP_PY, include_str!("../../../examples/handover/app.py"));
        c.sh(&format!("chmod 0755 {APP_PY}"));
        let (socket, service) = sock_units(&self.ports);
        c.write("/etc/systemd/system/sock.socket", socket);
        c.write("/etc/systemd/system/sock.service", service);
        c.write("/etc/releasectl/sock.toml", sock_config(&self.ports));
        c.sh("systemctl daemon-reload && systemctl start sock.socket");
        self.deploy_files(SOCK, release, &[("index.html", &demo_body(release))]);
    }

    /// Stage `release` of `app` holding `files`, and activate it, with
    /// releasectl on the host.
    pub fn deploy_files(&self, app: &str, release: &str, files: &[(&str, &str)]) {
        let src = format!("/root/src-{app}-{release}");
        for (name, content) in files {
            self.c.write(&format!("{src}/{name}"), content.as_bytes());
        }
        self.c.sh(&format!(
            "releasectl -q stage --app {app} --id {release} {src} && \
             releasectl -q activate {app}:{release} --lock-timeout 60"
        ));
    }

    /// The slots whose `bg` instance is active.
    pub fn bg_active(&self) -> Vec<&'static str> {
        SLOTS
            .into_iter()
            .filter(|s| {
                self.c
                    .run(&format!("systemctl is-active -q bg@{s}.service"))
                    .status
                    .success()
            })
            .collect()
    }

    pub fn bg_port(&self, slot: &str) -> u16 {
        match slot {
            "blue" => self.ports.blue,
            "green" => self.ports.green,
            _ => panic!("no slot {slot}"),
        }
    }

    /// The front file's text.
    pub fn bg_front(&self) -> String {
        std::fs::read_to_string(self.c.path(FRONT)).unwrap_or_default()
    }

    /// What `port` on this host answers at `/`, or the error.
    pub fn body_on(&self, port: u16) -> String {
        match http_get(port) {
            Ok((200, body)) => body,
            Ok((code, body)) => format!("HTTP {code}: {body}"),
            Err(e) => format!("error: {e}"),
        }
    }
}
