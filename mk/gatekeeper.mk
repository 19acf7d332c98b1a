# The gatekeeper: admission throughput and latency with full verification
# over mTLS gRPC, next to OPA evaluating the same policy alone in the same
# invocation (decisions 0086, 0108).

bench: bench-gatekeeper

.PHONY: bench-gatekeeper
bench-gatekeeper: ## Admissions/s and p50/p99 with full verification at 1 and 64 callers over mTLS gRPC (and 64 over distinct artifacts: the verifier cache cold), next to OPA alone; three runs, median and range.
	cd services/gatekeeper && GOWORK=off go test -run '^$$' -bench '^Benchmark(Admit|Evaluate)$$' -benchtime 1x -count 3 -timeout 20m \
		./internal/server/ ./internal/policy/ 2>&1 | ../../scripts/bench-median.sh
