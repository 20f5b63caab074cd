# Fresh machine: `make quickstart` (the main job) and `make test` (the whole suite, slow tests included).
# Each creates .venv and installs torch first (CPU build by default; override TORCH_SPEC, e.g.
# `make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"`).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup quickstart test test-fast lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_SPEC)

setup: $(BIN)/python
	$(BIN)/pip install -e ".[dev,serve]"

quickstart: setup
	$(BIN)/lmforge quickstart

test: setup
	$(BIN)/python -m pytest tests -q

test-fast: setup
	$(BIN)/python -m pytest tests -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
