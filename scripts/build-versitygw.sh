#!/usr/bin/env bash
# Builds the versitygw S3 gateway once into the Custody cache:
#   $(custody_cache_dir)/versitygw/$VERSITYGW_VERSION/bin/versitygw
# and prints that bin directory on the last line of stdout. Does nothing if
# the binary is already there. versitygw (Apache-2.0) is a real S3 server
# over a local directory; the publisher's S3 blob store is tested against
# it. Built in a temporary directory moved into place in one rename: an
# interrupted build never leaves a half cache (about a minute).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

version=${VERSITYGW_VERSION:-v1.8.0}
dest="$(custody_cache_dir)/versitygw/$version"
if [[ -x $dest/bin/versitygw ]]; then
	echo "versitygw $version: cached in $dest/bin" >&2
	echo "$dest/bin"
	exit 0
fi
command -v go >/dev/null || { echo "error: go is not on PATH; install Go to build versitygw" >&2; exit 1; }
start=$SECONDS
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$(dirname "$dest")/.build-$version.XXXXXX")
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out/bin"
echo "versitygw $version: go install (about a minute)" >&2
(cd / && GOWORK=off GOBIN="$tmp/out/bin" go install "github.com/versity/versitygw/cmd/versitygw@$version") || {
	echo "error: go install github.com/versity/versitygw/cmd/versitygw@$version failed (is the Go module proxy reachable?)" >&2
	exit 1
}
if [[ -x $dest/bin/versitygw ]]; then
	echo "versitygw $version: another build finished first; using it" >&2
else
	rm -rf "$dest"
	mv "$tmp/out" "$dest"
fi
echo "versitygw $version: built in $((SECONDS - start))s into $dest/bin" >&2
echo "$dest/bin"
