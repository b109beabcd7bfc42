# The README's two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# EXTRAS=dev,torch adds PyTorch for the DataLoader test (CI does; the CPU build is local there).
EXTRAS ?= dev
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: demo test check lint typecheck bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

## demo: install and mirror the embedded emulator's demo dataset into ./demo-mirror
demo: $(STAMP)
	$(BIN)/assetsync demo --dest ./demo-mirror

## test: install with the dev extra and run the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy engine

## check: ruff, mypy and the tests
check: lint typecheck test

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

## bench: the full benchmark suite (installs nginx and the peer tools if missing)
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks run

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks run --quick

clean:
	rm -rf $(VENV) demo-mirror .mypy_cache .ruff_cache .hypothesis build *.egg-info
