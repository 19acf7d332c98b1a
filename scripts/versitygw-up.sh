#!/usr/bin/env bash
# Usage: scripts/versitygw-up.sh DIR
#
# Starts a throwaway versitygw S3 gateway (posix back end over DIR/data,
# metadata in DIR/meta) on a free loopback port, with random root
# credentials written to DIR/access-key and DIR/secret-key (0600). Build
# the binary first with scripts/build-versitygw.sh (CUSTODY_VERSITYGW_BIN
# names it; default: the cached build). Stop it with
# `kill "$(cat DIR/pid)"` and delete DIR.
#
# On success prints, on stdout, shell assignments (also kept in DIR/env):
#   CUSTODY_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#   CUSTODY_TEST_S3_ACCESS_KEY_FILE=DIR/access-key
#   CUSTODY_TEST_S3_SECRET_KEY_FILE=DIR/secret-key
#   CUSTODY_TEST_S3_PID=PID
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$(mkdir -p "$1" && cd "$1" && pwd)
bin=${CUSTODY_VERSITYGW_BIN:-$(custody_cache_dir)/versitygw/${VERSITYGW_VERSION:-v1.8.0}/bin/versitygw}
if [[ ! -x $bin ]]; then
	echo "error: no versitygw at $bin: run scripts/build-versitygw.sh (make test-deps-s3)" >&2
	exit 1
fi
mkdir -p "$dir/data" "$dir/meta"
umask 077
head -c 15 /dev/urandom | base64 | tr -d '/+=' >"$dir/access-key"
head -c 30 /dev/urandom | base64 | tr -d '/+=' >"$dir/secret-key"
port=$(free_port)
# Credentials through the environment, not argv: the process list is
# readable by every user.
ROOT_ACCESS_KEY_ID=$(cat "$dir/access-key") ROOT_SECRET_ACCESS_KEY=$(cat "$dir/secret-key") \
	nohup "$bin" --port "127.0.0.1:$port" --quiet posix --sidecar "$dir/meta" "$dir/data" \
	>"$dir/log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/pid"
if ! wait_for 30 "versitygw on 127.0.0.1:$port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"; then
	kill "$pid" 2>/dev/null || true
	cat "$dir/log" >&2
	exit 1
fi
{
	echo "CUSTODY_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
	echo "CUSTODY_TEST_S3_ACCESS_KEY_FILE=$dir/access-key"
	echo "CUSTODY_TEST_S3_SECRET_KEY_FILE=$dir/secret-key"
	echo "CUSTODY_TEST_S3_PID=$pid"
} | tee "$dir/env"
