# releasectl hook for an app package's prerm (POSIX sh).
#
# Paste below `set -e` in debian/prerm, after setting releasectl_app and
# releasectl_release as in the postinst hook.
#
# Removing the package of the ACTIVE release first rolls the app back to its
# previous good release (`releasectl rollback`, the same transaction as any
# activation: reload, health check). If there is none, or the rollback fails,
# the removal is refused: dpkg keeps the package and `current` keeps pointing
# at a complete release. Removing a release that is not active does nothing
# special. To remove the active release anyway (decommissioning the app),
# set RELEASECTL_REMOVE_ACTIVE=1 in the environment of dpkg or apt, or
# remove /etc/releasectl/APP.toml first.

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
		echo "releasectl: removing the active release $1:$2 (RELEASECTL_REMOVE_ACTIVE is set); $1's current link will dangle" >&2
		return 0
	fi
	echo "releasectl: $1:$2 is the active release; rolling back before it is removed" >&2
	# No running systemd (chroot, image build): no units to reload, no service to check.
	releasectl_offline=
	releasectl_systemd_running || releasectl_offline="--no-reload --no-health"
	# --expect-current: if someone activated another release meanwhile,
	# change nothing and let the removal proceed on the next check.
	if releasectl rollback "$1" --expect-current "$2" $releasectl_offline; then
		return 0
	fi
	echo "releasectl: refusing to remove $1:$2: it is still the active release." >&2
	echo "releasectl: activate another release first, or set RELEASECTL_REMOVE_ACTIVE=1 to remove it anyway." >&2
	return 1
}

case "$1" in
remove)
	releasectl_guard_removal "$releasectl_app" "$releasectl_release"
	;;
esac
