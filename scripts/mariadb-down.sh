#!/usr/bin/env bash
# Usage: scripts/mariadb-down.sh DIR
#
# Stops the MariaDB server that scripts/mariadb-up.sh DIR started (SIGTERM,
# then SIGKILL after 30 seconds). Leaves DIR in place. Safe to run twice or
# when nothing is running.
set -euo pipefail
if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
pidfile=$1/mariadb.pid
[[ -f $pidfile ]] || exit 0
pid=$(cat "$pidfile")
[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || exit 0
kill -TERM "$pid"
for _ in $(seq 60); do
	kill -0 "$pid" 2>/dev/null || exit 0
	sleep 0.5
done
echo "mariadb-down: $pid did not stop in 30s; sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null || true
