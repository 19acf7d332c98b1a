# Catalog metadata stores: the PostgreSQL back end's tests start a private
# server per test binary through scripts/postgres-up.sh.
test-deps: test-deps-postgres

.PHONY: test-deps-postgres
test-deps-postgres: ## Install the PostgreSQL server from Debian packages if absent (for the catalog store tests).
	scripts/install-postgres.sh

TEST_ENV += CUSTODY_TEST_REQUIRE_POSTGRES=1
