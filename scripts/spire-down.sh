#!/usr/bin/env bash
# Usage: scripts/spire-down.sh DIR
#
# Stops the SPIRE agent and server that scripts/spire-up.sh DIR started:
# SIGTERM, then SIGKILL after 10 seconds. Leaves DIR (logs, data) in place.
# Safe to run twice or when nothing is running.
set -euo pipefail
if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1

# stop NAME: TERM the process in DIR/NAME.pid, KILL it if it lingers.
stop() {
	local f=$dir/$1.pid pid
	[[ -f $f ]] || return 0
	pid=$(cat "$f")
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		local i
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "spire-down: $1 (pid $pid) ignored SIGTERM; sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$f"
}
# The agent first, so it does not log errors about the server going away.
stop agent
stop server
