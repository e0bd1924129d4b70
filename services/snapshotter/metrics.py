"""Prometheus metrics of the snapshotter (lnsync_snapshotter_*; docs/monitoring.md lists them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GENERATION_SECONDS = Histogram(
    "lnsync_snapshotter_generation_seconds",
    "Time to compute and publish a generation",
    buckets=(1, 5, 15, 30, 60, 120),
)
GENERATION_PROGRESS = Gauge(
    "lnsync_snapshotter_generation_scopes_done", "Scopes done in the running generation"
)
GENERATION_SCOPES = Gauge("lnsync_snapshotter_generation_scopes", "Scopes in a generation")
CURRENT_REFERENCE = Gauge(
    "lnsync_snapshotter_reference_time_seconds", "Reference time of the generation being served"
)
# The configured interval, so alerts can tell a late generation without knowing the settings.
INTERVAL = Gauge("lnsync_snapshotter_interval_seconds", "Seconds between generations (snapshotter.interval)")
SERVED = Counter("lnsync_snapshotter_served_total", "GetSnapshot answers", ["version", "kind"])
REJECTED = Counter("lnsync_snapshotter_rejected_total", "Requests refused as invalid", ["method", "reason"])
TAKEOVERS = Counter(
    "lnsync_snapshotter_takeovers_total", "Generations made after the generating replica ended unpublished"
)
# The proof before publishing (lnsync/rgs/proof.py, docs/monitoring.md).
PROOF_SECONDS = Histogram(
    "lnsync_snapshotter_proof_seconds",
    "Time to prove a generation before publishing it",
    buckets=(0.1, 0.5, 1, 2, 5, 15, 60),
)
PROOF_FAILURES = Counter(
    "lnsync_snapshotter_proof_failures_total",
    "Generations not published because they failed their proof, by the check that failed",
    ["check"],
)
PROOF_FAILING = Gauge(
    "lnsync_snapshotter_proof_failing",
    "1 while the newest generation made failed its proof (an older one is served), else 0",
)
