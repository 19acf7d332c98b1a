#!/usr/bin/env bash
# What `make test-spire` runs: builds SPIRE (once, cached), starts a
# throwaway server and agent, and runs the identity tests that need a real
# Workload API. Exits non-zero if any step fails.
#
# Environment: CUSTODY_CACHE_DIR, TRUST_DOMAIN, WORKLOAD_ID (see spire-up.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

start=$SECONDS
"$here/build-spire.sh" >/dev/null
echo "test-spire: SPIRE binaries ready after $((SECONDS - start))s" >&2

# Short path: the agent's unix socket must fit in 108 bytes.
dir=$(mktemp -d /tmp/spire.XXXXXX)
cleanup() {
	local rc=$?
	"$here/spire-down.sh" "$dir" || true
	if ((rc != 0)); then
		for p in server agent; do
			if [[ -f $dir/$p.log ]]; then
				echo "---- last lines of $dir/$p.log ----" >&2
				tail -n 30 "$dir/$p.log" >&2
			fi
		done
	fi
	rm -rf "$dir"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export TRUST_DOMAIN=${TRUST_DOMAIN:-custody.local}
export WORKLOAD_ID=${WORKLOAD_ID:-spiffe://$TRUST_DOMAIN/service/spire-test}
up=$SECONDS
"$here/spire-up.sh" "$dir" >/dev/null
echo "test-spire: SPIRE server and agent up in $((SECONDS - up))s" >&2

cd "$root/libs"
GOWORK=off \
	CUSTODY_TEST_SPIRE_SOCKET="unix://$dir/agent.sock" \
	CUSTODY_TEST_SPIRE_ID="$WORKLOAD_ID" \
	go test -count=1 -run 'TestWorkloadAPIWithSPIRE' -v ./identity/
echo "test-spire: passed in $((SECONDS - start))s" >&2
