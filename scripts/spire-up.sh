#!/usr/bin/env bash
# Usage: scripts/spire-up.sh DIR
#
# Starts a throwaway SPIRE server and agent whose state, sockets, logs and
# pid files all live in DIR (created if missing; keep it short, unix socket
# paths must stay under 108 bytes, e.g. DIR=$(mktemp -d /tmp/spire.XXXXXX)).
# Registers one workload entry for the current uid and returns once the
# Workload API at DIR/agent.sock hands out an X.509 SVID. Stop with
# scripts/spire-down.sh DIR.
#
# Environment:
#   TRUST_DOMAIN  trust domain (default custody.local)
#   WORKLOAD_ID   SPIFFE ID for the entry (default spiffe://$TRUST_DOMAIN/service/spire-test)
#   SPIRE_BIN     directory with spire-server and spire-agent
#                 (default: the cache filled by scripts/build-spire.sh)
#
# On success prints, on stdout, shell assignments for the tests (also kept in DIR/env):
#   CUSTODY_TEST_SPIRE_SOCKET=unix://DIR/agent.sock
#   CUSTODY_TEST_SPIRE_ID=<workload SPIFFE ID>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)

version=${SPIRE_VERSION:-v1.13.3}
bin=${SPIRE_BIN:-$(custody_cache_dir)/spire/$version/bin}
for b in spire-server spire-agent; do
	if [[ ! -x $bin/$b ]]; then
		echo "error: $bin/$b not found; run scripts/build-spire.sh first (or set SPIRE_BIN)" >&2
		exit 1
	fi
done

td=${TRUST_DOMAIN:-custody.local}
workload_id=${WORKLOAD_ID:-spiffe://$td/service/spire-test}
server_sock=$dir/server.sock
agent_sock=$dir/agent.sock
if ((${#agent_sock} >= 100 || ${#server_sock} >= 100)); then
	echo "error: socket path $agent_sock is too long for a unix socket; use a shorter DIR (e.g. mktemp -d /tmp/spire.XXXXXX)" >&2
	exit 1
fi
for p in server agent; do
	if [[ -f $dir/$p.pid ]] && kill -0 "$(cat "$dir/$p.pid")" 2>/dev/null; then
		echo "error: a SPIRE $p from $dir is still running (pid $(cat "$dir/$p.pid")); run scripts/spire-down.sh $dir first" >&2
		exit 1
	fi
done

fail() {
	echo "error: $*" >&2
	for p in server agent; do
		if [[ -f $dir/$p.log ]]; then
			echo "---- last lines of $dir/$p.log ----" >&2
			tail -n 30 "$dir/$p.log" >&2
		fi
	done
	exit 1
}
# alive NAME: the process from DIR/NAME.pid is still running.
alive() { kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

port=$(free_port)
mkdir -p "$dir/server-data" "$dir/agent-data"

cat >"$dir/server.conf" <<CONF
server {
    bind_address = "127.0.0.1"
    bind_port = "$port"
    socket_path = "$server_sock"
    trust_domain = "$td"
    data_dir = "$dir/server-data"
    log_level = "DEBUG"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "$dir/server-data/datastore.sqlite3"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
}
CONF

cat >"$dir/agent.conf" <<CONF
agent {
    data_dir = "$dir/agent-data"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "$port"
    socket_path = "$agent_sock"
    trust_bundle_path = "$dir/bundle.pem"
    trust_domain = "$td"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
CONF

srv() { "$bin/spire-server" "$@"; }

echo "spire-up: starting server on 127.0.0.1:$port (trust domain $td)" >&2
"$bin/spire-server" run -config "$dir/server.conf" >"$dir/server.log" 2>&1 </dev/null &
echo $! >"$dir/server.pid"
server_ready() { alive server && srv healthcheck -socketPath "$server_sock"; }
wait_for 60 "SPIRE server health check on $server_sock" server_ready ||
	fail "SPIRE server did not become healthy$(alive server || echo " (process exited)")"

srv bundle show -socketPath "$server_sock" >"$dir/bundle.pem" || fail "spire-server bundle show failed"
token_out=$(srv token generate -socketPath "$server_sock" -ttl 600) || fail "spire-server token generate failed"
token=$(sed -n 's/^Token: //p' <<<"$token_out")
[[ -n $token ]] || fail "could not parse a join token from: $token_out"
agent_id="spiffe://$td/spire/agent/join_token/$token"

echo "spire-up: registering $workload_id for unix:uid:$(id -u) under $agent_id" >&2
srv entry create -socketPath "$server_sock" \
	-parentID "$agent_id" -spiffeID "$workload_id" -selector "unix:uid:$(id -u)" \
	>"$dir/entry.txt" 2>&1 || { cat "$dir/entry.txt" >&2; fail "spire-server entry create failed"; }

echo "spire-up: starting agent (Workload API at $agent_sock)" >&2
"$bin/spire-agent" run -config "$dir/agent.conf" -joinToken "$token" >"$dir/agent.log" 2>&1 </dev/null &
echo $! >"$dir/agent.pid"
svid_ready() { alive agent && "$bin/spire-agent" api fetch x509 -socketPath "$agent_sock"; }
wait_for 90 "an X.509 SVID from $agent_sock" svid_ready ||
	fail "SPIRE agent did not serve an SVID$(alive agent || echo " (process exited)")"

cat >"$dir/env" <<ENV
CUSTODY_TEST_SPIRE_SOCKET=unix://$agent_sock
CUSTODY_TEST_SPIRE_ID=$workload_id
ENV
echo "spire-up: ready (server pid $(cat "$dir/server.pid"), agent pid $(cat "$dir/agent.pid"))" >&2
cat "$dir/env"
