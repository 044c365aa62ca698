# %post of releasectl ($1: 1 on install, 2 on upgrade). Group first: the
# tmpfiles entry gives it the requests directory.
systemd-sysusers releasectl.conf || :
systemd-tmpfiles --create releasectl.conf || :
mkdir -p /etc/releasectl
if [ "$1" -eq 1 ]; then
	# Only the boot-time recover unit is enabled; templates never are.
	systemctl --no-reload enable releasectl-recover.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
