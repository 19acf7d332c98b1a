#!/usr/bin/env bash
# Usage: scripts/install-nginx.sh
#
# Makes sure nginx (the edge's throughput peer) and h2load (the HTTP/2 + TLS
# load client, Debian package nghttp2-client) are installed, for `make
# bench-edge`. Does nothing if they are; otherwise installs the Debian
# packages with apt-get (through sudo when not root). Does not start
# nginx: the benchmark starts a private one. Idempotent.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
	if command -v h2load >/dev/null 2>&1; then
		echo "nginx, h2load: already installed" >&2
		exit 0
	fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "error: nginx or h2load is missing and apt-get is not available; install nginx and nghttp2 (h2load)" >&2
	exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "error: nginx or h2load is missing, this user is not root and sudo is missing; run 'apt-get install -y nginx nghttp2-client' as root" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "nginx, h2load: installing the Debian packages nginx and nghttp2-client" >&2
start=$SECONDS
if ! "${sudo[@]}" apt-get update >&2 ||
	! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx nghttp2-client >&2; then
	echo "error: apt-get could not install nginx and nghttp2-client; check the network access to the Debian mirror and the apt sources" >&2
	exit 1
fi
# The package may start a system nginx on port 80; the benchmark does not
# need it (it runs its own on a free loopback port).
echo "nginx, h2load: installed in $((SECONDS - start))s" >&2
