# The catalog's transparency log on Tessera's MySQL driver: its tests start
# a private MariaDB (Debian's mariadb-server) per test through
# scripts/mariadb-up.sh.
test-deps: test-deps-mariadb

.PHONY: test-deps-mariadb
test-deps-mariadb: ## Install the MariaDB server from Debian packages if absent (for the catalog's MySQL log driver tests).
	scripts/install-mariadb.sh

TEST_ENV += CUSTODY_TEST_REQUIRE_MYSQL=1

bench: bench-catalog-mysql

.PHONY: bench-catalog-mysql
bench-catalog-mysql: test-deps-mariadb ## The catalog's log on Tessera's MySQL driver (MariaDB) next to POSIX in the same run: appends/s, latency until proved p50/p99.
	cd services/catalog && GOWORK=off CUSTODY_TEST_REQUIRE_MYSQL=1 CUSTODY_MEASURE_MYSQL=1 \
		go test -count=1 -v -run '^TestMySQLNextToPOSIX$$' -timeout 10m ./internal/translog/ 2>&1 | grep -E 'appends/s|ratio|^(--- |ok|FAIL)'
