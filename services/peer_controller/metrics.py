"""Prometheus metrics of the peer controller (lnsync_peer_controller_*; docs/monitoring.md lists them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ROUNDS = Counter("lnsync_peer_controller_rounds_total", "Reconciliation rounds", ["result"])
ACTIONS = Counter("lnsync_peer_controller_actions_total", "Deployments changed", ["action"])
PEERS = Gauge("lnsync_peer_controller_peers", "Peers listed in the ConfigMap")
