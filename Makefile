# llmir — the two commands a newcomer types are `make run` and `make test`.
# Every target first checks (and as root on Debian installs) what it needs.

GO        ?= go
BIN       := bin/llmir
PKGS      := ./...
GOFLAGS_T ?=
STATIC    := bin/llmir-linux-amd64

export CGO_ENABLED := 1

.PHONY: all build run test bench fuzz-smoke lint static precompiled-db costmodel-data deps-go deps-test clean

all: build

deps-go:
	@scripts/ensure-deps.sh go gcc
	@$(GO) mod download

# What the tests need: gcc for generated kernels, OpenBLAS for baselines,
# mlir-opt for the round-trip tests, Chromium for the dashboard's browser test.
deps-test: deps-go
	@scripts/ensure-deps.sh openblas mlir chromium

build: deps-go
	$(GO) build -o $(BIN) ./cmd/llmir

# The main job on a built-in default.
# Tune llama-tiny with a short budget into the default database (rerun to
# resume: the budget counts what is already recorded).
run: build
	$(BIN) import --preset llama-tiny -o bin/llama-tiny.mlir
	$(BIN) tune --preset llama-tiny --trials 120 --time 5m

# The packages whose contracts include concurrency also run under -race.
RACE_PKGS := ./kvcache/... ./tuningdb/...

test: deps-test
	$(GO) vet $(PKGS)
	$(GO) test $(GOFLAGS_T) -count=1 -timeout 20m $(PKGS)
	$(GO) test -race -count=1 -timeout 10m $(RACE_PKGS)

bench: deps-test
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)

# The nightly benchmarks (issue #8): the nightly suite (kernels, tuning, a
# short tune of llama-tiny) into RESULTS, then the dashboard into SITE. Rows
# are stamped with the checked-out commit ("-dirty" for a modified tree).
# NIGHTLY_FLAGS adds flags, e.g. NIGHTLY_FLAGS=--fail-on-regression for CI.
RESULTS ?= $(HOME)/.cache/llmir/nightly.db
SITE    ?= bin/nightly-site
NIGHTLY_FLAGS ?=
.PHONY: nightly
nightly: build
	@scripts/ensure-deps.sh openblas
	c=$$(git rev-parse HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null || c=$$c-dirty; }; \
	  LLMIR_GIT_COMMIT=$$c $(BIN) bench --suite nightly --results $(RESULTS) $(NIGHTLY_FLAGS); st=$$?; \
	  $(BIN) dashboard --results $(RESULTS) -o $(SITE) || exit 1; exit $$st

# A short run of every fuzz target (FUZZTIME each).
FUZZTIME ?= 10s
fuzz-smoke: deps-go
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

lint: deps-go
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# A static executable for machines without Go (the GPU machine).
static: deps-go
	$(GO) build -ldflags '-linkmode external -extldflags "-static"' \
	  -tags 'osusergo netgo sqlite_omit_load_extension' -o $(STATIC) ./cmd/llmir

# Regenerates the precompiled tuning database built into llmir from a tuned
# one (LLMIR_DB=path, else ~/.cache/llmir/tuning.db); BEST=N keeps the N
# fastest records per workload and device (default 3). Rebuild to embed it.
precompiled-db: deps-go
	scripts/precompiled-db.sh $(LLMIR_DB)

# Re-measures the cost model's dataset on this CPU (run on an idle machine):
# the tuner records the rule-based default and random draws of each workload
# in a tuning database, and the dataset is exported from it (as
# `llmir db dataset` does). COSTMODEL_DB=path keeps that database (a rerun
# resumes from it); by default it is a temporary one.
COSTMODEL_DB ?=
costmodel-data: deps-test
	LLMIR_COSTMODEL_GEN=$(CURDIR)/costmodel/testdata/local2core-llama3.jsonl \
	  LLMIR_COSTMODEL_DB=$(if $(COSTMODEL_DB),$(abspath $(COSTMODEL_DB))) \
	  nice -n 10 $(GO) test ./costmodel -count=1 -run '^TestGenerateDataset$$' -v -timeout 30m

clean:
	rm -rf bin

# What the GPU machine (no Go) needs: the static llmir (the CUDA harness
# source is embedded in it and built there by nvcc at first use; the copy
# here is for reading) and the scripts. Run scripts/gpu-check.sh there.
GPU_BUNDLE := bin/llmir-gpu-bundle.tar.gz
.PHONY: gpu-bundle
gpu-bundle: static
	tar czf $(GPU_BUNDLE) $(STATIC) scripts/gpu-check.sh scripts/sdpa_baseline.py target/cuda/csrc
	@ls -l $(GPU_BUNDLE)
