#!/usr/bin/env bash
# Usage: scripts/postgres-up.sh DIR
#
# Starts a throwaway PostgreSQL server whose data, socket, log and
# credentials all live in DIR (created if missing; keep it short, the unix
# socket path must stay under 108 bytes). It listens on a free port on
# 127.0.0.1 only, with password (SCRAM) authentication over TCP, and has one
# database, custody, owned by the role custody (which may create databases:
# tests make one per test). Stop with scripts/postgres-down.sh DIR.
#
# As root, the server runs as the user postgres (initdb refuses root): DIR
# is handed to that user, so its parent directories must be searchable by
# it (a directory under /tmp made with mktemp -d is).
#
# The connection string, with the password, is written to DIR/dsn (mode
# 0600), never printed: pass the file, as the catalog's --postgres-dsn-file
# takes it.
#
# On success prints, on stdout, shell assignments (also kept in DIR/env):
#   CUSTODY_TEST_POSTGRES_DSN_FILE=DIR/dsn
#   CUSTODY_TEST_POSTGRES_ADDR=127.0.0.1:PORT
#
# Environment:
#   POSTGRES_BIN  directory with initdb, pg_ctl and postgres (default: found by lib.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
bin=$(postgres_bin)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
if ((${#dir} > 80)); then
	echo "error: $dir is too long for the server's unix socket path; use a shorter DIR (e.g. mktemp -d /tmp/pg.XXXXXX)" >&2
	exit 1
fi
if [[ -f $dir/data/postmaster.pid ]] && kill -0 "$(head -n 1 "$dir/data/postmaster.pid")" 2>/dev/null; then
	echo "error: a PostgreSQL server from $dir is still running; run scripts/postgres-down.sh $dir first" >&2
	exit 1
fi

# as_owner CMD...: runs CMD as the user that owns the server.
as_owner() { "$@"; }
if [[ $(id -u) -eq 0 ]]; then
	if ! id postgres >/dev/null 2>&1; then
		echo "error: running as root, but there is no user postgres to run the server as (the Debian package creates it)" >&2
		exit 1
	fi
	chown postgres: "$dir"
	chmod 0700 "$dir"
	if ! runuser -u postgres -- test -w "$dir"; then
		echo "error: the user postgres cannot write $dir: its parent directories must be searchable by postgres (use mktemp -d under /tmp)" >&2
		exit 1
	fi
	as_owner() { runuser -u postgres -- "$@"; }
fi

fail() {
	echo "error: $*" >&2
	if [[ -f $dir/postgres.log ]]; then
		echo "---- last lines of $dir/postgres.log ----" >&2
		tail -n 30 "$dir/postgres.log" >&2
	fi
	exit 1
}

password=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
pwfile=$dir/superuser-password
(umask 077 && printf '%s\n' "$password" >"$pwfile")
[[ $(id -u) -eq 0 ]] && chown postgres: "$pwfile"

if [[ ! -d $dir/data ]]; then
	as_owner "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$pwfile" --auth-local=peer --auth-host=scram-sha-256 \
		-E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; fail "initdb failed"; }
fi

port=$(free_port)
echo "postgres-up: starting PostgreSQL ($bin) on 127.0.0.1:$port" >&2
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
	-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=32MB" start >&2 ||
	fail "pg_ctl start failed"

# Through the unix socket as the server's own user (peer authentication).
psql_admin() { as_owner psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }
psql_admin -c "CREATE ROLE custody LOGIN CREATEDB PASSWORD '$password'" >&2 || fail "create role custody"
psql_admin -c "CREATE DATABASE custody OWNER custody" >&2 || fail "create database custody"
rm -f "$pwfile"

(umask 077 && printf 'postgres://custody:%s@127.0.0.1:%s/custody?sslmode=disable\n' "$password" "$port" >"$dir/dsn")
cat >"$dir/env" <<ENV
CUSTODY_TEST_POSTGRES_DSN_FILE=$dir/dsn
CUSTODY_TEST_POSTGRES_ADDR=127.0.0.1:$port
ENV
echo "postgres-up: ready (pid $(head -n 1 "$dir/data/postmaster.pid"))" >&2
cat "$dir/env"
