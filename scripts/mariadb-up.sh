#!/usr/bin/env bash
# Usage: scripts/mariadb-up.sh DIR
#
# Starts a throwaway MariaDB server (Debian's mariadb-server) whose data,
# socket, log and credentials all live in DIR (created if missing; keep it
# short, the unix socket path must stay under 108 bytes). It listens on a
# free port on 127.0.0.1 only, has one database, custody, and a user custody
# with a random password that may create and drop databases (tests make one
# per test). Stop with scripts/mariadb-down.sh DIR.
#
# As root, the server runs as the user mysql (mariadbd refuses root): DIR is
# handed to that user, so its parent directories must be searchable by it.
#
# The DSN, in go-sql-driver/mysql's form with the password, is written to
# DIR/dsn (mode 0600), never printed.
#
# On success prints, on stdout, shell assignments (also kept in DIR/env):
#   CUSTODY_TEST_MYSQL_DSN_FILE=DIR/dsn
#   CUSTODY_TEST_MYSQL_ADDR=127.0.0.1:PORT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
for b in mariadbd mariadb-install-db mariadb; do
	if ! command -v "$b" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$b ]]; then
		echo "error: $b not found; run scripts/install-mariadb.sh (Debian package mariadb-server)" >&2
		exit 1
	fi
done
server=$(command -v mariadbd || echo /usr/sbin/mariadbd)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
if ((${#dir} > 80)); then
	echo "error: $dir is too long for the server's unix socket path; use a shorter DIR (e.g. mktemp -d /tmp/my.XXXXXX)" >&2
	exit 1
fi
if [[ -f $dir/mariadb.pid ]] && kill -0 "$(cat "$dir/mariadb.pid")" 2>/dev/null; then
	echo "error: a MariaDB server from $dir is still running; run scripts/mariadb-down.sh $dir first" >&2
	exit 1
fi
user=$(id -un)
if [[ $(id -u) -eq 0 ]]; then
	if ! id mysql >/dev/null 2>&1; then
		echo "error: running as root, but there is no user mysql to run the server as (the Debian package creates it)" >&2
		exit 1
	fi
	user=mysql
	chown mysql: "$dir"
	chmod 0700 "$dir"
fi

fail() {
	echo "error: $*" >&2
	if [[ -f $dir/mariadb.log ]]; then
		echo "---- last lines of $dir/mariadb.log ----" >&2
		tail -n 30 "$dir/mariadb.log" >&2
	fi
	exit 1
}

if [[ ! -d $dir/data/mysql ]]; then
	mariadb-install-db --no-defaults --user="$user" --datadir="$dir/data" --auth-root-authentication-method=socket \
		--skip-test-db >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; fail "mariadb-install-db failed"; }
fi

port=$(free_port)
echo "mariadb-up: starting MariaDB ($server) on 127.0.0.1:$port" >&2
"$server" --no-defaults --user="$user" --datadir="$dir/data" --socket="$dir/mysql.sock" --pid-file="$dir/mariadb.pid" \
	--bind-address=127.0.0.1 --port="$port" --log-error="$dir/mariadb.log" --skip-name-resolve \
	--innodb-buffer-pool-size=64M --max-connections=200 >/dev/null 2>&1 &
wait_for 60 "MariaDB on $dir/mysql.sock" mariadb --no-defaults --socket="$dir/mysql.sock" -u root -e 'SELECT 1' || fail "MariaDB did not start"

password=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
mariadb --no-defaults --socket="$dir/mysql.sock" -u root <<SQL || fail "create database and user custody"
CREATE DATABASE IF NOT EXISTS custody;
CREATE USER IF NOT EXISTS 'custody'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'custody'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON *.* TO 'custody'@'127.0.0.1';
SQL

(umask 077 && printf 'custody:%s@tcp(127.0.0.1:%s)/custody?parseTime=true\n' "$password" "$port" >"$dir/dsn")
cat >"$dir/env" <<ENV
CUSTODY_TEST_MYSQL_DSN_FILE=$dir/dsn
CUSTODY_TEST_MYSQL_ADDR=127.0.0.1:$port
ENV
echo "mariadb-up: ready (pid $(cat "$dir/mariadb.pid"))" >&2
cat "$dir/env"
