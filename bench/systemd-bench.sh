#!/usr/bin/env bash
# What an activation costs over the reload it wraps, under a real systemd.
#
# Boots systemd as PID 1 in systemd-nspawn over a throwaway overlay of this
# machine (as ../tests/systemd/nspawn.rs does), installs the release binary and
# the units from units/, and times, interleaved so noise hits both alike:
#   - `systemctl reload rctl-bench.service`        (the baseline)
#   - `systemctl start deploy@app:vN`              (swap + one reload of that
#                                                   unit over D-Bus + commit)
#   - `releasectl activate app:vN`                 (the same, run directly: the
#                                                   difference is what the
#                                                   sandboxed unit costs)
#   - `systemctl start rctl-noop.service`          (a oneshot /bin/true: the
#                                                   floor of any unit start)
# with N alternating between two releases so every activation really swaps.
# Prints medians and their ratio (the goal: at most 1.5x). A benchmark, not a
# test: it asserts nothing about time.
#
# Usage: sudo bench/systemd-bench.sh [RUNS]      (default 30)
#   RELEASECTL_BIN=path  binary to install (default: target/release/releasectl,
#                        built with `cargo build --release` when missing)
#   BENCH_UNITS=dir      unit files to install (default units/), e.g. to see
#                        what the hardening of deploy@.service costs
#   BENCH_RELOAD=cmd     the unit's ExecReload (default /bin/true: the cheapest
#                        reload, so the ratio shows releasectl's overhead at
#                        its most visible)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/container.sh

runs=${1:-30}
reload_cmd=${BENCH_RELOAD:-/bin/true}
units=${BENCH_UNITS:-units}

target_dir=${CARGO_TARGET_DIR:-target}
bin=${RELEASECTL_BIN:-$target_dir/release/releasectl}
if [ ! -x "$bin" ]; then
    cargo build --release --quiet
fi

container_create "rctl-bench-$$"
container_install_releasectl "$bin" "$units"
cat > "$root/etc/systemd/system/rctl-bench.service" <<EOF
[Service]
ExecStart=/bin/sleep infinity
ExecReload=$reload_cmd
EOF
printf '[Service]\nType=oneshot\nExecStart=/bin/true\n' > "$root/etc/systemd/system/rctl-noop.service"
mkdir -p "$root/etc/releasectl" "$root/srv/app/releases/v1" "$root/srv/app/releases/v2"
echo 1 > "$root/srv/app/releases/v1/version"
echo 2 > "$root/srv/app/releases/v2/version"
cat > "$root/etc/releasectl/app.toml" <<'EOF'
root = "/srv/app"
[services]
units = ["rctl-bench.service"]
action = "reload"
EOF

container_boot
container_activate_installed
inside sh -c 'systemctl start rctl-bench.service &&
    releasectl activate app:v1 --no-reload'

inside python3 - "$runs" <<'EOF'
import os, statistics, subprocess, sys, time

runs = int(sys.argv[1])

def timed(argv):
    t = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t

# One warm-up of each, so first-use costs (page cache, unit loading) are
# not in the figures.
timed(["systemctl", "reload", "rctl-bench.service"])
timed(["systemctl", "start", "deploy@app:v2"])
timed(["systemctl", "start", "rctl-noop.service"])
reload, activate, direct, noop = [], [], [], []
for _ in range(runs):
    # The warm-up left v2 current: the unit swaps to v1, the direct run back.
    target, back = "v1", "v2"
    reload.append(timed(["systemctl", "reload", "rctl-bench.service"]))
    activate.append(timed(["systemctl", "start", f"deploy@app:{target}"]))
    # Every activation must have swapped, or it measured "already active".
    got = os.readlink("/srv/app/current")
    assert got == f"releases/{target}", got
    direct.append(timed(["releasectl", "-q", "activate", f"app:{back}"]))
    noop.append(timed(["systemctl", "start", "rctl-noop.service"]))
    got = os.readlink("/srv/app/current")
    assert got == f"releases/{back}", got

ms = lambda xs: statistics.median(xs) * 1000
print(f"runs: {runs} each, interleaved")
print(f"systemctl reload rctl-bench.service   median {ms(reload):7.1f} ms  "
      f"(min {min(reload)*1000:.1f}, max {max(reload)*1000:.1f})")
print(f"systemctl start deploy@app:vN         median {ms(activate):7.1f} ms  "
      f"(min {min(activate)*1000:.1f}, max {max(activate)*1000:.1f})")
print(f"releasectl activate app:vN (direct) median {ms(direct):7.1f} ms  "
      f"(min {min(direct)*1000:.1f}, max {max(direct)*1000:.1f})")
print(f"systemctl start rctl-noop.service    median {ms(noop):7.1f} ms  "
      f"(min {min(noop)*1000:.1f}, max {max(noop)*1000:.1f})")
print(f"ratio deploy@ start / reload: {ms(activate) / ms(reload):.2f}x (goal <= 1.5x)")
print(f"ratio direct activate / reload: {ms(direct) / ms(reload):.2f}x")
EOF
