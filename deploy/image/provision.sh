#!/bin/sh
# Runs as root on the Packer build instance (deploy/image/hive-agent.pkr.hcl).
# Installs the hive-agent package, checks it is enabled but not running, and
# removes everything that must not be baked into an image: the agent's
# state, any certificate, cloud-init's record of this boot, the machine ID
# and SSH host keys. Fails the build on any surprise.
set -eu
pkg=${HIVE_AGENT_PACKAGE:?HIVE_AGENT_PACKAGE not set}
family=${HIVE_OS_FAMILY:-debian}

case "$family" in
debian)
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends cloud-init "$pkg"
	;;
rhel)
	dnf install -y cloud-init "$pkg"
	;;
*)
	echo "provision: unknown os family $family" >&2
	exit 1
	;;
esac
rm -f "$pkg"

# The package enables the agent and, as the configuration has no join
# address, does not start it.
systemctl is-enabled hive-agent.service
if /usr/lib/hive/agent-configured /etc/hive/agent.yaml; then
	echo "provision: /etc/hive/agent.yaml has join addresses: the image must not carry site details" >&2
	exit 1
fi
if systemctl is-active --quiet hive-agent.service; then
	echo "provision: hive-agent is running on the build instance" >&2
	exit 1
fi

# Nothing instance-specific or secret in the image.
rm -rf /var/lib/hive/agent/* /etc/hive/tls/* /etc/hive/bootstrap-token /etc/hive/gossip.key /etc/hive/labels
cloud-init clean --logs --seed
rm -f /etc/ssh/ssh_host_*
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
sync
