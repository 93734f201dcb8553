# fleetwatch — see README.md. `make test` is what CI runs.
GO        ?= go
PEERS_DIR ?= $(HOME)/.cache/fleetwatch/peers
export FLEETWATCH_PEERS_DIR := $(PEERS_DIR)
# Tests find the real peer binaries (prometheus, promtool, alertmanager, thanos) here.
export FLEETWATCH_PEERS_BIN := $(PEERS_DIR)/bin

.PHONY: all build test prebuild unit peers bench bench-1m bench-alerts bench-schedule lint fuzz demo clean image release

all: build

build:
	$(GO) build -o bin/fleetwatch ./cmd/fleetwatch

# The version a release or an image is built as; REVISION is the commit.
VERSION  ?= $(shell cat VERSION)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
IMAGE    ?= fleetwatch/fleetwatch:$(VERSION)
# docker, or podman where there is no docker; override with CONTAINER_TOOL=...
CONTAINER_TOOL ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

## image: the container image (Dockerfile: static binary on scratch, non-root) as $(IMAGE).
## Needs a running container engine: the client alone is not enough.
image:
	@if [ -z "$(CONTAINER_TOOL)" ] || ! $(CONTAINER_TOOL) info >/dev/null 2>&1; then \
		echo "make image: no running container engine (docker or podman; '$(CONTAINER_TOOL) info' failed). The release tarballs need none: make release" >&2; exit 1; fi
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE) .

## release: tarballs for linux and darwin on amd64 and arm64 with sha256sums, in dist/
## (hack/release.sh; PLATFORMS='linux/amd64' for fewer).
release:
	bash hack/release.sh $(VERSION) $(PLATFORMS)

## peers: install the real Prometheus, Alertmanager and Thanos binaries into $(PEERS_DIR) (cached),
## and the lab's etcd, Kubernetes control plane and kube-state-metrics. The module downloads of
## fleetwatch itself wait on the network, not the CPU, so they run beside the builds.
peers:
	@$(GO) mod download & dl=$$!; bash hack/peers.sh; rc=$$?; wait $$dl && exit $$rc

# The test packages that mostly wait on real peers are named first, so go test builds and starts
# them first and compiles the rest while they run. A running test holds one of go test's -p
# slots, so there are four: two cores stay busy compiling while the waiting packages run.
WAITING_TESTS = ./test/e2e ./test/controlplanes ./test/integration

# Test binaries are linked without symbol table and DWARF (-s -w): a fifth less link work for
# each of the sixty or so, and stack traces keep their file:line (they come from pclntab).
TESTFLAGS = -p 4 -count=1 -vet=off -timeout 30m -ldflags='-s -w'

# go vet with every analyzer but stdmethods, which takes any method named Seek for io.Seeker's:
# Prometheus's sample iterators (chunkenc.Iterator) have Seek(int64) ValueType, and the query
# package implements them.
VET = $(GO) vet -stdmethods=false

## test: vet, unit tests, and the integration/end-to-end tests against the real peers.
##
## On a fresh machine the peers take most of the run. fleetwatch's own compile (prebuild) starts
## beside them at the lowest CPU priority, so it only takes the CPU the peer builds leave idle
## (their links, the last build running alone) and does not slow them; it stops when the peers
## are built, and what it compiled is in the build cache. It runs in a session of its own, so
## that it can be stopped whole; where the kernel groups sessions for the scheduler
## (autogroup), nice only counts within a group, so the group itself is niced too. Its output is not shown: the tests
## report the same errors. Then the tests start at once, the packages that wait on the lab first,
## and go vet runs beside them at the lowest priority, on the CPU the labs leave idle; it fails
## the target as a test does. go vet runs every analyzer go test would run (a subset), so go
## test does not vet again (-vet=off).
test:
	@setsid sh -c 'echo 19 >/proc/self/autogroup; exec nice -n 19 $(MAKE) --no-print-directory prebuild' >/dev/null 2>&1 & pre=$$!; \
	trap 'kill -- -'$$pre' 2>/dev/null; exit 130' INT TERM; \
	$(MAKE) --no-print-directory peers; rc=$$?; kill -- -$$pre 2>/dev/null; wait $$pre; exit $$rc
	@echo "$(VET) ./... (beside the tests, at the lowest CPU priority)"; \
	vetlog=$$(mktemp); nice -n 19 $(VET) ./... >$$vetlog 2>&1 & vet=$$!; \
	echo "$(GO) test $(TESTFLAGS) $(WAITING_TESTS) ./..."; \
	$(GO) test $(TESTFLAGS) $(WAITING_TESTS) ./...; rc=$$?; \
	if ! wait $$vet; then echo "go vet ./... failed:"; rc=1; fi; cat $$vetlog; rm -f $$vetlog; exit $$rc

# prebuild compiles what `make test` runs, the packages that wait on peers first, into the build
# cache: `go list -export -test` compiles every package and its test variants without linking
# (test binaries are linked again by every go test, so linking them here would be work lost).
prebuild:
	$(GO) list -export -test $(WAITING_TESTS) >/dev/null
	$(VET) ./...
	$(GO) list -export -test ./... >/dev/null

## unit: the tests that need no peer binaries.
unit:
	$(GO) test -count=1 -short ./...

ALERTBENCH = $(GO) run ./hack/alertbench --fleetwatch=bin/fleetwatch --alertmanager=$(FLEETWATCH_PEERS_BIN)/alertmanager $(ALERTBENCH_FLAGS)

## bench: every bench: fleetwatch side by side with prometheus --web.enable-remote-write-receiver
## (hack/bench: 10,000 series in 4 clusters with queries and a 12-hour dashboard, fleetwatch on
## Thanos Receive and Query beside the embedded one, then 100,000
## series in one cluster and in 40; BENCH_FLAGS='-json=bench.json -rounds=3' etc., see
## `go run ./hack/bench -h`), the alert intake of bench-alerts, the placement decisions of
## bench-schedule. bench-1m adds a million series (one cluster and 400; long).
BENCH = $(GO) run ./hack/bench --fleetwatch=bin/fleetwatch --prometheus=$(FLEETWATCH_PEERS_BIN)/prometheus
BENCH_LARGE = -samples=15 -query-runs=5 -dashboard-span=0
bench: peers build
	$(BENCH) -thanos=$(FLEETWATCH_PEERS_BIN)/thanos $(BENCH_FLAGS)
	$(BENCH) -clusters=1 -series=100000 -rounds=2 $(BENCH_LARGE) $(BENCH_FLAGS)
	$(BENCH) -clusters=40 -series=2500 -rounds=2 $(BENCH_LARGE) $(BENCH_FLAGS)
	$(ALERTBENCH)
	$(MAKE) bench-schedule

bench-1m: peers build
	$(BENCH) -clusters=1 -series=1000000 -rounds=1 $(BENCH_LARGE) $(BENCH_FLAGS)
	$(BENCH) -clusters=400 -series=2500 -rounds=1 $(BENCH_LARGE) $(BENCH_FLAGS)

## bench-schedule: placement decision latency (p50/p99) and decisions/s on 10, 100 and 1,000
## clusters (schedule/bench_test.go).
bench-schedule:
	$(GO) test -run='^$$' -bench=Decide -benchtime=3s -count=3 ./schedule

## bench-alerts: fleetwatch's alert intake side by side with a real Alertmanager, 100 clusters posting
## 100k active alerts (hack/alertbench; ALERTBENCH_FLAGS='-json=alerts.json -rounds=5' etc., see
## `go run ./hack/alertbench -h`).
bench-alerts: peers build
	$(ALERTBENCH)

## fuzz: a short run of every fuzz target in the tree (found, not listed: a new one is fuzzed too);
## FUZZTIME=2m for longer runs.
FUZZTIME ?= 30s
fuzz:
	@set -e; for f in $$(git ls-files '*_test.go' | xargs grep -l '^func Fuzz'); do \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz: $$t (./$$(dirname $$f))"; \
			$(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) ./$$(dirname $$f); \
		done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(VET) ./...

clean:
	rm -rf bin
