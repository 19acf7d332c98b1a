#!/usr/bin/env bash
# Builds spire-server and spire-agent once into the Custody cache:
#   $(custody_cache_dir)/spire/$SPIRE_VERSION/bin/{spire-server,spire-agent}
# and prints that bin directory on the last line of stdout. Does nothing if
# both binaries are already there. The build takes about 5 minutes; it
# happens in a temporary directory and is moved into place in one rename,
# so an interrupted build never leaves a half-filled cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

version=${SPIRE_VERSION:-v1.13.3}
dest="$(custody_cache_dir)/spire/$version"
if [[ -x $dest/bin/spire-server && -x $dest/bin/spire-agent ]]; then
	echo "spire $version: cached in $dest/bin" >&2
	echo "$dest/bin"
	exit 0
fi

command -v go >/dev/null || { echo "error: go is not on PATH; install Go to build SPIRE" >&2; exit 1; }
start=$SECONDS
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$(dirname "$dest")/.build-$version.XXXXXX")
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT

echo "spire $version: downloading module source" >&2
json=$(go mod download -json "github.com/spiffe/spire@$version") || {
	echo "error: go mod download github.com/spiffe/spire@$version failed (is the Go module proxy reachable?)" >&2
	exit 1
}
srcdir=$(python3 -c 'import json,sys;d=json.load(sys.stdin);print(d.get("Dir",""));sys.exit(1 if d.get("Error") else 0)' <<<"$json") || {
	echo "error: go mod download reported: $json" >&2
	exit 1
}
[[ -d $srcdir ]] || { echo "error: module source dir '$srcdir' missing" >&2; exit 1; }

echo "spire $version: copying source from $srcdir" >&2
cp -r "$srcdir" "$tmp/src"
chmod -R u+w "$tmp/src"
mkdir -p "$tmp/out/bin"

echo "spire $version: go build ./cmd/spire-server ./cmd/spire-agent (about 5 minutes)" >&2
(cd "$tmp/src" && GOWORK=off GOFLAGS=-buildvcs=false go build -o "$tmp/out/bin/" ./cmd/spire-server ./cmd/spire-agent) || {
	echo "error: building SPIRE $version failed; see the go output above" >&2
	exit 1
}
for b in spire-server spire-agent; do
	[[ -x $tmp/out/bin/$b ]] || { echo "error: build produced no $b" >&2; exit 1; }
done

# Another run may have finished first; keep its result.
if [[ -x $dest/bin/spire-server && -x $dest/bin/spire-agent ]]; then
	echo "spire $version: another build finished first; using it" >&2
else
	rm -rf "$dest"
	mv "$tmp/out" "$dest"
fi
echo "spire $version: built in $((SECONDS - start))s into $dest/bin" >&2
echo "$dest/bin"
