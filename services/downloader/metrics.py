"""Prometheus metrics of every downloader in the process, read from their :class:`PeerStats` at
scrape time (so counters are never updated twice and tests can read the same numbers)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.downloader.stats import STATES, PeerStats

_P = "lnsync_downloader_"


class DownloaderCollector(Collector):
    def __init__(self) -> None:
        self._peers: weakref.WeakSet[PeerStats] = weakref.WeakSet()

    def track(self, stats: PeerStats) -> None:
        self._peers.add(stats)

    def untrack(self, stats: PeerStats) -> None:
        self._peers.discard(stats)

    def collect(self) -> Iterator[Metric]:
        peers = sorted(self._peers, key=lambda s: s.peer_id)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(_P + name, doc, labels=("peer", *labels))

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(_P + name, doc, labels=("peer", *labels))

        connected = gauge("connected", "1 while a BOLT 8 connection to the peer is up")
        state = gauge("sync_state", "1 for the peer's current state", ("state",))
        synced = gauge("initial_sync_complete", "1 once the initial sync was reported to persistence")
        unacked = gauge("unacked_messages", "messages waiting for persistence's acknowledgement")
        pending = gauge("pending_updates", "channel_updates waiting for their channel_announcement")
        last = gauge("last_message_timestamp_seconds", "unix time of the last message from the peer")
        received = counter("messages_received", "messages received, by type", ("type",))
        forwarded = counter("messages_forwarded", "verified gossip forwarded to persistence", ("type",))
        invalid = counter("invalid_messages", "messages dropped as invalid, by reason", ("reason",))
        rejected = counter("persistence_rejections", "forwarded messages persistence refused", ("reason",))
        duplicates = counter("duplicate_messages", "gossip seen before (not verified or forwarded again)")
        held = counter("pending_update_events", "held / released / expired / overflow", ("event",))
        errors = counter("peer_errors", "error and warning messages from the peer", ("kind",))
        disconnects = counter("disconnects", "connections ended, by reason", ("reason",))
        data = counter("bytes", "bytes of BOLT 8 frames", ("direction",))
        attempts = counter("connection_attempts", "connection attempts")
        throttled = counter("throttled_seconds", "time spent waiting for the per-peer rate limit")
        for s in peers:
            p = s.peer_id
            connected.add_metric([p], float(s.connected))
            for name in STATES:
                state.add_metric([p, name], float(s.state == name))
            synced.add_metric([p], float(s.initial_sync_complete))
            unacked.add_metric([p], float(s.unacked()))
            pending.add_metric([p], float(s.pending_now()))
            last.add_metric([p], s.last_message_at)
            for family, values in (
                (received, s.received),
                (forwarded, s.forwarded),
                (invalid, s.invalid),
                (held, s.pending),
                (errors, s.peer_messages),
                (disconnects, s.disconnects),
                (rejected, s.rejected()),
            ):
                for label, value in sorted(values.items()):
                    family.add_metric([p, label], float(value))
            duplicates.add_metric([p], float(s.duplicates))
            data.add_metric([p, "in"], float(s.bytes_in))
            data.add_metric([p, "out"], float(s.bytes_out))
            attempts.add_metric([p], float(s.attempts))
            throttled.add_metric([p], s.throttled_seconds)
        yield from (connected, state, synced, unacked, pending, last, received, forwarded, invalid)
        yield from (rejected, duplicates, held, errors, disconnects, data, attempts, throttled)


COLLECTOR = DownloaderCollector()
REGISTRY.register(COLLECTOR)
