# shellcheck shell=bash
# Helpers sourced by the scripts in this directory. Source it; don't run it.

# custody_cache_dir prints the per-user cache for built tools (created if
# missing). Override with CUSTODY_CACHE_DIR.
custody_cache_dir() {
	local d="${CUSTODY_CACHE_DIR:-$HOME/.cache/custody}"
	mkdir -p "$d"
	echo "$d"
}

# free_port prints a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
	python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# wait_for TIMEOUT_SECONDS DESCRIPTION CMD... runs CMD (output discarded)
# every half second until it succeeds; returns 1 with a message on stderr
# once TIMEOUT_SECONDS have passed.
wait_for() {
	local timeout=$1 desc=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			echo "error: timed out after ${timeout}s waiting for $desc (last try: $*)" >&2
			return 1
		fi
		sleep 0.5
	done
}

# postgres_bin prints the directory with the PostgreSQL server binaries
# (initdb, pg_ctl, postgres): POSTGRES_BIN if set, else the newest
# /usr/lib/postgresql/*/bin (Debian's layout), else the one of initdb on PATH.
postgres_bin() {
	local d
	if [[ -n ${POSTGRES_BIN:-} ]]; then
		d=$POSTGRES_BIN
	else
		d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
		if [[ -z $d ]] && command -v initdb >/dev/null 2>&1; then
			d=$(dirname "$(readlink -f "$(command -v initdb)")")
		fi
	fi
	if [[ -z $d || ! -x $d/initdb || ! -x $d/pg_ctl || ! -x $d/postgres ]]; then
		echo "error: no PostgreSQL server binaries (initdb, pg_ctl, postgres) found${d:+ in $d}; run scripts/install-postgres.sh or set POSTGRES_BIN" >&2
		return 1
	fi
	echo "$d"
}
