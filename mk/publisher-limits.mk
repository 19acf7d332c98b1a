# Publisher transfer throughput (branch publisher-limits).
bench: bench-publisher

.PHONY: bench-publisher
bench-publisher: ## Publish and download 1 GiB through the publisher over mTLS gRPC, three runs, next to the machine's limit measured in the same run.
	cd services/publisher && GOWORK=off go test -run '^$$' -bench . -benchtime 1x -timeout 30m ./internal/bench/
