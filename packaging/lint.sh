#!/bin/sh
# Lint the built packages (run packaging/build.sh first) and print both
# summaries. Fails on any lintian error or warning (overrides in
# packaging/debian/lintian-overrides, each with its reason) and on any
# rpmlint error (filters in packaging/rpm/rpmlint.toml, each with its reason).
set -eu
cd "$(dirname "$0")/.."

deb=$(ls -1 target/debian/releasectl_*.deb | tail -n 1)
rpm=$(ls -1 target/generate-rpm/releasectl-*.rpm | tail -n 1)

echo "== lintian $deb"
lintian --pedantic --display-info --show-overrides "$deb" | tee target/lintian.out || true
errors=$(grep -c '^E:' target/lintian.out || true)
warnings=$(grep -c '^W:' target/lintian.out || true)
overridden=$(grep -c '^O:' target/lintian.out || true)
echo "lintian summary: $errors errors, $warnings warnings, $overridden overridden"

echo "== rpmlint $rpm"
rpmlint -c packaging/rpm/rpmlint.toml "$rpm" | tee target/rpmlint.out || true
summary=$(grep 'packages and .* checked' target/rpmlint.out || true)
echo "rpmlint summary: $summary"

[ "$errors" -eq 0 ] && [ "$warnings" -eq 0 ] || { echo "lintian is not clean" >&2; exit 1; }
echo "$summary" | grep -q ' 0 errors' || { echo "rpmlint reports errors" >&2; exit 1; }
