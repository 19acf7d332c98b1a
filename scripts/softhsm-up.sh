#!/usr/bin/env bash
# Usage: scripts/softhsm-up.sh DIR LABEL PIN
#
# Makes a throwaway SoftHSM2 token for tests and local runs: writes
# DIR/softhsm2.conf with a private token directory DIR/tokens (file object
# store) and initializes a token LABEL with user PIN PIN in a free slot. The
# SO PIN is random and discarded: nothing here needs it. Run
# scripts/install-softhsm.sh first. Stop by deleting DIR.
#
# Fails if DIR already holds a token with that label (initialize a second
# token with another label, or use a new DIR).
#
# On success prints, on stdout, shell assignments (also kept in DIR/env):
#   SOFTHSM2_CONF=DIR/softhsm2.conf
#   CUSTODY_TEST_PKCS11_MODULE=<module path>
#   CUSTODY_TEST_PKCS11_TOKEN=LABEL
#
# Environment:
#   SOFTHSM2_MODULE  path of the PKCS#11 module (default /usr/lib/softhsm/libsofthsm2.so)
set -euo pipefail

if [[ $# -ne 3 ]]; then
	echo "usage: $0 DIR LABEL PIN" >&2
	exit 2
fi
label=$2
pin=$3
module=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

if ! command -v softhsm2-util >/dev/null 2>&1 || [[ ! -f $module ]]; then
	echo "error: SoftHSM2 is not installed ($module, softhsm2-util); run scripts/install-softhsm.sh" >&2
	exit 1
fi
if [[ -z $label || ${#label} -gt 32 ]]; then
	echo "error: token label must be 1 to 32 characters, got ${#label}" >&2
	exit 2
fi
if [[ ${#pin} -lt 4 ]]; then
	echo "error: SoftHSM2 needs a PIN of at least 4 characters" >&2
	exit 2
fi

mkdir -p "$1/tokens"
dir=$(cd "$1" && pwd)
conf=$dir/softhsm2.conf
cat >"$conf" <<EOF
# Written by scripts/softhsm-up.sh: a private token directory for tests.
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
export SOFTHSM2_CONF=$conf

if softhsm2-util --show-slots 2>/dev/null |
	sed -n 's/^[[:space:]]*Label:[[:space:]]*//p' | sed 's/[[:space:]]*$//' | grep -Fxq -- "$label"; then
	echo "error: $dir already has a token labelled $label" >&2
	exit 1
fi

so_pin=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
if ! out=$(softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" 2>&1); then
	echo "error: softhsm2-util --init-token failed: $out" >&2
	exit 1
fi

{
	echo "SOFTHSM2_CONF=$conf"
	echo "CUSTODY_TEST_PKCS11_MODULE=$module"
	echo "CUSTODY_TEST_PKCS11_TOKEN=$label"
} | tee "$dir/env"
