# The two commands of README.md: `make demo` runs the main job; `make test` runs the whole suite and
# installs what it needs first. CI (.ci/run) calls `make test`.
SHELL := /bin/bash
GO    ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
# go.mod's toolchain line names the Go release the project is built and tested with (security fixes
# of the standard library arrive as toolchain releases). "auto" lets the go command fetch that release
# from the module proxy when the installed Go is older, which a go.env of GOTOOLCHAIN=local would forbid.
export GOTOOLCHAIN ?= auto

.PHONY: demo test tools lint vuln rules unit bench-smoke bench bench-tcp fuzz reference proto soak

# The dashboard's address (empty turns it off) and any other flags of the launcher (docs/demo.md).
DEMO_DASHBOARD ?= 127.0.0.1:8088
DEMO_FLAGS     ?=

# demo checks the dashboard's port first (a busy one fails now, not after the build), then builds the
# launcher and the four services in one go build, saying so and how long it took, and runs them.
demo: ## the demo cluster on embedded defaults (no Consul needed); dashboard on http://127.0.0.1:8088
	@addr='$(DEMO_DASHBOARD)'; port=$${addr##*:}; \
	if [ -n "$$addr" ] && [ "$$port" != 0 ] && (exec 3<>"/dev/tcp/$${addr%:*}/$$port") 2>/dev/null; then \
		echo "make demo: the dashboard address $$addr is in use (is another demo still running?)."; \
		echo "           Choose another: make demo DEMO_DASHBOARD=127.0.0.1:8089 (the launcher's -dashboard flag)"; \
		exit 1; \
	fi
	@echo "make demo: building the launcher and the shop's four services (seconds with a warm Go build cache; a first build compiles every dependency and takes a minute or two)..."
	@dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; start=$$(date +%s); \
	$(GO) build -o "$$dir/" ./examples/cluster ./examples/shop/catalog ./examples/shop/pricing ./examples/shop/cart ./examples/shop/gateway || exit 1; \
	echo "make demo: built in $$(( $$(date +%s) - start ))s; starting the cluster"; \
	"$$dir/cluster" -prebuilt "$$dir" -dashboard='$(DEMO_DASHBOARD)' $(DEMO_FLAGS)

test: tools lint vuln unit bench-smoke ## everything CI runs (unit includes the 60 s soak, TestSoak)

# The soak's length and any other flags of the launcher (docs/demo.md, "Soak").
SOAK_DURATION ?= 10m
SOAK_REPORT   ?= soak-report.md
SOAK_FLAGS    ?=

soak: ## the demo cluster on a real Consul agent for SOAK_DURATION (10m), chaos every minute; fails on growth, a failed idempotent request or unanswered chaos
	bash scripts/install-consul.sh
	$(GO) run ./examples/cluster -soak -consul=local -duration $(SOAK_DURATION) -dashboard= -soak-report $(SOAK_REPORT) $(SOAK_FLAGS)

tools: ## install Consul, etcd, Prometheus, the OTel Collector, Chromium, govulncheck (idempotent)
	bash scripts/install-tools.sh

lint: ## gofmt and go vet, library and bench module
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd bench && $(GO) vet ./...

vuln: ## govulncheck on the library, with a database built from the module proxy (scripts/install-govulncheck.sh)
	@db=$$(bash scripts/install-govulncheck.sh | tail -1) && \
	  test -s "$$db/index/modules.json" && \
	  echo "govulncheck -db file://$$db ./..." && \
	  govulncheck -db "file://$$db" ./...

rules: ## promtool check rules and promtool test rules on deploy/prometheus (docs/operations.md); make unit runs them too, as the Go tests of deploy/prometheus
	cd deploy/prometheus && promtool check rules slo-objectives-rules.yml slo-rules.yml alert-rules.yml && promtool test rules *_test.yml

unit: ## go test -race over the library (integration tests included)
	@# -count=1: several tests build and start the repo's own binaries, which the test cache cannot
	@# see, so a cached pass could hide a change that breaks them.
	$(GO) test -race -count=1 -timeout 40m ./...

bench-smoke: ## every benchmark once, so that they keep compiling and running
	cd bench && $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./...
	cd bench && $(GO) test -count=1 ./tcp/ # the TCP harness's parsers (make bench-tcp runs it)

bench: ## the benchmarks as BENCHMARKS.md quotes them
	cd bench && $(GO) test -run '^$$' -bench . -benchmem -count 6 -timeout 60m ./... | tee bench.out

bench-tcp: ## throughput over TCP loopback, servers and wrk pinned to separate cores (ARGS="-d 1s -warmup 1s -rounds 1" for a smoke run)
	bash scripts/install-wrk.sh
	cd bench && $(GO) run ./tcp $(ARGS)

fuzz: ## each fuzz target for 30 s
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$pkg || exit 1; \
	  done; done

reference: ## regenerate the environment reference in README.md
	$(GO) run ./cmd/envref -readme README.md

proto: ## regenerate the committed gRPC code from every .proto with a buf.gen.yaml beside it (scripts/install-protoc-plugins.sh)
	@bin=$$(bash scripts/install-protoc-plugins.sh | tail -1) && \
	  for gen in $$(git ls-files '*buf.gen.yaml'); do \
	    dir=$$(dirname "$$gen"); echo "buf generate $$dir"; \
	    (cd "$$dir" && PATH="$$bin:$$PATH" buf generate --template buf.gen.yaml .) || exit 1; \
	  done
