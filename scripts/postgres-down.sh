#!/usr/bin/env bash
# Usage: scripts/postgres-down.sh DIR
#
# Stops the PostgreSQL server that scripts/postgres-up.sh DIR started (fast
# shutdown, then SIGKILL of the postmaster after 30 seconds). Leaves DIR
# (data, log) in place. Safe to run twice or when nothing is running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
pidfile=$dir/data/postmaster.pid
[[ -f $pidfile ]] || exit 0
pid=$(head -n 1 "$pidfile")
[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || exit 0

bin=$(postgres_bin)
as_owner() { "$@"; }
if [[ $(id -u) -eq 0 ]]; then
	as_owner() { runuser -u postgres -- "$@"; }
fi
if ! as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >&2; then
	echo "postgres-down: pg_ctl stop failed; sending SIGKILL to $pid" >&2
	kill -KILL "$pid" 2>/dev/null || true
fi
