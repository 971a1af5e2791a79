# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# torch is pinned and installed first (constraints.txt): an unpinned torch would pull a multi-GB CUDA build.
PIPC   := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint typecheck unit bench bench-cuda reproduce clean venv peers

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIPC) --upgrade pip
	$(PIPC) torch==2.13.0
	$(PIPC) -e '.[dev]'
	@touch $(STAMP)

# The lab's learning-rate-free peers (Prodigy, D-Adaptation, schedule-free, DoG): optional, skipped when missing.
peers: $(STAMP)
	-$(PIPC) -e '.[peers]'

demo: $(STAMP) peers
	$(PY) -m theorylr.cli demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) peers
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n 2 tests

test: lint typecheck unit

# The papers' claims at CI size (a few minutes); the full form is `theorylr reproduce all --out DIR` (see README).
reproduce: $(STAMP)
	$(PY) -m theorylr.cli reproduce all --quick --out results/reproduce

bench: $(STAMP)
	-$(PIPC) -e '.[bench,peers]'
	$(PY) -m benchmarks.run

# On a machine with an NVIDIA GPU: the CUDA tests and the GPU figures (benchmarks/cuda.sh; results in
# benchmarks/results/cuda). Needs an interpreter with a CUDA build of torch (this venv's pinned build is the CPU
# one), numpy, scikit-learn and pytest: PYTHON (default python3) names it, e.g. `make bench-cuda PYTHON=python3.12`.
bench-cuda:
	PYTHON=$(PYTHON) benchmarks/cuda.sh

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
