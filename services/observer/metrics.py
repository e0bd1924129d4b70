"""Prometheus metrics of the gossip observer (``lnsync_observer_*``): its aggregation job (inside
persistence) and its random peer set (docs/monitoring.md lists them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERIES = Counter("lnsync_observer_deliveries_total", "Deliveries folded into summaries", ["kind"])
MESSAGES = Counter("lnsync_observer_messages_total", "Unique messages folded into summaries", ["kind"])
COUNTED = Counter(
    "lnsync_observer_counted_deliveries_total",
    "Deliveries by distinct peers within max_delay (redundancy = this / messages)",
    ["kind"],
)
LAST_REDUNDANCY = Gauge(
    "lnsync_observer_redundancy_mean", "Mean peers per message, last folded interval", ["kind"]
)
LAST_T50 = Gauge(
    "lnsync_observer_t50_seconds",
    "Median over messages of the time to reach 50 % of peers (last interval)",
    ["kind"],
)
LAST_T95 = Gauge(
    "lnsync_observer_t95_seconds",
    "Median over messages of the time to reach 95 % of peers (last interval)",
    ["kind"],
)
PEER_COVERAGE = Gauge(
    "lnsync_observer_peer_coverage_ratio",
    "Share of the last interval's unique messages a peer delivered",
    ["peer"],
)
PEER_MEAN_RANK = Gauge(
    "lnsync_observer_peer_mean_rank", "A peer's mean arrival rank (last interval)", ["peer"]
)
SUMMARISED_UNTIL = Gauge("lnsync_observer_summarised_until_seconds", "End of the last folded interval")
REPLACED = Counter(
    "lnsync_observer_random_peers_replaced_total", "Random-set peers replaced, by outcome", ["outcome"]
)
MEMBERS = Gauge("lnsync_observer_random_peers", "Peers in the random set now")
CANDIDATES = Gauge("lnsync_observer_random_candidates", "Dialable nodes in the stored graph")
EPOCH = Gauge("lnsync_observer_random_epoch", "The current peer-set epoch")
