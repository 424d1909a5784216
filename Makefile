# nfd — two commands on a fresh machine with python3 >= 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := $(wildcard nfd tests scripts notebooks)

.PHONY: install demo test test-slow test-all lint format bench figures figures-full figures-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,mnist1d]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nfd demo

lint: $(STAMP)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/ruff check $(SRC)
	$(BIN)/pyright

format: $(STAMP)
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

test: lint
	$(BIN)/python -m pytest -n 2 --dist worksteal -q --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python scripts/bench_finite.py
	$(BIN)/python scripts/bench_limit.py
	$(BIN)/python scripts/bench_kernel.py
	$(BIN)/python scripts/bench_ensemble.py
	$(BIN)/python scripts/bench_sharding.py

# every figure of the project from configs/figures (smoke: minutes on 2 CPU cores)
figures: $(STAMP)
	$(BIN)/nfd figures --out figures

# full size (a long CPU run or a GPU); README's gallery shows these (docs/figures)
figures-full: $(STAMP)
	$(BIN)/nfd figures --full --out figures/full

# the paper's sizes (configs/figures/gpu: <= 10 minutes each on one H100)
figures-gpu: $(STAMP)
	$(BIN)/nfd figures --gpu --out figures/gpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache results
