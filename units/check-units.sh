#!/bin/sh
# Check the installed-file set in units/: `systemd-analyze verify` on every
# unit, a dry run of the sysusers.d and tmpfiles.d entries into a scratch
# root, and the `systemd-analyze security --offline` exposure of the
# activation units (goal: at most 3.5). Prints the exposure; exits non-zero
# on any finding.
#
#   units/check-units.sh [PATH/TO/releasectl]   (default: target/release, then target/debug)
#
# verify refuses an ExecStart= whose binary is missing, and the binary is not
# installed at /usr/bin on a build host: the units are checked as copies
# whose ExecStart= points at the built binary, nothing else changed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bin=${1:-}
if [ -z "$bin" ]; then
    for b in "$repo/target/release/releasectl" "$repo/target/debug/releasectl"; do
        if [ -x "$b" ]; then bin=$b; break; fi
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "check-units: no built releasectl (cargo build first, or pass its path)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
max_exposure=3.5

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
units="$scratch/units"
mkdir "$units"
for f in "$here"/*.service "$here"/*.path "$here"/*.timer; do
    sed "s|/usr/bin/releasectl|$bin|g" "$f" >"$units/$(basename "$f")"
done

failed=0
# Templates are verified through an instance, the way systemd loads them.
for name in deploy@.service deploy-watch@.path deploy-watch@.service releasectl-recover.service \
    releasectl-prune@.timer releasectl-prune@.service; do
    case $name in
        # (a ':' in a file name confuses verify, so "web", not "web:v2")
        *@.*) inst=$(echo "$name" | sed 's/@\./@web./') ;;
        *) inst=$name ;;
    esac
    [ "$inst" = "$name" ] || cp "$units/$name" "$units/$inst"
    # --man=no: the man pages are installed by the packages, not on a build host.
    if out=$(systemd-analyze verify --man=no "$units/$inst" 2>&1) && [ -z "$out" ]; then
        echo "verify    $name: clean"
    else
        echo "verify    $name: FAILED"; echo "$out" | sed 's/^/    /'; failed=1
    fi
    [ "$inst" = "$name" ] || rm "$units/$inst"
done

# sysusers first, so that tmpfiles can resolve the group in the same root.
root="$scratch/root"
mkdir -p "$root/etc"
# With --root, both tools want the config file inside the root, by its full path.
cp "$here/releasectl.sysusers.conf" "$here/releasectl.tmpfiles.conf" "$root/"
if out=$(systemd-sysusers --root="$root" "$root/releasectl.sysusers.conf" 2>&1) \
    && grep -q '^releasectl:' "$root/etc/group"; then
    echo "sysusers  releasectl.sysusers.conf: creates group releasectl"
else
    echo "sysusers  releasectl.sysusers.conf: FAILED"; echo "$out" | sed 's/^/    /'; failed=1
fi
if out=$(systemd-tmpfiles --create --root="$root" "$root/releasectl.tmpfiles.conf" 2>&1) \
    && gid=$(sed -n 's/^releasectl:[^:]*:\([0-9]*\):.*/\1/p' "$root/etc/group") \
    && [ "$(stat -c '%a %g %u' "$root/var/lib/releasectl/requests")" = "2775 $gid 0" ]; then
    echo "tmpfiles  releasectl.tmpfiles.conf: requests/ is 2775 root:releasectl"
else
    echo "tmpfiles  releasectl.tmpfiles.conf: FAILED"; echo "$out" | sed 's/^/    /'; failed=1
fi
if [ "$(stat -c '%a %g %u' "$root/var/lib/releasectl/results")" = "750 $gid 0" ]; then
    echo "tmpfiles  releasectl.tmpfiles.conf: results/ is 0750 root:releasectl"
else
    echo "tmpfiles  releasectl.tmpfiles.conf: FAILED"; echo "$out" | sed 's/^/    /'; failed=1
fi

for name in deploy@.service deploy-watch@.service releasectl-recover.service releasectl-prune@web.service; do
    [ "$name" = releasectl-prune@web.service ] && cp "$units/releasectl-prune@.service" "$units/$name"
    out=$(systemd-analyze security --offline=true --no-pager "$units/$name" 2>&1) || true
    exposure=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ -z "$exposure" ]; then
        echo "security  $name: FAILED"; echo "$out" | tail -5 | sed 's/^/    /'; failed=1
    elif awk "BEGIN { exit !($exposure <= $max_exposure) }"; then
        echo "security  $name: exposure $exposure (max $max_exposure)"
    else
        echo "security  $name: exposure $exposure, above $max_exposure"; failed=1
    fi
done
exit $failed
