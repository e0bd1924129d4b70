# One image for every lnsync service: `lnsync serve <service>` (see helm/lnsync for how it is run).
# Runs as a numeric non-root user and writes nothing outside /tmp, so it works with a read-only
# root filesystem. No HEALTHCHECK: Kubernetes probes gRPC health (`lnsync healthcheck` on clusters
# without native gRPC probes). Build: docker build -t lnsync:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install lnsync and its pinned dependencies into a self-contained virtualenv ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/lnsync \
 && /opt/lnsync/bin/pip install "pip==26.3"
WORKDIR /src
# Dependencies first (a layer that changes only with pyproject.toml), then the code.
COPY pyproject.toml README.md ./
COPY lnsync ./lnsync
COPY services ./services
RUN /opt/lnsync/bin/pip install . \
 && /opt/lnsync/bin/python -m compileall -q /opt/lnsync/lib \
 && /opt/lnsync/bin/lnsync --version

# --- runtime --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
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
