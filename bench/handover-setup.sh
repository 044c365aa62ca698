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
echo "START: ln -sfn releases/v0 /srv/plain/current && releasectl -q activate restart:v0 --no-reload --no-health && releasectl -q activate socket:v0 --no-reload --no-health && systemctl start plain.service restart.service socket.socket socket.service"
