# Galaxy — galaxy_protocol.fleet
# `make demo` and `make test` set up everything they need on a fresh Debian 12
# machine (as root): Debian packages, a virtual environment, npm packages.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help deps host-deps lint test test-runtime bench demo clean

help:
	@echo "make demo   - bring up a local lab fleet, deploy Galaxy and run orders on it"
	@echo "make test   - install what is needed and run every test"
	@echo "make bench  - run the benchmarks in bench/"

host-deps: .stamps/host-deps
.stamps/host-deps: scripts/host-deps scripts/apt-packages.txt
	scripts/host-deps
	@mkdir -p .stamps && touch $@

deps: .stamps/venv
.stamps/venv: .stamps/host-deps files/galaxy/pyproject.toml requirements-dev.txt
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e 'files/galaxy[control]' -r requirements-dev.txt
	@mkdir -p .stamps && touch $@

# The gates on the runtime package: ruff (lint and format) and mypy, configured in its pyproject.toml.
lint: deps
	cd files/galaxy && $(VENV)/bin/ruff check src && $(VENV)/bin/ruff format --check src && $(VENV)/bin/mypy

test: deps lint
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-runtime: deps
	$(PY) -m pytest $(PYTEST_ARGS) tests/runtime

bench: deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .stamps $(VENV) build dist

-include mk/*.mk
