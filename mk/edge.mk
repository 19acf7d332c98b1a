# The edge's delivery benchmark (branch edge-cache): cached 1 MiB objects
# per second over HTTPS next to nginx (Debian package) serving the same file
# with TLS, both loaded by h2load; one 1 GiB fetch through the edge, miss
# and hit, next to min(dd conv=fsync, one core's SHA-256 + 2×AES-GCM);
# three runs, medians and ranges, ratios against the targets.
bench: bench-edge

.PHONY: test-deps-nginx
test-deps-nginx: ## Install nginx and h2load from Debian packages if absent (for bench-edge).
	scripts/install-nginx.sh

.PHONY: bench-edge
bench-edge: test-deps-nginx ## Edge vs nginx 1 MiB objects/s, and a 1 GiB fetch miss and hit vs the machine's limit; targets 70 %, 50 %, 70 %.
	cd services/edge && GOWORK=off PATH="$$PATH:/usr/sbin" go test -run '^$$' -bench . -benchtime 1x -timeout 30m ./internal/bench/
