#!/usr/bin/env bash
# Builds the vault binary once into the Custody cache:
#   $(custody_cache_dir)/vault/$VAULT_VERSION/bin/vault
# and prints that bin directory on the last line of stdout. Does nothing if
# the binary is already there. Vault has no Debian package here and
# `go install` refuses its replace directives, so this builds it from a
# throwaway tools module (about 7 minutes), in a temporary directory moved
# into place in one rename: an interrupted build never leaves a half cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

version=${VAULT_VERSION:-v1.21.0}
sdk=${VAULT_SDK_VERSION:-v0.20.0}
api=${VAULT_API_VERSION:-v1.22.0}
dest="$(custody_cache_dir)/vault/$version"
if [[ -x $dest/bin/vault ]]; then
	echo "vault $version: cached in $dest/bin" >&2
	echo "$dest/bin"
	exit 0
fi
command -v go >/dev/null || { echo "error: go is not on PATH; install Go to build Vault" >&2; exit 1; }
start=$SECONDS
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$(dirname "$dest")/.build-$version.XXXXXX")
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT

mkdir -p "$tmp/mod" "$tmp/out/bin"
cd "$tmp/mod"
export GOWORK=off GOFLAGS=-mod=mod
go mod init custody.local/vault-build >/dev/null 2>&1
echo "vault $version: resolving modules (sdk $sdk, api $api)" >&2
go get -tool "github.com/hashicorp/vault@$version" >"$tmp/get.log" 2>&1 || {
	tail -n 20 "$tmp/get.log" >&2
	echo "error: go get github.com/hashicorp/vault@$version failed (is the Go module proxy reachable?)" >&2
	exit 1
}
go mod edit -replace "github.com/hashicorp/vault/sdk=github.com/hashicorp/vault/sdk@$sdk" \
	-replace "github.com/hashicorp/vault/api=github.com/hashicorp/vault/api@$api"
go mod tidy -e >"$tmp/tidy.log" 2>&1 || true
echo "vault $version: go build (about 7 minutes)" >&2
go build -o "$tmp/out/bin/vault" github.com/hashicorp/vault || {
	echo "error: building Vault $version failed; see the go output above" >&2
	exit 1
}
"$tmp/out/bin/vault" version >&2
if [[ -x $dest/bin/vault ]]; then
	echo "vault $version: another build finished first; using it" >&2
else
	rm -rf "$dest"
	mv "$tmp/out" "$dest"
fi
echo "vault $version: built in $((SECONDS - start))s into $dest/bin" >&2
echo "$dest/bin"
