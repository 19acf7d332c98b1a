#!/usr/bin/env bash
# Usage: scripts/install-postgres.sh
#
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) and
# psql are installed, for the catalog's PostgreSQL store tests. Does nothing
# if they are; otherwise installs the Debian package postgresql with apt-get
# (through sudo when not root). Does not start or configure a server:
# scripts/postgres-up.sh starts private ones. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if bin=$(postgres_bin 2>/dev/null) && command -v psql >/dev/null 2>&1; then
	echo "postgresql: already installed ($bin)" >&2
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "error: PostgreSQL is not installed and apt-get is not available; install PostgreSQL 13+ and set POSTGRES_BIN to the directory with initdb and pg_ctl" >&2
	exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "error: PostgreSQL is not installed, this user is not root and sudo is missing; run 'apt-get install -y postgresql' as root" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "postgresql: installing the Debian package postgresql" >&2
start=$SECONDS
if ! "${sudo[@]}" apt-get update >&2 ||
	! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2; then
	echo "error: apt-get could not install postgresql; check the network access to the Debian mirror and the apt sources" >&2
	exit 1
fi
if ! bin=$(postgres_bin); then
	exit 1
fi
echo "postgresql: installed ($bin) in $((SECONDS - start))s" >&2
