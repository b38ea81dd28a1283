# make demo: a simulated cluster monitored by the real stack.  make test: the whole suite.
# Both work on a fresh Debian 12 machine from a fresh clone: they create .venv, install the
# package, install the Debian packages they need (as root) and then run.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest services bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

services:
	scripts/services.sh install prometheus victoria-metrics slurm postgresql

demo: $(STAMP) services
	$(BIN)/ceems demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP) services  # every benchmark, one table; make bench BENCH_ARGS="--quick --write-docs"
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info
