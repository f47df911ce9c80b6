# Two commands on a fresh machine: `make demo` and `make test`.
# Everything is installed into .venv from the project's own files.
PYTHON ?= python3
# Which Pythons `make test` runs: empty = the host's, then 3.13, 3.14, 3.15
# (a Debian sid root, scripts/matrix); or one of host, 3.13, 3.14, 3.15.
PY     ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,profile,yappi,s3]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy

system-deps:
	scripts/install-system-deps

test: lint system-deps
	scripts/matrix $(PY)

clean:
	rm -rf $(VENV) holmes-dumps .pytest_cache .mypy_cache .ruff_cache

bench: $(STAMP)
	scripts/install-bench-deps
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks --json benchmarks/results.json
