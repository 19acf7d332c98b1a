# Custody: build, test and demo. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Tools and test servers are built once per version into a cache that
# survives between runs on the same machine.
CACHE_DIR ?= $(or $(CUSTODY_CACHE_DIR),$(HOME)/.cache/custody)
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
BUF_VERSION := v1.75.0
TOOLS := $(CACHE_DIR)/tools/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)_grpc-$(PROTOC_GEN_GO_GRPC_VERSION)_buf-$(BUF_VERSION)
export PATH := $(TOOLS):$(PATH)

MODULES := libs cli services/signer services/publisher services/catalog services/gatekeeper services/cdn-broker services/edge
GO_TEST_FLAGS ?= -count=1 -timeout 40m

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(TOOLS)/buf:
	@echo "installing protoc-gen-go, protoc-gen-go-grpc and buf into $(TOOLS) (once)"
	@mkdir -p $(TOOLS)
	cd / && GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	cd / && GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	cd / && GOBIN=$(TOOLS) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

.PHONY: tools
tools: $(TOOLS)/buf ## Install the code generators and buf (cached by version).

.PHONY: generate
generate: tools ## Regenerate Go code from proto/.
	rm -rf libs/gen
	buf generate

.PHONY: check-generate
check-generate: generate ## Fail if the committed generated code is not current.
	@if [ -n "$$(git status --porcelain -- libs/gen)" ]; then \
		git status --short -- libs/gen; \
		echo "generated code is stale: run 'make generate' and commit libs/gen"; exit 1; fi

.PHONY: lint
lint: tools ## go vet, gofmt, buf lint and buf format.
	@for m in $(MODULES); do echo "go vet $$m"; (cd $$m && GOWORK=off go vet ./...); done
	@bad=$$(gofmt -l $(MODULES)); if [ -n "$$bad" ]; then echo "not gofmt-formatted:"; echo "$$bad"; exit 1; fi
	buf lint
	buf format -d --exit-code

VAULT_VERSION := v1.21.0
VAULT_BIN := $(CACHE_DIR)/vault/$(VAULT_VERSION)/bin/vault

# The environment of every test run; mk/<area>.mk files append to it
# (TEST_ENV += CUSTODY_X=...) to point the tests at the servers they need.
TEST_ENV := CUSTODY_VAULT_BIN=$(VAULT_BIN) CUSTODY_TEST_REQUIRE_VAULT=1 CUSTODY_TEST_REQUIRE_SOFTHSM=1

.PHONY: test
test: test-go test-spire ## Install what the tests need and run every test.

# Areas add what their tests need as prerequisites of test-deps, and their
# benchmarks as prerequisites of bench, in mk/<area>.mk.
.PHONY: test-deps
test-deps: test-deps-keys ## Install or build every server the tests start (cached).

.PHONY: test-deps-keys
test-deps-keys: ## Build Vault (once, cached) and install SoftHSM2 for the key back-end tests.
	VAULT_VERSION=$(VAULT_VERSION) CUSTODY_CACHE_DIR=$(CACHE_DIR) scripts/build-vault.sh >/dev/null
	scripts/install-softhsm.sh

.PHONY: test-go
test-go: test-deps ## Unit, handler and end-to-end tests of every module, each on its own (GOWORK=off).
	@for m in $(MODULES); do echo "== go test $$m"; (cd $$m && GOWORK=off $(TEST_ENV) \
		go test $(GO_TEST_FLAGS) ./...); done

.PHONY: test-spire
test-spire: ## The identity layer against a real SPIRE server and agent.
	scripts/test-spire.sh

-include mk/*.mk

.PHONY: bench
bench: bench-signer ## Every benchmark; each prints its figures next to the limit or peer measured in the same run.

.PHONY: bench-signer
bench-signer: test-deps-keys ## Signing throughput through the signer per key back end, next to each back end's raw rate.
	cd services/signer && GOWORK=off CUSTODY_VAULT_BIN=$(VAULT_BIN) CUSTODY_TEST_REQUIRE_VAULT=1 CUSTODY_TEST_REQUIRE_SOFTHSM=1 \
		go test -run '^$$' -bench . -benchtime 5s ./internal/bench/
