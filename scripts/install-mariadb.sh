#!/usr/bin/env bash
# Usage: scripts/install-mariadb.sh
#
# Makes sure the MariaDB server (mariadbd, mariadb-install-db) and client are
# installed, for the Tessera MySQL driver tests. Does nothing if they are;
# otherwise installs the Debian package mariadb-server with apt-get (through
# sudo when not root). Does not start a server: scripts/mariadb-up.sh starts
# private ones. Idempotent.
set -euo pipefail
if command -v mariadb-install-db >/dev/null 2>&1 && { command -v mariadbd >/dev/null 2>&1 || [[ -x /usr/sbin/mariadbd ]]; }; then
	echo "mariadb: already installed" >&2
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "error: MariaDB is not installed and apt-get is not available; install MariaDB 10.6+ (mariadbd, mariadb-install-db)" >&2
	exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "error: MariaDB is not installed, this user is not root and sudo is missing; run 'apt-get install -y mariadb-server' as root" >&2
		exit 1
	fi
	sudo=(sudo)
fi
echo "mariadb: installing the Debian package mariadb-server" >&2
start=$SECONDS
if ! "${sudo[@]}" apt-get update >&2 ||
	! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mariadb-server >&2; then
	echo "error: apt-get could not install mariadb-server; check the network access to the Debian mirror and the apt sources" >&2
	exit 1
fi
echo "mariadb: installed in $((SECONDS - start))s" >&2
