# Binaries and the end-to-end demo.
BINARIES := signer publisher catalog gatekeeper cdn-broker edge

.PHONY: build
build: ## Build bin/custody and the six service binaries.
	@mkdir -p bin
	go build -o bin/custody ./cli/cmd/custody
	@for s in $(BINARIES); do echo "go build $$s"; go build -o bin/$$s ./services/$$s/cmd/$$s; done

.PHONY: demo
demo: build ## Start the dev stack, run one artifact end to end, show attacks refused, stop.
	scripts/demo.sh
