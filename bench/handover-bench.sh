#!/usr/bin/env bash
# Failed requests while an app that can only restart is switched to a new
# release, under a real systemd, per way of switching:
#   - `ln -sfn && mv -T`, then `systemctl restart` (the baseline);
#   - `releasectl activate` with action = "restart" and a health gate;
#   - the same with the listener held by a .socket unit (socket handover).
# The app is examples/handover/app.py, made slow to start (0.5 s, like a
# real app loading its code). Load: paced clients, a new connection per
# request, a 2 s timeout (bench/handover-driver.py). Prints failed/total
# and p50/p99 latency per mode. A benchmark: it asserts nothing.
#
# Usage: sudo bench/handover-bench.sh [MODE...]   (plain restart socket)
#   RELEASECTL_BIN=path   binary to install (default target/release/releasectl)
#   SWITCHES=N CLIENTS=N PACE=SECS   the load (default 10, 4, 0.01)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/container.sh

target_dir=${CARGO_TARGET_DIR:-target}
bin=${RELEASECTL_BIN:-$target_dir/release/releasectl}
[ -x "$bin" ] || cargo build --release --quiet
switches=${SWITCHES:-10}

container_create "rctl-handover-$$"
container_install_releasectl "$bin" units
install -D -m 0755 examples/handover/app.py "$root/usr/local/lib/handover/app.py"
install -D -m 0755 bench/handover-driver.py "$root/usr/local/lib/handover/driver.py"

# One app per mode, each on its own port, each with releases v0..vN.
unit() { # NAME PORT-ENV EXTRA
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
printf '[Socket]\nListenStream=127.0.0.1:9403\nAccept=no\nBacklog=4096\n' \
    > "$root/etc/systemd/system/socket.socket"
for app in plain restart socket; do
    for i in $(seq 0 "$switches"); do mkdir -p "$root/srv/$app/releases/v$i"; done
done
for app in restart socket; do
    port=$([ $app = restart ] && echo 9402 || echo 9403)
    mkdir -p "$root/etc/releasectl"
    cat > "$root/etc/releasectl/$app.toml" <<TOML
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

container_boot
container_activate_installed
inside sh -c 'ln -sfn releases/v0 /srv/plain/current &&
    releasectl -q activate restart:v0 --no-reload --no-health &&
    releasectl -q activate socket:v0 --no-reload --no-health &&
    systemctl start plain.service restart.service socket.socket socket.service'
inside env SWITCHES="$switches" CLIENTS="${CLIENTS:-4}" PACE="${PACE:-0.01}" \
    python3 /usr/local/lib/handover/driver.py "$@"
