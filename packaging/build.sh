#!/bin/sh
# Build the releasectl packages:
#   target/debian/releasectl_<version>-<rev>_<arch>.deb      (cargo deb)
#   target/generate-rpm/releasectl-<version>-<rev>.<arch>.rpm (cargo generate-rpm)
#
# Usage: packaging/build.sh [--deb-revision N]
#   --deb-revision N   package revision for both formats (default 1); the
#                      upgrade test builds a "newer" package this way.
#
# Generated assets go to target/pkg-assets/: shell completions produced by
# the built binary itself (`releasectl completions SHELL`, from the same clap
# definitions as the man page) and gzip -9n man pages for the rpm (cargo-deb
# compresses the deb's own copies). Needs cargo-deb and cargo-generate-rpm:
#   cargo install --locked cargo-deb cargo-generate-rpm
set -eu

revision=1
while [ $# -gt 0 ]; do
	case "$1" in
	--deb-revision) revision=$2; shift 2 ;;
	*) echo "usage: $0 [--deb-revision N]" >&2; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."
# cargo-deb and cargo-generate-rpm read target/release/ and write under
# target/: the standard layout, whatever the environment says.
unset CARGO_TARGET_DIR

cargo build --release --locked
assets=target/pkg-assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"

bin=target/release/releasectl
"$bin" completions bash >"$assets/completions/releasectl.bash"
"$bin" completions zsh >"$assets/completions/_releasectl"
"$bin" completions fish >"$assets/completions/releasectl.fish"

for page in man/releasectl.1 man/releasectl.toml.5 man/deploy@.service.8; do
	gzip -9n <"$page" >"$assets/man/$(basename "$page").gz"
done

rm -f target/debian/releasectl_*.deb target/generate-rpm/releasectl-*.rpm
cargo deb --no-build --deb-revision "$revision"
cargo generate-rpm --set-metadata "release = \"$revision\""

ls -1 target/debian/releasectl_*.deb target/generate-rpm/releasectl-*.rpm
