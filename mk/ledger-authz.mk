# The catalog's event log: throughput, latency and idle CPU (ledger-authz).
bench: bench-catalog

.PHONY: bench-catalog
bench-catalog: ## Catalog event appends over mTLS gRPC next to Tessera alone; latency at one in flight; idle CPU.
	cd services/catalog && GOWORK=off go test -run '^$$' -bench 'AppendDurable|Latency' -benchtime 2000x ./internal/bench/
	cd services/catalog && GOWORK=off go test -run '^$$' -bench 'IdleCPU' -benchtime 1x ./internal/bench/
