# The publisher's blob stores and envelope encryption: the S3 conformance
# run needs a real S3-compatible server (versitygw, Apache-2.0).
VERSITYGW_VERSION := v1.8.0
VERSITYGW_BIN := $(CACHE_DIR)/versitygw/$(VERSITYGW_VERSION)/bin/versitygw

TEST_ENV += CUSTODY_VERSITYGW_BIN=$(VERSITYGW_BIN) CUSTODY_TEST_REQUIRE_S3=1

test-deps: test-deps-s3

.PHONY: test-deps-s3
test-deps-s3: ## Build versitygw (once, cached) for the S3 blob-store tests.
	VERSITYGW_VERSION=$(VERSITYGW_VERSION) CUSTODY_CACHE_DIR=$(CACHE_DIR) scripts/build-versitygw.sh >/dev/null

bench: bench-publisher-crypto

.PHONY: bench-publisher-crypto
bench-publisher-crypto: ## Encrypted blob store put/open throughput next to raw SHA-256 and AES-256-GCM measured in the same run.
	cd services/publisher && GOWORK=off go test -run '^$$' -bench . -benchtime 3s -count 3 ./internal/sealed/
