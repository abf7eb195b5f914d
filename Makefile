# entra-sync developer commands. Each target installs what it needs itself.
#   make demo   run the main job on the sandbox (local Graph and Auth0 emulators + Azurite)
#   make test   lint, type-check and run the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed

.PHONY: help install demo test lint format clean bench bench-quick

help:
	@echo "make demo    run entra-sync on the sandbox (emulated Entra ID and Auth0, Azurite) and show the result"
	@echo "make test    install what is missing, lint, type-check and run every test"
	@echo "make lint    ruff and mypy only"
	@echo "make bench   run the benchmarks (about 56 minutes) and write BENCHMARKS.md; bench-quick: about 15"
	@echo "make clean   remove the virtualenv, node_modules and caches"

$(STAMP_PY): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "entra-sync needs Python 3.11 (Azure Functions Python 3.11 runtime); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .  # the entra-sync command
	@touch $@

$(STAMP_NODE): package.json package-lock.json
	@command -v node >/dev/null || { echo "Node.js 20+ is needed for Azurite (the Azure Storage emulator)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install: $(STAMP_PY) $(STAMP_NODE)

demo: install
	$(PY) -m sandbox demo

lint: $(STAMP_PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(ARGS)

bench-quick: install
	$(PY) -m bench --quick $(ARGS)

format: $(STAMP_PY)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
