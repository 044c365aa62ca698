#!/usr/bin/env bash
# Lays out the apps of the handover benchmark under the machine root ROOT
# (a container's /, seen from outside): the demo app and the driver in
# /usr/local/lib/handover/, one app per mode with releases v0..vSWITCHES,
# their units and their releasectl configs. Used by handover-bench.sh and
# by the real-systemd test that asserts the numbers (tests/it/systemd).
#
# Usage: bench/handover-setup.sh ROOT SWITCHES
#   then, inside: systemctl daemon-reload && bench/handover-setup.sh's
#   START line (printed last) starts the apps at v0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$1
switches=$2

install -D -m 0755 examples/handover/app.py "$root/usr/local/lib/handover/app.py"
install -D -m 0755 bench/handover-driver.py "$root/usr/local/lib/handover/driver.py"

# One app per mode, each on its own port.
unit() { # NAME PORT-ENV EXTRA-UNIT-LINES
    cat > "$root/etc/systemd/system/$1.service" <<UNIT
[Unit]
# Ten restarts in a few seconds are the point here, not a crash loop.
StartLimitIntervalSec=0
$3
[Service]
Type=notify
NotifyAccess=main
WorkingDirectory=/srv/$1/current
Environment=DEMO_START_DELAY=0.5 $2
ExecStart=/usr/bin/python3 /usr/local/lib/handover/app.py
UNIT
}
unit plain DEMO_PORT=9401 ""
unit restart DEMO_PORT=9402 ""
unit socket "" $'Requires=socket.socket\nAfter=socket.socket'
printf '[Socket]\nListenStream=127.0.0.1:9403\nAccept=no\n' >"$root/etc/systemd/system/socket.socket"
for app in plain restart socket; do
    rm -rf "${root:?}/srv/$app"
    for i in $(seq 0 "$switches"); do mkdir -p "$root/srv/$app/releases/v$i"; done
done
mkdir -p "$root/etc/releasectl"
for app in restart socket; do
    port=$([ "$app" = restart ] && echo 9402 || echo 9403)
    cat >"$root/etc/releasectl/$app.toml" <<TOML
root = "/srv/$app"
[services]
units = ["$app.service"]
action = "restart"
[health]
url = "http://127.0.0.1:$port/"
expect = "release {release}"
interval = 0.1
timeout = 20
TOML
done
# Blue/green: two instances of a template unit, each on its own port, the
# slot's link under /srv/bg/slots/ as its working directory; nginx on 9410
# in front, its upstream the file releasectl switches. A release that ships
# a file BROKEN fails to start (the gate's failure case in the test).
cat > "$root/etc/systemd/system/bg@.service" <<'UNIT'
[Unit]
StartLimitIntervalSec=0
[Service]
Type=notify
NotifyAccess=main
DynamicUser=yes
WorkingDirectory=/srv/bg/slots/%i
EnvironmentFile=/etc/handover/%i.env
Environment=DEMO_START_DELAY=0.5
ExecStartPre=/bin/sh -c '! test -e BROKEN'
ExecStart=/usr/bin/python3 /usr/local/lib/handover/app.py
# Enabled by the power-cut test: both start at boot, on their slots.
[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$root/etc/handover" "$root/var/lib/releasectl/fronts" "$root/etc/nginx/sites-enabled"
echo DEMO_PORT=9411 >"$root/etc/handover/blue.env"
echo DEMO_PORT=9412 >"$root/etc/handover/green.env"
# The front before the first activation: it must name a server for nginx
# to start; releasectl finds blue fronted (and not running) and starts green.
echo 'server 127.0.0.1:9411;' >"$root/var/lib/releasectl/fronts/bg.conf"
cat >"$root/etc/nginx/sites-enabled/handover-bg" <<'SITE'
upstream handover_bg { include /var/lib/releasectl/fronts/bg.conf; }
server {
  listen 127.0.0.1:9410;
  location / { proxy_pass http://handover_bg; proxy_next_upstream off; }
}
SITE
rm -rf "${root:?}/srv/bg"
for i in $(seq 0 "$switches"); do mkdir -p "$root/srv/bg/releases/v$i"; done
mkdir -p "$root/srv/bg/releases/broken" && touch "$root/srv/bg/releases/broken/BROKEN"
cat >"$root/etc/releasectl/bg.toml" <<'TOML'
root = "/srv/bg"
[bluegreen]
unit = "bg@.service"
slots = { blue = 9411, green = 9412 }
front = "/var/lib/releasectl/fronts/bg.conf"
front_units = ["nginx.service"]
# At most: a drain ends once the old instance's connections are closed.
drain = 10
[health]
url = "http://127.0.0.1:{port}/"
expect = "release {release}"
interval = 0.1
timeout = 20
TOML
echo "START: ln -sfn releases/v0 /srv/plain/current && releasectl -q activate restart:v0 --no-reload --no-health && releasectl -q activate socket:v0 --no-reload --no-health && systemctl start plain.service restart.service socket.socket socket.service && systemctl reload-or-restart nginx.service && releasectl -q activate bg:v0"
