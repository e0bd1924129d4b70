"""Prometheus metrics of lookup (lnsync_lookup_*; docs/monitoring.md lists them)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

COMPUTE_SECONDS = Histogram(
    "lnsync_lookup_compute_seconds",
    "Time to compute a delta set",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
REQUESTS = Counter("lnsync_lookup_requests_total", "ComputeDelta requests", ["version", "outcome"])
PROOFS = Counter(
    "lnsync_lookup_proofs_total",
    "Sampled dynamic deltas proven after they were answered (lookup.proof_sample), by result",
    ["result"],
)
READS = Counter(
    "lnsync_lookup_reads_total", "Delta inputs and graphs read, by database (primary, replica)", ["database"]
)
