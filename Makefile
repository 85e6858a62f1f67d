# calsync — every target installs what it needs through the Go module proxy.
# Code generators are pinned in tools/go.mod and run with `go tool`.

SHELL := /bin/bash
GO    ?= go
TOOL  := $(GO) tool -modfile=tools/go.mod
BUF   := $(TOOL) buf
GOOGLEAPIS := .build/googleapis
# The API's descriptors with their comments, served by gRPC reflection.
APIDESC    := server/apidesc/calsync.binpb

.PHONY: all run run-cluster build test check generate lint fmt-check vet clean openapi-validate console-test-deps

all: check build

## run: start calsync on its embedded SQLite default (./calsync.db)
run:
	$(GO) run ./cmd/calsync serve

## run-cluster: three replicas (REST 8080-8082, gRPC 9090-9092) on a private PostgreSQL in .build/pg-cluster
## (initdb on the first run, kept after); the environment configures the replicas as for run; Ctrl-C stops all
run-cluster:
	./scripts/run-cluster.sh

## build: build the calsync binary into bin/
build:
	$(GO) build -o bin/calsync ./cmd/calsync

## test: every check, then the whole test suite with the race detector
## (the bench tool is a module of its own: `./...` at the root does not reach it)
test: console-test-deps check
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) -C $(BENCH_MOD) test -race -count=1 ./...

# The console's browser tests (cmd/calsync/console_e2e_test.go) drive
# Debian's chromium with playwright-core, pinned, installed by npm into a
# git-ignored folder; Playwright's own browser download is never used.
PLAYWRIGHT_CORE := .build/console-e2e/node_modules/playwright-core/package.json
PLAYWRIGHT_CORE_VERSION := 1.65.1

$(PLAYWRIGHT_CORE):
	npm install --prefix .build/console-e2e --no-audit --no-fund --loglevel=error playwright-core@$(PLAYWRIGHT_CORE_VERSION)

## console-test-deps: chromium and node from Debian when missing, playwright-core from npm
console-test-deps:
	@pkgs=""; test -x /usr/bin/chromium || pkgs="chromium"; command -v npm > /dev/null || pkgs="$$pkgs nodejs npm"; \
	if [ -n "$$pkgs" ]; then SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkgs; fi
	@$(MAKE) --no-print-directory $(PLAYWRIGHT_CORE)

## check: fail on stale gen/ or api/openapi/, buf lint or format findings, go vet, gofmt, an invalid OpenAPI document
check: lint fmt-check vet openapi-validate
	@rm -rf .build/check
	@$(BUF) generate -o .build/check
	@diff -r gen .build/check/gen > /dev/null || { \
		echo "gen/ is stale: run 'make generate' and commit the result"; diff -r gen .build/check/gen | head -20; exit 1; }
	@diff -r api/openapi .build/check/api/openapi > /dev/null || { \
		echo "api/openapi/ is stale: run 'make generate' and commit the result"; diff -r api/openapi .build/check/api/openapi | head -20; exit 1; }
	@$(BUF) build --as-file-descriptor-set --path proto/calsync -o .build/check/calsync.binpb
	@cmp -s $(APIDESC) .build/check/calsync.binpb || { \
		echo "$(APIDESC) is stale: run 'make generate' and commit the result"; exit 1; }
	@echo "gen/ and api/openapi/ are up to date"

# The OpenAPI document (served at GET /openapi.json) must pass a real
# validator: swagger-cli, pinned, installed by npm into a git-ignored folder.
OPENAPI_VALIDATOR := .build/openapi-validator/node_modules/.bin/swagger-cli
SWAGGER_CLI_VERSION := 4.0.4

$(OPENAPI_VALIDATOR):
	npm install --prefix .build/openapi-validator --no-audit --no-fund --loglevel=error @apidevtools/swagger-cli@$(SWAGGER_CLI_VERSION)

## openapi-validate: validate api/openapi/calsync.swagger.json as OpenAPI v2
openapi-validate: $(OPENAPI_VALIDATOR)
	$(OPENAPI_VALIDATOR) validate api/openapi/calsync.swagger.json

## generate: regenerate gen/ from proto/
generate: $(GOOGLEAPIS)
	$(BUF) generate
	$(BUF) build --as-file-descriptor-set --path proto/calsync -o $(APIDESC)

lint: $(GOOGLEAPIS)
	$(BUF) lint
	$(BUF) format --diff --exit-code proto

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.build/*')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) -C $(BENCH_MOD) vet ./...

# The google/api .proto files come from the grpc-gateway v1 module pinned in
# tools/go.mod; a git-ignored symlink into the module cache exposes them to buf.
$(GOOGLEAPIS): tools/go.mod
	@mkdir -p .build
	@$(GO) mod download -modfile=tools/go.mod github.com/grpc-ecosystem/grpc-gateway
	@ln -sfn "$$($(GO) list -modfile=tools/go.mod -m -f '{{.Dir}}' github.com/grpc-ecosystem/grpc-gateway)/third_party/googleapis" $@
	@touch -h $@

clean:
	rm -rf .build bin

# ---- Benchmarks, crash test, fault injection, fuzzing (cmd/calsync-bench) ----
# Heavy runs live here, never in `make test`. Check `uptime` first: the
# figures are only as good as the machine is quiet.
# The bench tool is a module of its own (cmd/calsync-bench/go.mod, which
# replaces github.com/calsync/calsync with this checkout), so its heavy
# dependencies (the etcd client) stay out of the product's go.mod. It is
# built into .build/ and run from the repository root, where it builds
# ./cmd/calsync and writes benchmarks/ and BENCHMARKS.md.

BENCH_MOD := cmd/calsync-bench
BENCH    := .build/calsync-bench
FUZZTIME ?= 30s
CYCLES   ?= 20
ETCD     ?= $(shell command -v etcd || echo /usr/bin/etcd)

.PHONY: bench bench-quick bench-stages bench-peers crash-test fault-test fuzz etcd-server bench-tool bench-instructions valgrind

## bench-tool: build the bench tool (its own module) into .build/calsync-bench
bench-tool:
	@mkdir -p .build
	$(GO) -C $(BENCH_MOD) build -o $(CURDIR)/$(BENCH) .

## bench: every scenario and its baselines (bare net/http, group commit off, pgbench on a private PostgreSQL); rewrites BENCHMARKS.md.
## The catch-up's million-change log is filled once and kept in .build/ for later runs.
bench: bench-tool
	@mkdir -p .build
	$(BENCH) run -profile full -pprof auto -catchup-db .build/catchup-1m.db

## bench-quick: the same scenarios, small, in about 70 s (the PostgreSQL failover waits out a 10 s lease)
bench-quick: bench-tool
	$(BENCH) run -profile quick

## bench-stages: one microbenchmark per stage of a webhook (intake, verify, inbox commit, WAL write,
## normalize, apply, Recall hints, broadcast, encode), each with CPU and allocations per webhook, and the
## committer's SQLite floor beside the store's own path; STAGETIME=1s each
STAGETIME ?= 1s
STAGE_BENCHES := \
	'./provider/postpress=BenchmarkStage' \
	'./provider/recall=BenchmarkStage' \
	'./server=BenchmarkStage|BenchmarkWebhookRewrites$$' \
	'./store/sqlite=BenchmarkEnqueue$$|BenchmarkPointReads|BenchmarkCommitterFloor' \
	'./store/sqlite=BenchmarkEnqueueApply/apply=update-event$$' \
	'./store/sqlite/walvfs=BenchmarkCommit$$' \
	'./ingest=BenchmarkStage|BenchmarkProcessPostpress$$' \
	'./watch=BenchmarkStage|BenchmarkFanOutFiltered$$|BenchmarkEncode$$'
bench-stages:
	@echo "load average: $$(cut -d' ' -f1-3 /proc/loadavg), $$(nproc) cores"
	@set -o pipefail; for spec in $(STAGE_BENCHES); do \
		pkg=$${spec%%=*}; pat=$${spec#*=}; \
		$(GO) test -run '^$$' -bench "$$pat" -benchmem -count=1 -benchtime $(STAGETIME) $$pkg \
			| grep -E '^(Benchmark|FAIL|panic|---)' || exit 1; \
	done
	@echo "load average after: $$(cut -d' ' -f1-3 /proc/loadavg)"

## bench-instructions: instructions per webhook of BenchmarkWebhookRewrites (a postpress rewrite's whole
## server-side path but TCP), counted by valgrind's callgrind: unlike CPU time, repeatable on a busy machine
bench-instructions: valgrind
	@mkdir -p .build
	$(GO) test -c -o .build/server.test ./server
	scripts/instructions-per-op.sh .build/server.test BenchmarkWebhookRewrites 1000 4000

# valgrind comes from Debian, installed only when missing.
valgrind:
	@command -v valgrind > /dev/null || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq valgrind; }

## bench-peers: etcd with calsync's load shapes, its put → watch paired with calsync's fan-out; rewrites BENCHMARKS.md
bench-peers: etcd-server bench-tool
	$(BENCH) peers -profile full -etcd $(ETCD)

## crash-test: kill -9 calsync under load $(CYCLES) times; fails on anything lost or doubled
crash-test: bench-tool
	$(BENCH) crash -cycles $(CYCLES) -out benchmarks/crash.json && $(BENCH) report

## fault-test: Recall API failing in every documented way; calsync must converge within Recall's limits
fault-test: bench-tool
	$(BENCH) faults -out benchmarks/faults.json && $(BENCH) report

# etcd-server comes from Debian, installed only when missing.
etcd-server:
	@command -v etcd > /dev/null || test -x /usr/bin/etcd || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq etcd-server; }

## fuzz: every fuzz target of every package for FUZZTIME each; findings land in testdata/fuzz as regression seeds
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done
