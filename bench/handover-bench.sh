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
# nginx fronts the blue/green app.
rm -f "$root/etc/systemd/system/nginx.service" "$root/etc/nginx/sites-enabled/default"
start=$(bench/handover-setup.sh "$root" "$switches" | sed -n "s/^START: //p")

container_boot
container_activate_installed
inside sh -c "$start"
inside env SWITCHES="$switches" CLIENTS="${CLIENTS:-4}" PACE="${PACE:-0.01}" \
    python3 /usr/local/lib/handover/driver.py "$@"
