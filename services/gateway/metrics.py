"""Prometheus metrics of the gateway, served on ``/metrics`` of its admin listener.

With several worker processes (``gateway.workers``) each worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` (set by the parent before the workers start) and any worker's
``/metrics`` merges them, so a scrape sees the whole gateway whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp

from lnsync.metrics import set_build_info

REQUESTS = Counter("lnsync_gateway_requests_total", "HTTP requests answered", ["route", "status"])
REQUEST_SECONDS = Histogram(
    "lnsync_gateway_request_seconds",
    "Time from request to response headers",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
)
RESPONSE_BYTES = Counter("lnsync_gateway_response_bytes_total", "Body bytes of 200 answers", ["route"])
SNAPSHOT_GENERATION = Gauge(
    "lnsync_gateway_snapshot_generation", "Snapshot generation held in memory", multiprocess_mode="min"
)
SNAPSHOT_REFERENCE_TIME = Gauge(
    "lnsync_gateway_snapshot_reference_time_seconds",
    "Reference time of the generation held",
    multiprocess_mode="min",
)
SNAPSHOT_CACHE_BYTES = Gauge(
    "lnsync_gateway_snapshot_cache_bytes", "Bytes of snapshots held in memory", multiprocess_mode="livesum"
)
DYNAMIC_INFLIGHT = Gauge(
    "lnsync_gateway_dynamic_inflight", "Dynamic deltas being computed", multiprocess_mode="livesum"
)
DYNAMIC = Counter(
    "lnsync_gateway_dynamic_total",
    "Dynamic delta requests by how they were answered (hit, coalesced, computed, rejected, failed)",
    ["result"],
)
UPSTREAM_ERRORS = Counter(
    "lnsync_gateway_upstream_errors_total", "Failed gRPC calls to upstream services", ["service", "code"]
)
CONNECTIONS = Gauge("lnsync_gateway_connections", "Open client connections", multiprocess_mode="livesum")
REFUSED = Counter("lnsync_gateway_connections_refused_total", "Connections refused over the cap")

# Each worker imports this module once (after the parent set PROMETHEUS_MULTIPROC_DIR).
set_build_info("gateway")


def render() -> tuple[bytes, str]:
    """The exposition text for every worker of this gateway."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
