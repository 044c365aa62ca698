# releasectl hook for an app package's %posttrans (POSIX sh).
#
# Use in the spec as:
#   %posttrans
#   releasectl_app=hello
#   releasectl_release=%{version}
#   <this file>
# It activates APP:RELEASE through deploy@APP:RELEASE.service once the whole
# transaction has laid out the files. rpm does not undo a transaction when
# %posttrans fails: the package stays installed, rpm prints releasectl's
# message and a "%posttrans scriptlet failed" warning, and `current` keeps
# pointing at the previous release.

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
	releasectl_unit=$(systemd-escape --template=deploy@.service "$1:$2")
	if systemctl start "$releasectl_unit"; then
		return 0
	fi
	releasectl_inv=$(systemctl show -p InvocationID --value "$releasectl_unit")
	journalctl --sync >/dev/null 2>&1 || :
	journalctl -q --no-pager -o cat _SYSTEMD_INVOCATION_ID="$releasectl_inv" >&2 || :
	echo "releasectl: activating $1:$2 failed; see journalctl -u $releasectl_unit" >&2
	return 1
}

releasectl_activate "$releasectl_app" "$releasectl_release"
