# Sourced by the benchmarks that need a real systemd: boots systemd as PID 1
# in systemd-nspawn over a throwaway tmpfs overlay of this machine (as
# tests/it/systemd/nspawn.rs does) and tears it down on exit.
#
#   container_create NAME    mount the overlay; $root is its / (write files
#                            there before boot)
#   container_boot           boot it, wait until systemd is up
#   inside CMD...            run CMD in the container as root
# Masked before boot: services that would only slow it down (the container
# has its own network namespace, so nothing it runs clashes with the host).

base=
root=
nspawn_pid=
leader=

container_cleanup() {
    # Killing PID 1 ends every process of the container.
    [ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null || true
    [ -n "$nspawn_pid" ] && wait "$nspawn_pid" 2>/dev/null || true
    [ -n "$root" ] && mountpoint -q "$root" && umount "$root"
    [ -n "$base" ] && mountpoint -q "$base" && umount "$base"
    [ -n "$base" ] && rmdir "$base" 2>/dev/null || true
}

container_create() {
    [ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
    command -v systemd-nspawn >/dev/null || { echo "needs systemd-nspawn (systemd-container)" >&2; exit 1; }
    name=$1
    base=/run/rctl-test/$name
    root=$base/root
    trap container_cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$base"
    mount -t tmpfs tmpfs "$base"
    mkdir "$base/upper" "$base/work" "$root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$root"
    for unit in postgresql.service postgresql@.service nginx.service php8.2-fpm.service ssh.service ssh.socket; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
}

inside() { nsenter -t "$leader" -a -- /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

container_boot() {
    systemd-nspawn -D "$root" --boot --machine="$name" --register=no --keep-unit \
        --private-network --console=pipe </dev/null >"$base/console.log" 2>&1 &
    nspawn_pid=$!
    for _ in $(seq 600); do
        # The container's PID 1: nspawn's child that is PID 1 of its namespace.
        for pid in $(pgrep -P "$nspawn_pid"); do
            if awk '/^NSpid:/ { exit !($NF == 1) }' "/proc/$pid/status" 2>/dev/null; then leader=$pid; fi
        done
        if [ -n "$leader" ] && inside systemctl is-system-running 2>/dev/null | grep -qE '^(running|degraded)$'; then
            return 0
        fi
        sleep 0.1
    done
    echo "container did not boot" >&2
    tail "$base/console.log" >&2
    exit 1
}

# The release binary and the units from units/ (and their sysusers/tmpfiles
# entries), put in place before boot.
container_install_releasectl() {
    local bin=$1 units=$2
    install -m 0755 "$bin" "$root/usr/bin/releasectl"
    cp "$units"/*.service "$units"/*.path "$root/etc/systemd/system/"
    install -D -m 0644 "$units/releasectl.sysusers.conf" "$root/etc/sysusers.d/releasectl.conf"
    install -D -m 0644 "$units/releasectl.tmpfiles.conf" "$root/etc/tmpfiles.d/releasectl.conf"
}

# After boot: apply the sysusers/tmpfiles entries and load the units.
container_activate_installed() {
    inside sh -c 'systemd-sysusers /etc/sysusers.d/releasectl.conf &&
        systemd-tmpfiles --create /etc/tmpfiles.d/releasectl.conf &&
        systemctl daemon-reload'
}
