#!/bin/sh
# Build the example app "hello" as Debian packages, into OUTDIR:
#   hello-common_1.0_all.deb   /etc/releasectl/hello.toml, nginx config, hello.service
#   hello-1.0_1.0_all.deb      /srv/hello/releases/1.0/ (+ the releasectl hooks)
#   hello-2.0_2.0_all.deb      /srv/hello/releases/2.0/
#   hello-3.0_3.0_all.deb      /srv/hello/releases/3.0/, whose health check fails
#                              (it ships no /healthz)
#
# Each release is its own package, named with its version (like kernel
# packages), so the previous release stays on disk to be rolled back to; an
# in-place upgrade of one package would delete the old release's files
# before the new postinst activates anything. The maintainer scripts are the
# hooks from packaging/hooks/ with the app and release set above them.
#
# Usage: packaging/examples/hello/build.sh OUTDIR
set -eu

out=${1:?usage: $0 OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
hooks=$here/../../hooks
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

maintainer="releasectl maintainers <releasectl@lists.example.org>"

# hello-common
d=$work/hello-common
install -D -m 644 "$here/common/hello.toml" "$d/etc/releasectl/hello.toml"
install -D -m 644 "$here/common/nginx.conf" "$d/etc/hello/nginx.conf"
install -D -m 644 "$here/common/hello.service" "$d/lib/systemd/system/hello.service"
install -D -m 755 "$here/common/postinst" "$d/DEBIAN/postinst"
install -D -m 755 "$here/common/prerm" "$d/DEBIAN/prerm"
printf '/etc/releasectl/hello.toml\n/etc/hello/nginx.conf\n' >"$d/DEBIAN/conffiles"
cat >"$d/DEBIAN/control" <<CONTROL
Package: hello-common
Version: 1.0
Architecture: all
Maintainer: $maintainer
Depends: releasectl, nginx-light | nginx
Section: web
Priority: optional
Description: hello example app: configuration and service
 The releasectl configuration, nginx configuration and systemd unit shared
 by every release package of the hello example app.
CONTROL
dpkg-deb --root-owner-group --build "$d" "$out/hello-common_1.0_all.deb" >/dev/null

# One maintainer script: the hook, below the app and release it acts on.
script() { # HOOK RELEASE
	printf '#!/bin/sh\nset -e\nreleasectl_app=hello\nreleasectl_release=%s\n\n' "$2"
	cat "$hooks/$1"
	printf '\nexit 0\n'
}

for version in 1.0 2.0 3.0; do
	d=$work/hello-$version
	rel=$d/srv/hello/releases/$version
	mkdir -p "$rel/public" "$d/DEBIAN"
	echo "hello $version" >"$rel/public/index.html"
	# Release 3.0 is broken on purpose: no health endpoint.
	if [ "$version" != 3.0 ]; then
		echo "release $version" >"$rel/public/healthz"
	fi
	script deb-postinst.sh "$version" >"$d/DEBIAN/postinst"
	script deb-prerm.sh "$version" >"$d/DEBIAN/prerm"
	chmod 755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm"
	cat >"$d/DEBIAN/control" <<CONTROL
Package: hello-$version
Version: $version
Architecture: all
Maintainer: $maintainer
Depends: releasectl, hello-common
Provides: hello-release
Section: web
Priority: optional
Description: hello example app, release $version
 Ships /srv/hello/releases/$version/ and activates it on install through
 deploy@hello:$version.service.
CONTROL
	dpkg-deb --root-owner-group --build "$d" "$out/hello-${version}_${version}_all.deb" >/dev/null
done

ls -1 "$out"/hello-*.deb
