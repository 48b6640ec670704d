# Tape: two commands on a fresh machine with Python 3.11 and make.
#   make demo   install what is needed and run the demo on bundled sample data
#   make test   install and run every check: ruff, mypy, import-linter, pytest (the
#               suite runs twice: with the compiled modules, then as pure Python)
#   make native compile the engine's and the sim's per-event modules (mypyc; needs a C
#               compiler): see engine/native.py
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8
EXTRAS ?= --extra dev

.PHONY: install native demo test lint typecheck contracts pytest bench lock clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(BIN)/uv
	$(BIN)/uv sync --frozen --inexact $(EXTRAS) --python $(BIN)/python
	@touch $@

install: $(VENV)/.installed

native: install
	$(BIN)/python -m tape.native

demo: install
	$(BIN)/python -m tape.native --optional
	$(BIN)/tape demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

contracts: install
	$(BIN)/lint-imports

pytest: native
	TAPE_NATIVE=require $(BIN)/pytest
	TAPE_NATIVE=0 $(BIN)/pytest

test: lint typecheck contracts pytest

bench: native
	$(BIN)/python bench/journal.py

lock: $(BIN)/uv
	$(BIN)/uv lock

clean:
	rm -rf $(VENV) .native .mypy_cache .ruff_cache .pytest_cache .hypothesis
