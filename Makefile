# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it with the
# versions pinned in constraints.txt, so reports are reproducible.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROFILE ?= ci
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba
export PYTHONHASHSEED := 0
# Python may write bytecode into .venv and __pycache__/ (both ignored): with PYTHONDONTWRITEBYTECODE
# set, as some shells and CI images do, every process compiles torch & co. anew, 4-5 s each (measured),
# paid by every notebook kernel and subprocess of the test run.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test check unit tiers notebooks browser execute-notebooks reference lint lab browser-deps bench clean

PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

# uv installs the same pinned versions as pip from the same registry, but downloads in
# parallel: a fresh install takes about 1.5 minutes instead of pip's 3.5 (torch's CUDA wheels
# alone are about 4 GB). UV_SYSTEM_CERTS: the machine's certificate store, as pip uses.
UV := UV_SYSTEM_CERTS=1 UV_LINK_MODE=copy $(BIN)/python -m uv pip install --quiet --python $(BIN)/python

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==0.13.9
	$(UV) -c constraints.txt -e ".[dev,tracking]"
	# Test-only peer for the metric cross-checks; its own pins (transformers<5, …) clash with
	# ours, and only recommenders.evaluation.python_evaluation (numpy, pandas) is used.
	$(UV) --no-deps recommenders==1.2.1
	@touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default (the synthetic catalog): notebooks 01-07 and the report.
demo: $(STAMP)
	$(BIN)/workbench run --profile $(PROFILE)

## The fast gate: lint and the unit tests, each test limited to 120 s (about 2 minutes in all).
check: lint unit

## Every tier, in an order where each finds what it checks: lint, the unit tests, the slow
## tiers (whole series on small catalogs, cross-CPU reproducibility, real data, GPU), the
## notebooks under nbval and their metrics against the reference, then the report they
## wrote rendered in a headless browser.
test: $(STAMP) browser-deps lint unit
	@# The slow tiers and the notebooks share no files: on two cores they run side by side.
	$(MAKE) --no-print-directory --output-sync=target -j2 tiers notebooks
	$(MAKE) --no-print-directory browser

## ruff; the one-way layers of [tool.importlinter] (pyproject.toml); mypy on workbench/.
lint: $(STAMP)
	$(BIN)/ruff check workbench tests bench notebooks
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy --cache-dir .cache/mypy

# Each test process is pinned to one thread (workbench.reproducibility), so two workers use both cores.
unit: $(STAMP)
	$(PYTEST) -n 2 --timeout=120 tests/unit

tiers: $(STAMP)
	$(PYTEST) -n 2 --dist loadgroup --timeout=900 tests/series tests/realdata tests/gpu

browser: $(STAMP)
	$(PYTEST) --timeout=300 tests/browser

NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))
# 02b trains on real speech from ../shared/data/fsdd, which is never copied into the project.
ifeq ($(wildcard ../shared/data/fsdd/recordings),)
NOTEBOOKS := $(filter-out notebooks/02b_audio_real.ipynb,$(NOTEBOOKS))
SKIPPED_NOTE := echo "skipping notebooks/02b_audio_real.ipynb: ../shared/data/fsdd is absent";
endif
## The notebooks under nbval (checked cells hold claims that survive float drift), then every
## metric they wrote against tests/reference/synthetic-ci.json within its tolerance.
notebooks: $(STAMP)
	@$(SKIPPED_NOTE) true
	cd notebooks && WORKBENCH_PROFILE=ci ../$(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax $(notdir $(NOTEBOOKS))
	WORKBENCH_REQUIRE_REFERENCE_RUN=1 $(PYTEST) tests/notebooks

## Re-execute every notebook in place from its py:percent twin (ci profile), in series order,
## after a change to the code they call; commit the .py and the executed .ipynb together,
## then `make reference` to record the new numbers the tests hold the notebooks to.
## `make execute-notebooks FROM=05` starts at notebook 05 (the earlier ones' files are reused).
execute-notebooks: $(STAMP)
	$(BIN)/python -c "from workbench.pipeline import execute_in_place; execute_in_place(first='$(FROM)' or None)"

## The committed reference metrics (tests/reference/) from the notebooks' last execution.
reference: $(STAMP)
	$(BIN)/python -c "from workbench.paths import default_catalog_dir as c, default_report_dir as r; from workbench.reproduce import write_reference; print(write_reference(r(c('ci')), 'tests/reference/synthetic-ci.json'))"

## Debian's chromium for the report's browser check; skipped (tests then skip with a reason) when it cannot be installed.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: browser tests will skip"; fi

## JupyterLab on 127.0.0.1 with a token (--allow-root only when running as root).
lab: $(STAMP)
	$(BIN)/workbench lab

## Benchmarks (not part of the test run): each prints ratios against a peer measured in the same run.
bench: $(STAMP)
	$(UV) -c constraints.txt -e ".[dev,bench]"
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf data/catalogs data/work reports/*/ .cache
