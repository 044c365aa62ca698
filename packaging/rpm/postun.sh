# %postun of releasectl ($1: 0 on erase, 1 on upgrade). On erase, remove
# the request files, their outcomes and the enablement of template
# instances the operator made (their links would dangle). The operator's
# releases and /etc/releasectl/*.toml are never touched; the group stays.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 0 ]; then
	for link in /etc/systemd/system/*.wants/deploy-watch@*.path \
		/etc/systemd/system/*.wants/deploy@*.service; do
		[ -L "$link" ] && rm -f "$link"
	done
	rm -rf /var/lib/releasectl/requests /var/lib/releasectl/results
	rmdir /var/lib/releasectl 2>/dev/null || :
	rmdir /etc/releasectl 2>/dev/null || :
fi
