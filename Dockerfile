# lnsync's images, one Dockerfile (see helm/lnsync for how they are run):
#   default target        the services: `lnsync serve persistence|lookup|snapshotter|gateway|downloader`
#                         docker build -t lnsync:0.1.0 .
#   --target controller   the same plus the Kubernetes client ([controller] extra), for
#                         `lnsync serve peer-controller` (the chart's peerController.image)
#                         docker build --target controller -t lnsync-controller:0.1.0 .
# The client would make the services image half as large again (~130 MB), so it is one layer on
# top that only the controller's pod pulls. Left out of both: `lnsync up`'s embedded PostgreSQL and
# live view ([local]) and the observer report's charts ([report]). Without Docker: make image.
# Runs as a numeric non-root user and writes nothing outside /tmp, so it works with a read-only
# root filesystem. No HEALTHCHECK: Kubernetes probes gRPC health (`lnsync healthcheck` on clusters
# without native gRPC probes).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- deps: the pinned runtime dependencies in a virtualenv, from pyproject.toml alone -------------
# A layer rebuilt only when pyproject.toml changes, not with every code change.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# binutils for `strip` (build stages only): the wheels' extension modules carry symbol tables and
# debug information (uvloop's alone is 14 MB of 2 MB code).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/lnsync \
 && /opt/lnsync/bin/pip install "pip==26.3"
WORKDIR /src
COPY pyproject.toml ./
# The build backend and the runtime dependencies, then trimmed of what only builds or tests need:
# symbol tables and debug information of the extension modules (not of the auditwheel-grafted
# *.libs), test suites and test-only modules, type stubs, C headers, static libraries and Cython
# sources, and numpy's build tools (numpy.distutils, numpy.f2py).
RUN /opt/lnsync/bin/python -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); \
print("\n".join(t["build-system"]["requires"] + t["project"]["dependencies"]))' > /tmp/requirements.txt \
 && /opt/lnsync/bin/pip install -r /tmp/requirements.txt \
 && cd /opt/lnsync/lib/python3.11/site-packages \
 && find . -name '*.so' -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
 && find . -depth -type d -name tests -exec rm -rf {} + \
 && find . -type f \( -name '*.pyi' -o -name '*.h' -o -name '*.a' -o -name '*.c' -o -name '*.pxd' \
      -o -name '*.pyx' -o -name '*.pxi' \) -delete \
 && rm -rf numpy/distutils numpy/f2py numpy/random/_examples numpy/_core/_*_tests.cpython-*.so \
 && /opt/lnsync/bin/python -c 'import numpy; numpy.arange(10).sum()'

# --- build: lnsync itself, without touching the dependencies ---------------------------------------
FROM deps AS build
COPY README.md ./
COPY lnsync ./lnsync
COPY services ./services
# pip check: the dependency layer was complete. Every service module must import (the trimming
# above removed nothing they need). pip and setuptools are not needed at run time.
RUN /opt/lnsync/bin/pip install --no-deps --no-build-isolation . \
 && /opt/lnsync/bin/pip check \
 && /opt/lnsync/bin/python -m compileall -q /opt/lnsync/lib \
 && /opt/lnsync/bin/lnsync --version \
 && /opt/lnsync/bin/python -c 'import importlib; from lnsync.commands.serve import SERVICES; \
[importlib.import_module(m) for m in SERVICES.values()]' \
 && /opt/lnsync/bin/python -m pip uninstall -y -q pip setuptools

# --- controller-deps: the [controller] extra and what it needs beyond the runtime dependencies --
# Resolved against the virtualenv and installed apart, to become one layer over the services image.
FROM deps AS controller-deps
RUN /opt/lnsync/bin/python -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); \
print("\n".join(t["project"]["optional-dependencies"]["controller"]))' > /tmp/controller.txt \
 && /opt/lnsync/bin/pip install --dry-run --quiet --report /tmp/report.json -r /tmp/controller.txt \
 && /opt/lnsync/bin/python -c 'import json; r = json.load(open("/tmp/report.json")); \
print("\n".join(i["metadata"]["name"] + "==" + i["metadata"]["version"] for i in r["install"]))' \
    > /tmp/controller-all.txt \
 && /opt/lnsync/bin/pip install --no-deps --no-compile --target /opt/controller -r /tmp/controller-all.txt \
 && rm -rf /opt/controller/bin \
 && find /opt/controller -name '*.so' -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
 && find /opt/controller -depth -type d -name tests -exec rm -rf {} + \
 && find /opt/controller -name '*.pyi' -delete \
 && /opt/lnsync/bin/python -m compileall -q -d /opt/lnsync/lib/python3.11/site-packages /opt/controller \
 && PYTHONPATH=/opt/controller /opt/lnsync/bin/python -c 'import kubernetes.client, kubernetes.watch' \
 && PYTHONPATH=/opt/controller /opt/lnsync/bin/pip check

# --- runtime: the services image ------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="lnsync" \
      org.opencontainers.image.description="Rapid Gossip Sync server for the Lightning Network" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/lnsync /opt/lnsync
# Everything a library might write (caches, runtime files, bytecode) goes to /tmp, an emptyDir
# in the chart; the root filesystem stays read-only.
ENV PATH=/opt/lnsync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    XDG_DATA_HOME=/tmp/.local/share \
    XDG_STATE_HOME=/tmp/.local/state
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 50051 50052 50053 50060 50070
ENTRYPOINT ["lnsync"]
CMD ["--help"]

# --- controller: the services image plus the Kubernetes client (the virtualenv is Python 3.11's) --
FROM runtime AS controller
LABEL org.opencontainers.image.title="lnsync-controller" \
      org.opencontainers.image.description="lnsync's peer controller (Rapid Gossip Sync server)"
COPY --from=controller-deps /opt/controller/ /opt/lnsync/lib/python3.11/site-packages/

# --- the default target: the services image ------------------------------------------------------
FROM runtime
