#!/usr/bin/env bash
# Usage: scripts/test-alerts.sh
#
# Tests the Prometheus alert rules in deploy/alerts with promtool (the
# Debian package prometheus, installed with apt-get if promtool is absent):
#   1. `promtool check rules` on every rules file;
#   2. every rules file has deploy/alerts/tests/<name>.test.yml, and every
#      alert in it is exercised there (`promtool test rules`: a case where it
#      fires, with its exact labels and rendered annotations, and one where it
#      does not);
#   3. every custody_* metric the rules or their tests name is registered by
#      the services' code (a renamed metric would leave an alert that never
#      fires);
#   4. `promtool test rules` on every test file.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "error: promtool is missing and apt-get is not available; install Prometheus 2.x (its promtool) to test deploy/alerts" >&2
		exit 1
	fi
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		if ! command -v sudo >/dev/null 2>&1; then
			echo "error: promtool is missing, this user is not root and sudo is missing; run 'apt-get install -y prometheus' as root" >&2
			exit 1
		fi
		sudo=(sudo)
	fi
	echo "promtool: installing the Debian package prometheus" >&2
	start=$SECONDS
	if ! "${sudo[@]}" apt-get update >&2 ||
		! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >&2; then
		echo "error: apt-get could not install prometheus (for promtool); check the network access to the Debian mirror and the apt sources" >&2
		exit 1
	fi
	echo "promtool: installed in $((SECONDS - start))s" >&2
fi

rules=(deploy/alerts/*.rules.yml)
promtool check rules "${rules[@]}"

fail=0
for r in "${rules[@]}"; do
	t="deploy/alerts/tests/$(basename "$r" .rules.yml).test.yml"
	if [[ ! -f $t ]]; then
		echo "error: $r has no test file $t" >&2
		fail=1
		continue
	fi
	for a in $(sed -n 's/^[[:space:]]*- alert:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p' "$r"); do
		if ! grep -q "alertname: $a\$" "$t"; then
			echo "error: alert $a of $r is not exercised in $t" >&2
			fail=1
		fi
	done
done

# Metric names outside comments; each must be a registered Name in non-test Go code.
metrics=$(grep -hv '^[[:space:]]*#' deploy/alerts/*.rules.yml deploy/alerts/tests/*.test.yml |
	grep -o 'custody_[a-z0-9_]*' | sort -u)
for m in $metrics; do
	if ! grep -rqE --include='*.go' --exclude='*_test.go' "Name:[[:space:]]*\"$m\"" libs services; then
		echo "error: metric $m named in deploy/alerts is not registered by any service (no Name: \"$m\" in libs/ or services/)" >&2
		fail=1
	fi
done
if ((fail)); then
	exit 1
fi

promtool test rules deploy/alerts/tests/*.test.yml
