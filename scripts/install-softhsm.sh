#!/usr/bin/env bash
# Usage: scripts/install-softhsm.sh
#
# Makes sure SoftHSM2 (the PKCS#11 module and softhsm2-util) is installed,
# for the signer's PKCS#11 tests. Does nothing if both are already there;
# otherwise installs the Debian package softhsm2 with apt-get (through sudo
# when not root). Idempotent.
#
# Environment:
#   SOFTHSM2_MODULE  path of the PKCS#11 module (default /usr/lib/softhsm/libsofthsm2.so)
set -euo pipefail

module=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

installed() {
	[[ -f $module ]] && command -v softhsm2-util >/dev/null 2>&1
}

if installed; then
	echo "softhsm2: already installed ($module, $(command -v softhsm2-util))" >&2
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "error: SoftHSM2 is not installed and apt-get is not available; install SoftHSM2 2.6+ so that $module and softhsm2-util exist (or set SOFTHSM2_MODULE)" >&2
	exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "error: SoftHSM2 is not installed, this user is not root and sudo is missing; run 'apt-get install -y softhsm2' as root" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "softhsm2: installing the Debian package softhsm2" >&2
if ! "${sudo[@]}" apt-get update >&2 ||
	! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y softhsm2 >&2; then
	echo "error: apt-get could not install softhsm2; check the network access to the Debian mirror and the apt sources" >&2
	exit 1
fi

if ! installed; then
	echo "error: softhsm2 was installed but $module or softhsm2-util is missing; set SOFTHSM2_MODULE to the module's path" >&2
	exit 1
fi
echo "softhsm2: installed ($module)" >&2
