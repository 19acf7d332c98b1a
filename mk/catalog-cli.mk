# The store queries behind custody audit and custody lineage on 10,000
# seeded artifacts, on SQLite and PostgreSQL (a private server through
# scripts/postgres-up.sh): p50/p99 of the entries about one digest and of a
# transitive lineage walk over every node, next to the 1 s target.
bench: bench-catalog-cli

.PHONY: bench-catalog-cli
bench-catalog-cli: test-deps-postgres ## Audit (ListEvents) and transitive lineage p50/p99 over 10,000 artifacts, SQLite and PostgreSQL; target walk < 1 s.
	cd services/catalog && GOWORK=off CUSTODY_TEST_REQUIRE_POSTGRES=1 go test -run '^$$' -bench BenchmarkLedgerQueries -benchtime 1x -timeout 30m ./internal/ledgerbench/
