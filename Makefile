# nfd — two commands on a fresh machine with python3 >= 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-all lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,mnist1d]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nfd demo

lint: $(STAMP)
	$(BIN)/ruff format --check nfd tests scripts notebooks
	$(BIN)/ruff check nfd tests scripts notebooks
	$(BIN)/pyright

format: $(STAMP)
	$(BIN)/ruff format nfd tests scripts notebooks
	$(BIN)/ruff check --fix nfd tests scripts notebooks

test: lint
	$(BIN)/python -m pytest -n 2 -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python scripts/bench_finite.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache results
