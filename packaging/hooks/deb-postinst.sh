# releasectl hook for an app package's postinst (POSIX sh).
#
# Paste below `set -e` in debian/postinst, after setting:
#   releasectl_app=hello          # the app, /etc/releasectl/hello.toml
#   releasectl_release=1.0        # the release this package ships in
#                                 # ROOT/releases/1.0/ (substituted at build)
# On `configure` it activates APP:RELEASE through deploy@APP:RELEASE.service,
# so the activation is a systemd job with its own journal. If the activation
# fails (the previous release is then active again), releasectl's messages are
# printed and the postinst fails, so dpkg reports the package as not
# configured.
# Without a running systemd (a chroot, an image build, SYSTEMD_OFFLINE=1,
# where `systemctl start` would print "Running in chroot" and succeed
# without doing anything) the release is activated directly, without
# reloading units or checking health, since no service is running there.

releasectl_systemd_running() {
	[ -d /run/systemd/system ] && [ "${SYSTEMD_OFFLINE:-0}" != 1 ] &&
		! systemd-detect-virt --quiet --chroot 2>/dev/null
}

releasectl_activate() {
	# A release whose activation failed before is not tried again on every
	# later apt/dnf run (dpkg keeps the package unconfigured and reruns this);
	# RELEASECTL_FORCE=1 tries it anyway.
	# The check's own line names --refuse-bad, a flag of this script, not
	# the operator's: a bad release gets a line of its own; any other
	# refusal (unknown app, missing release) is shown as releasectl says it.
	if [ "${RELEASECTL_FORCE:-0}" != 1 ] &&
		! releasectl_why=$(releasectl activate --dry-run --refuse-bad "$1:$2" 2>&1 >/dev/null); then
		case $releasectl_why in
		*" is marked bad "*)
			echo "releasectl: $1:$2 is marked bad: its last activation failed (see releasectl history $1); not activating it again" >&2 ;;
		*) echo "$releasectl_why" >&2 ;;
		esac
		echo "releasectl: not activating $1:$2; fix the release and rerun with RELEASECTL_FORCE=1, or remove its package" >&2
		return 1
	fi
	if ! releasectl_systemd_running; then
		releasectl activate --no-reload --no-health "$1:$2"
		return
	fi
	# systemd-escape keeps ':' and escapes what a unit name cannot hold
	# (e.g. '~', '+', '-'); releasectl decodes \xNN in the instance.
	releasectl_unit=$(systemd-escape --template=deploy@.service "$1:$2")
	if systemctl start "$releasectl_unit"; then
		return 0
	fi
	# systemctl only says "see journalctl": show releasectl's own words,
	# from this run of the unit only.
	releasectl_inv=$(systemctl show -p InvocationID --value "$releasectl_unit")
	journalctl --sync >/dev/null 2>&1 || true
	journalctl -q --no-pager -o cat _SYSTEMD_INVOCATION_ID="$releasectl_inv" >&2 || true
	echo "releasectl: activating $1:$2 failed; see journalctl -u $releasectl_unit" >&2
	return 1
}

case "$1" in
configure)
	releasectl_activate "$releasectl_app" "$releasectl_release"
	;;
esac
