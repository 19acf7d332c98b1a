# The catalog's transparency log on Tessera's MySQL driver: its tests start
# a private MariaDB (Debian's mariadb-server) per test through
# scripts/mariadb-up.sh.
test-deps: test-deps-mariadb

.PHONY: test-deps-mariadb
test-deps-mariadb: ## Install the MariaDB server from Debian packages if absent (for the catalog's MySQL log driver tests).
	scripts/install-mariadb.sh

TEST_ENV += CUSTODY_TEST_REQUIRE_MYSQL=1
