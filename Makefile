# tagmatch: `make demo` and `make test` set up everything on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FIXTURES := fixtures/build
DEMO_STORE := $(FIXTURES)/demo-store
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast test-browser test-snapshot-update fixtures bench calibrate bench-dupes scale scale-cluster profile tradeoff score-study compare-losses train-default clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python >= 3.11) on PATH, or run: make PYTHON=python3"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

fixtures: $(STAMP)
	$(BIN)/python fixtures/generate.py $(FIXTURES)

# The demo store is rebuilt each time (a store made by an older model would be refused).
demo: fixtures
	rm -rf $(DEMO_STORE) $(FIXTURES)/demo-store.joblib
	$(BIN)/tagmatch index $(FIXTURES)/library --store $(DEMO_STORE)
	$(BIN)/tagmatch scan $(FIXTURES)/messy --store $(DEMO_STORE) --json $(FIXTURES)/demo-scan.json

# The default run includes the slow end-to-end tests (they fit the CI budget).
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Opt-in: `tagmatch serve` in a real headless browser: Debian's chromium and chromium-driver
# (installed with apt-get when missing, which needs root) driven by selenium (from PyPI).
test-browser: $(STAMP)
	command -v chromedriver >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
	$(BIN)/python -m pip install -q 'selenium>=4.20'
	TAGMATCH_BROWSER_TEST=1 $(BIN)/python -m pytest -q tests/bridges/test_browser.py

# Rewrites the TUI's SVG snapshots (tests/tui/__snapshots__) after an intended change of a screen.
test-snapshot-update: $(STAMP)
	$(BIN)/python -m pytest -q tests/tui --snapshot-update

# Needs the dev corpus (../shared/corpus/fetch-dev-corpus); skipped with a message without it.
bench: $(STAMP)
	$(BIN)/python -m tools.bench

# Refits the shipped model's calibration on the dev corpus's split (what docs/benchmarks.md reports).
calibrate: $(STAMP)
	$(BIN)/tagmatch calibrate --dev-corpus --model tagmatch/default_model/model.joblib

# Duplicate finding: precision/recall of duplicate pairs and time per 1,000 files (dev corpus).
bench-dupes: $(STAMP)
	$(BIN)/python -m tools.bench_dupes

# Store and search at 1k / 10k / 100k tracks' worth of vectors (bench-dupes' vectors replicated;
# needs `make bench-dupes` and `make bench` first; hours at 100k: see docs/benchmarks.md, Scale).
# Stages are cached under ~/.cache/tagmatch/scale: a re-run goes on where it stopped.
SCALE_SIZES ?= 1k,10k,100k
scale: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m tools.scale_store --sizes $(SCALE_SIZES)

# Sharded search on a local dask cluster: 1, 2, 4 groups of CLUSTER_TRACKS tracks' worth each
# (tools/scale_cluster.py; needs `make bench` first; cached under ~/.cache/tagmatch/scale-cluster).
CLUSTER_TRACKS ?= 100000
CLUSTER_GROUPS ?= 1,2,4
scale-cluster: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m tools.scale_cluster --tracks-per-group $(CLUSTER_TRACKS) --groups $(CLUSTER_GROUPS)

train-default: $(STAMP)
	$(BIN)/python -m tools.train_default

# CPU per stage of the index and query paths (after `make bench`, on a quiet machine).
profile: $(STAMP)
	$(BIN)/python -m tools.profile

# Reference hop, query hop, vector dtype and dimension against accuracy (uses bench's queries).
tradeoff: $(STAMP)
	$(BIN)/python -m tools.tradeoff

# Other ways to score the neighbours, on cached bench hits, each calibrated like the shipped one.
score-study: $(STAMP)
	$(BIN)/python -m tools.score_study

# The seed's pair-BCE Siamese vs NT-Xent: same data, same steps, same seed, from scratch,
# then both scored by the trade-off study's default variant (docs/benchmarks.md).
COMPARE_STEPS ?= 300
COMPARE_DIR ?= $(HOME)/.cache/tagmatch/compare
compare-losses: $(STAMP)
	mkdir -p $(COMPARE_DIR)
	for loss in ntxent pair-bce; do \
	  $(BIN)/python -m tools.train_default --loss $$loss --steps $(COMPARE_STEPS) \
	    --out $(COMPARE_DIR)/$$loss.joblib --checkpoint $(COMPARE_DIR)/$$loss.ckpt || exit 1; \
	done
	for loss in ntxent pair-bce; do \
	  $(BIN)/python -m tools.tradeoff --model $(COMPARE_DIR)/$$loss.joblib --variants default --limit 40 || exit 1; \
	done

clean:
	rm -rf $(VENV) $(FIXTURES) .pytest_cache

