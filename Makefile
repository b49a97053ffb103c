# hive — see `make help`.
SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/.tools/bin
BUF := $(TOOLS)/buf
STATICCHECK := $(TOOLS)/staticcheck
export PATH := $(TOOLS):$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/hivefleet/hive/version.Version=$(VERSION)
BINARIES := hivectl hive-agent hive-coordinator hive-repo
GOTEST_FLAGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z][a-z0-9-]*:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(TOOLS)/%: tools/go.mod tools/go.sum
	@mkdir -p $(TOOLS)
	cd tools && GOBIN=$(TOOLS) $(GO) install tool
	@touch $(TOOLS)/*

.PHONY: tools
tools: $(BUF) $(STATICCHECK) ## build the pinned tools (buf, protoc plugins, staticcheck) into .tools/bin

.PHONY: build
build: ## build the four binaries into bin/
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(BINARIES))

PKG_ARCHES ?= amd64 arm64
.PHONY: packages
packages: build ## .deb and .rpm of the four binaries into dist/ (PKG_ARCHES="amd64 arm64")
	@set -e; host=$$($(GO) env GOARCH); \
	epoch=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)}; \
	for arch in $(PKG_ARCHES); do \
	  bindir=bin; \
	  if [ "$$arch" != "$$host" ]; then \
	    bindir=bin/linux_$$arch; mkdir -p $$bindir; \
	    echo "building $$arch binaries into $$bindir"; \
	    CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$bindir/ $(addprefix ./cmd/,$(BINARIES)); \
	  fi; \
	  SOURCE_DATE_EPOCH=$$epoch $(GO) run ./deploy/packaging -version '$(VERSION)' -arch $$arch -bin $$bindir -deploy deploy -out dist; \
	done

.PHONY: generate
generate: tools ## regenerate protobuf Go code
	$(BUF) generate

.PHONY: check-generated
check-generated: tools ## fail if the committed generated code is stale (hand-written files beside it, e.g. proto/hive/v1/errors.go, are not compared)
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(BUF) generate -o $$tmp && \
	(cd proto && find . -type f ! -name '*.pb.go' ! -name '*.proto' -exec cp --parents {} $$tmp/proto/ \;) && \
	diff -r -x '*.proto' proto $$tmp/proto >/dev/null || \
	{ echo "generated code is stale: run 'make generate' and commit"; diff -r -x '*.proto' proto $$tmp/proto | head -20; exit 1; }

.PHONY: check-tidy
check-tidy: ## fail if go.mod/go.sum are not tidy
	@cp go.mod /tmp/hive-go.mod.bak && cp go.sum /tmp/hive-go.sum.bak && $(GO) mod tidy && \
	if ! diff -q go.mod /tmp/hive-go.mod.bak >/dev/null || ! diff -q go.sum /tmp/hive-go.sum.bak >/dev/null; then \
	  cp /tmp/hive-go.mod.bak go.mod; cp /tmp/hive-go.sum.bak go.sum; echo "go.mod/go.sum not tidy: run 'go mod tidy'"; exit 1; fi

.PHONY: check-fmt
check-fmt: ## fail if gofmt would change a file (generated code excepted)
	@files=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$files" ]; then echo "gofmt would change: $$files (run 'make fix')"; exit 1; fi

.PHONY: vet
vet:
	$(GO) vet ./...

.PHONY: buf-lint
buf-lint: tools
	$(BUF) lint

.PHONY: test
test: check-fmt vet buf-lint check-generated check-tidy build ## vet, buf lint, generated-code and go.mod tidiness checks, go test -race ./...
	$(GO) test -race -count=1 -timeout 60m $(GOTEST_FLAGS) ./...

.PHONY: test-short
test-short: ## quick unit tests (no real tools, no root)
	$(GO) test -short -count=1 ./...

.PHONY: test-netlab
test-netlab: ## multi-host tests on network namespaces (needs root and iproute2): harness, scenarios, providers through agents
	$(GO) test -race -count=1 -timeout 20m -v $(GOTEST_FLAGS) ./internal/netlab/ ./tests/netlab/...
	$(GO) test -race -count=1 -timeout 20m -v $(GOTEST_FLAGS) -run 'ThroughAgent' ./converge/firewall/ ./converge/swarm/

.PHONY: lint
lint: vet buf-lint tools ## vet, buf lint, buf breaking against main, staticcheck
	$(STATICCHECK) ./...
	@if git rev-parse --verify -q main >/dev/null && [ -n "$$(git ls-tree -r main --name-only proto)" ]; then \
	  $(BUF) breaking --against '.git#branch=main'; else echo "buf breaking: no main to compare with yet"; fi

.PHONY: verify
verify: check-fmt lint check-generated check-tidy ## every check, rewriting nothing

.PHONY: fix
fix: generate ## the only target that rewrites: gofmt, go mod tidy, generate
	gofmt -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')
	$(GO) mod tidy

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
	  done; done

.PHONY: bench
bench: ## benchmarks with figures printed
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: bench-repo
bench-repo: ## hive-repo vs createrepo_c and apt-ftparchive as fresh processes (2,000 and 10,000 packages, corpus cached): wall, CPU, peak RSS and ratios
	HIVE_BENCH_10K=$${HIVE_BENCH_10K-1} $(GO) test -run '^$$' -bench . -benchtime $${BENCHTIME:-5x} -timeout 60m ./repo/

.PHONY: demo
demo: build ## run the local site demo (coordinators, agents, a push, status)
	@bin/hivectl demo --help >/dev/null 2>&1 || { echo "make demo: the local site demo lands with the coordinator and agent issues (3, 4)"; exit 1; }
	bin/hivectl demo

.PHONY: deps
deps: ## as root on Debian: apt-get install the tools the tests use (.ci/apt-packages)
	@missing=$$(for p in $$(grep -v '^#' .ci/apt-packages); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "all test tools installed"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else echo "missing: $$missing"; echo "run as root: apt-get install -y $$missing"; fi

.PHONY: clean
clean: ## remove build output
	rm -rf bin dist .tools
