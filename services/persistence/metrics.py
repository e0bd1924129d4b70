"""Prometheus metrics of persistence (lnsync_persistence_*; docs/monitoring.md lists them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Whole streams or requests refused (a broken protocol, the database down); single messages
# rejected inside a good stream are REJECTIONS.
REFUSED = Counter(
    "lnsync_persistence_refused_total", "Ingest streams and requests refused", ["rpc", "reason"]
)
# PostgreSQL as persistence sees it: answering, and the writer's batches committing (health).
DATABASE_UP = Gauge("lnsync_persistence_database_up", "1 while PostgreSQL answers and batches commit, else 0")

# The writer (services/persistence/writer.py).
MESSAGES = Counter("lnsync_persistence_messages_total", "Messages handled by the writer", ["outcome"])
REJECTIONS = Counter("lnsync_persistence_rejections_total", "Messages rejected", ["reason"])
BATCH_SIZE = Histogram(
    "lnsync_persistence_batch_messages",
    "Messages per committed batch",
    buckets=(1, 16, 64, 256, 1024, 4096, 16384),
)
BATCH_SECONDS = Histogram("lnsync_persistence_batch_seconds", "Time to write one batch")
# Decisions on a batch's channel_updates made ahead of the writer lock (store.plan_updates): kept,
# or made again under the lock (someone else wrote, the previous batch failed, or time ran out).
AHEAD = Counter(
    "lnsync_persistence_decided_ahead_total", "Batches decided ahead of the writer lock", ["result"]
)
EARLY = Counter(
    "lnsync_persistence_copied_early_total",
    "Batches whose channel_updates were COPYed before the writer lock",
    ["result"],
)
QUEUED = Gauge("lnsync_persistence_queued_messages", "Messages queued or being written")

# Funding rechecks (services/persistence/spent.py).
CLOSED = Counter(
    "lnsync_persistence_channels_closed_total", "Stored channels found no longer funded on chain"
)
