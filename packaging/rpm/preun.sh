# %preun of releasectl ($1: 0 on erase, 1 on upgrade).
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable releasectl-recover.service >/dev/null 2>&1 || :
	if [ -d /run/systemd/system ]; then
		systemctl stop 'deploy-watch@*.path' >/dev/null 2>&1 || :
	fi
fi
