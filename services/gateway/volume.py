"""Time series for the status page's chart, sampled in the gateway.

A *probe* returns cumulative counters (messages received so far, by kind); the sampler calls every
probe once a minute and keeps, per series, the rate over the last minute for the last day. Today
the one probe is persistence's per-peer delivery counts (``GetSyncStatus``, relayed by lookup):
received by kind, and (the gossip observer's series) unique messages vs. duplicate deliveries.
Another data source adds its own probe with :meth:`VolumeSampler.add_probe`; its series show up in
``/api/status`` and on the page without further changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from lnsync.v1 import lookup_pb2_grpc, persistence_pb2

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 60.0
KEEP_POINTS = 24 * 60

# A probe returns cumulative totals by series name.
Probe = Callable[[], Awaitable[dict[str, float]]]


@dataclass
class Series:
    name: str
    label: str
    unit: str
    points: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=KEEP_POINTS))

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "label": self.label, "unit": self.unit, "points": list(self.points)}


class VolumeSampler:
    def __init__(self, every: float = SAMPLE_SECONDS) -> None:
        self.every = every
        self.series: dict[str, Series] = {}
        self._probes: list[Probe] = []
        self._last: dict[str, tuple[float, float]] = {}  # name -> (sample time, total)

    def add_probe(self, probe: Probe, series: list[Series]) -> None:
        """Register a probe and the series (per minute rates of its totals) it feeds."""
        self._probes.append(probe)
        for s in series:
            self.series[s.name] = s

    def record(self, totals: dict[str, float], at: float) -> None:
        """Turn cumulative totals into per-minute rates since the previous sample."""
        for name, total in totals.items():
            series = self.series.get(name)
            previous = self._last.get(name)
            self._last[name] = (at, total)
            if series is None or previous is None:
                continue
            then, before = previous
            if at <= then or total < before:
                continue  # a counter reset (its source restarted): start again from here
            series.points.append((int(at), round((total - before) * 60.0 / (at - then), 2)))

    async def sample_once(self) -> None:
        now = time.time()
        for probe in self._probes:
            try:
                totals = await probe()
            except grpc.aio.AioRpcError as exc:
                log.debug("volume probe failed: %s", exc.code().name)
                continue
            self.record(totals, now)

    async def run(self) -> None:
        """Sample forever (cancel to stop); an unexpected failure is logged and the next sample taken."""
        while True:
            try:
                await self.sample_once()
            except Exception as exc:
                log.warning("volume sample failed: %r", exc)
            await asyncio.sleep(self.every)

    def as_json(self) -> list[dict[str, object]]:
        return [s.as_json() for s in self.series.values()]


def persistence_probe(stub: lookup_pb2_grpc.LookupStub) -> tuple[Probe, list[Series]]:
    """Messages delivered by all peers, by kind, as persistence counts them (asked through lookup)."""

    async def probe() -> dict[str, float]:
        status = await stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest(), timeout=5)
        return {
            "channel_updates": float(sum(p.channel_updates for p in status.peers)),
            "channel_announcements": float(sum(p.channel_announcements for p in status.peers)),
            "node_announcements": float(sum(p.node_announcements for p in status.peers)),
            "unique_messages": float(sum(p.stored for p in status.peers)),
            "duplicate_deliveries": float(sum(p.duplicates for p in status.peers)),
        }

    series = [
        Series("channel_updates", "channel_update received", "messages/min"),
        Series("channel_announcements", "channel_announcement received", "messages/min"),
        Series("node_announcements", "node_announcement received", "messages/min"),
        # The gossip observer's view: messages new to us vs. deliveries of what we already had.
        Series("unique_messages", "unique (new) messages", "messages/min"),
        Series("duplicate_deliveries", "duplicate deliveries", "messages/min"),
    ]
    return probe, series
