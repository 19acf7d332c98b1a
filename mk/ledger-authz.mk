# The catalog's event log: throughput, latency and idle CPU over mTLS gRPC,
# next to Tessera's POSIX driver alone measured in the same run.
bench: bench-catalog

.PHONY: bench-catalog
bench-catalog: ## Catalog durable events/s (256 appenders) next to Tessera alone; append latency p50/p99; idle CPU.
	cd services/catalog && GOWORK=off go test -run '^$$' -bench . -benchtime 1x -timeout 20m ./internal/bench/
