#!/usr/bin/env bash
# A throwaway tour of releasectl: stage two releases into a temp root,
# activate, fail a health check (automatic rollback), roll back, prune.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked
# Where cargo put it: CARGO_TARGET_DIR or build.target-dir if set, else target/.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=$target_dir/debug/releasectl
rctl() { echo "+ releasectl $*" >&2; "$bin" "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/srv/web
mkdir -p "$root" "$work/build"

echo "hello 1" > "$work/build/version"
rctl --root "$root" deploy "$work/build" --id v1
echo "hello 2" > "$work/build/version"
rctl --root "$root" deploy "$work/build" --id v2
echo "current/version: $(cat "$root/current/version")"

# A config-mode app whose health check fails: the activation rolls back by itself.
mkdir -p "$work/etc"
cat > "$work/etc/web.toml" <<TOML
root = "$root"
[health]
command = ["/bin/sh", "-c", "grep -q 'hello 3' version && exit 1; exit 0"]
interval = 0.1
timeout = 1
TOML
echo "hello 3" > "$work/build/version"
rctl --config-dir "$work/etc" stage --app web "$work/build" --id v3
rctl --config-dir "$work/etc" activate web:v3 || echo "(exit $?: v3 failed its health check and was rolled back)"
echo "current/version: $(cat "$root/current/version")"

rctl --root "$root" rollback
rctl --root "$root" list
rctl --root "$root" history
rctl --root "$root" prune --keep 1 --dry-run
rctl --root "$root" status
