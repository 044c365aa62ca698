# releasectl hook for an app package's %preun (POSIX sh).
#
# Use in the spec after setting releasectl_app and releasectl_release as in
# the %posttrans hook. On erase ($1 = 0) of the ACTIVE release's package it
# rolls back to the previous good release, and fails (rpm then keeps the
# package) when there is none or the rollback fails; see deb-prerm.sh.

releasectl_systemd_running() {
	[ -d /run/systemd/system ] && [ "${SYSTEMD_OFFLINE:-0}" != 1 ] &&
		! systemd-detect-virt --quiet --chroot 2>/dev/null
}

releasectl_guard_removal() {
	command -v releasectl >/dev/null 2>&1 || return 0
	# An app that is no longer configured has nothing to guard; one whose
	# status cannot be read (a broken config) is not removed blindly.
	[ -e "/etc/releasectl/$1.toml" ] || return 0
	if ! releasectl_status=$(releasectl status "$1"); then
		echo "releasectl: cannot read the status of $1; refusing to remove $1:$2" >&2
		return 1
	fi
	releasectl_current=$(printf '%s\n' "$releasectl_status" | sed -n 's/^current: *//p')
	[ "$releasectl_current" = "$2" ] || return 0
	if [ -n "${RELEASECTL_REMOVE_ACTIVE:-}" ]; then
		echo "releasectl: removing the active release $1:$2 (RELEASECTL_REMOVE_ACTIVE is set)" >&2
		return 0
	fi
	echo "releasectl: $1:$2 is the active release; rolling back before it is removed" >&2
	# No running systemd (chroot, image build): no units to reload, no service to check.
	releasectl_offline=
	releasectl_systemd_running || releasectl_offline="--no-reload --no-health"
	releasectl rollback "$1" --expect-current "$2" $releasectl_offline && return 0
	echo "releasectl: refusing to remove $1:$2: it is still the active release." >&2
	echo "releasectl: activate another release first, or set RELEASECTL_REMOVE_ACTIVE=1 to remove it anyway." >&2
	return 1
}

if [ "$1" -eq 0 ]; then
	releasectl_guard_removal "$releasectl_app" "$releasectl_release"
fi
