#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: one artifact through the whole
# path on the dev stack, and two attacks refused. Exits 0 only if every step
# behaved as expected.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
custody() { "$BIN/custody" "$@"; }

work=$(mktemp -d /tmp/custody-demo.XXXXXX)
export CUSTODY_DEV_DIR=$work/stack
failed=0
pid=

cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		custody dev down --dir "$CUSTODY_DEV_DIR" >/dev/null 2>&1 || kill "$pid"
		wait "$pid" 2>/dev/null
	fi
	if [ "$failed" = 0 ]; then rm -rf "$work"; else echo "kept $work for inspection (logs in $CUSTODY_DEV_DIR/logs)"; fi
}
trap cleanup EXIT

step() { printf '\n\033[1m▶ %s\033[0m\n' "$1"; }
ok() { printf '\033[32m✔ %s\033[0m\n' "$1"; }
bad() { printf '\033[31m✘ %s\033[0m\n' "$1"; failed=1; }
# expect_ok DESCRIPTION CMD...: the command must succeed.
expect_ok() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d (exit $?)"; fi; }
# expect_fail DESCRIPTION PATTERN CMD...: the command must fail and say PATTERN.
expect_fail() {
	local d=$1 pat=$2; shift 2
	local out
	if out=$("$@" 2>&1); then echo "$out"; bad "$d: it succeeded"; return; fi
	echo "$out"
	if grep -q -- "$pat" <<<"$out"; then ok "$d"; else bad "$d: output does not mention '$pat'"; fi
}

step "start the dev stack (every service its own process, SPIFFE mTLS between them)"
custody dev up --dir "$CUSTODY_DEV_DIR" >"$work/dev-up.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
	[ -f "$CUSTODY_DEV_DIR/stack.json" ] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
cat "$work/dev-up.log"
if [ ! -f "$CUSTODY_DEV_DIR/stack.json" ]; then bad "dev stack did not come up"; exit 1; fi
ok "dev stack is up"

artifact=$work/app.bin
head -c 5000000 /dev/urandom >"$artifact"
step "publish app@1.0.0 (5 MB) on channel staging as the builder"
expect_ok "published, signed, logged" custody publish "$artifact" --name app --version 1.0.0 --channel staging \
	--source-repo https://git.example/app --source-commit 3f2a9c1

step "admit app@1.0.0 to staging as the deployer"
expect_ok "allowed" custody admit app@1.0.0 --env staging

step "admit app@1.0.0 to prod: the staging channel may not go to prod"
expect_fail "denied by policy" "DENY" custody admit app@1.0.0 --env prod

step "admit app@9.9.9, which was never published"
expect_fail "unknown version denied" "not in the catalog" custody admit app@9.9.9 --env staging

step "fetch app@1.0.0 through the edge, verify locally, write atomically"
expect_ok "fetched and verified" custody fetch app@1.0.0 --env staging -o "$work/fetched.bin" --bundle "$work/app.bundle.json"
expect_ok "fetched bytes are identical" cmp "$artifact" "$work/fetched.bin"

step "verify the fetched file offline from its bundle"
expect_ok "verified offline" custody verify "$work/fetched.bin" --bundle "$work/app.bundle.json"

step "a copy with one byte changed is rejected"
cp "$work/fetched.bin" "$work/tampered.bin"
printf '\x00' | dd of="$work/tampered.bin" bs=1 seek=1000 count=1 conv=notrunc status=none
expect_fail "tampered copy rejected" "is not app@1.0.0" custody verify "$work/tampered.bin" --bundle "$work/app.bundle.json"

step "the builder identity calls the signer directly"
expect_fail "builder denied by the signer" "PermissionDenied" custody debug call-signer --as builder

step "the deployer downloads app@1.0.0 straight from the publisher, skipping the gatekeeper and the broker"
digest=$(custody admit app@1.0.0 --env staging 2>/dev/null | grep -o 'sha256:[0-9a-f]*' | head -1)
expect_fail "deployer denied by the publisher" "PermissionDenied" custody debug download-from-publisher "${digest:-sha256:0}" --as deployer

step "publish svc@2.0.0 on channel prod: it waits for 2 distinct approvers"
head -c 100000 /dev/urandom >"$work/svc.bin"
custody publish "$work/svc.bin" --name svc --version 2.0.0 --channel prod >"$work/prod-publish.log" 2>&1 &
ppid_=$!
id=
for _ in $(seq 100); do
	id=$(custody approvals list 2>/dev/null | awk '$2 == "svc" && $3 == "2.0.0" {print $1}')
	[ -n "$id" ] && break
	sleep 0.1
done
custody approvals list
if [ -n "$id" ] && kill -0 "$ppid_" 2>/dev/null; then ok "upload waiting for approval $id"; else bad "no waiting approval request"; fi
expect_fail "the builder cannot approve" "PermissionDenied" custody approve "$id" --as builder
expect_ok "alice approves" custody approve "$id" --as alice
expect_ok "bob approves: the quorum is reached" custody approve "$id" --as bob
if wait "$ppid_"; then cat "$work/prod-publish.log"; ok "published and signed with the prod key"; else cat "$work/prod-publish.log"; bad "prod publish failed"; fi
expect_ok "admitted to prod" custody admit svc@2.0.0 --env prod

step "key-compromise drill: rotate, re-verify and re-sign, revoke (docs/runbooks/key-compromise.md)"
expect_ok "rotated: version 2 signs" custody keys rotate artifact
expect_ok "app@1.0.0: bytes and signature re-verified, re-signed by version 2" custody keys resign --revoked-version 1
expect_ok "version 1 revoked" custody keys revoke artifact --version 1 --reason "demo drill"
custody keys list
expect_ok "app@1.0.0 is still admitted (re-signed)" custody admit app@1.0.0 --env staging

step "stop the dev stack"
if custody dev down --dir "$CUSTODY_DEV_DIR"; then wait "$pid"; pid=; ok "stopped"; else bad "dev down failed"; fi

echo
if [ "$failed" = 0 ]; then printf '\033[32mdemo passed: every step behaved as expected\033[0m\n'; else printf '\033[31mdemo failed\033[0m\n'; fi
exit "$failed"
