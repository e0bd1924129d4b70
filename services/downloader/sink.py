"""Where verified gossip goes: the one interface between the peer side and persistence."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SyncCounts:
    """Messages forwarded during the initial sync, by kind (what ReportSyncComplete carries)."""

    channel_announcements: int
    channel_updates: int
    node_announcements: int


class GossipSink(Protocol):
    """At-least-once delivery of verified messages, with a bounded window of unacknowledged ones."""

    async def start(self) -> None:
        """Begin delivering (connect in the background; sends queue until it works)."""

    def send(self, raw: bytes, received_at_us: int, funding_sats: int | None = None) -> Awaitable[object]:
        """Queue one message (an announcement with its funding amount, once checked on chain);
        waits while the window of unacknowledged messages is full (the caller stops reading its
        peer meanwhile: back-pressure). An awaitable rather than ``async def``, so that a sink
        can hand out its client's coroutine instead of wrapping it (one call on every message)."""

    @property
    def unacked(self) -> int:
        """Messages sent but not yet acknowledged as durably stored."""

    @property
    def rejections(self) -> Mapping[str, int]:
        """Messages persistence refused, by reason (it re-checks structure and chain)."""

    async def flush(self) -> None:
        """Return once everything sent so far is acknowledged."""

    async def report_sync_complete(self, peer_id: str, counts: SyncCounts, caught_up_to: int) -> None:
        """Tell persistence this peer's initial sync is complete and everything it sent before
        ``caught_up_to`` (Unix time) is stored (after :meth:`flush`). Sent again, later, to move
        ``caught_up_to`` forward."""

    async def resume_point(self, peer_id: str) -> int | None:
        """Unix time from which this peer's gossip is still needed, when the store already holds
        its graph (a completed initial sync, caught up recently); None means sync from scratch.
        Never raises: whatever goes wrong, None is the safe answer."""

    def known_channels(self, max_channels: int) -> AsyncIterator[tuple[int, bytes, bytes]]:
        """(scid, node_id_1, node_id_2) of up to ``max_channels`` stored channels, so that updates
        for channels announced before this process started can be verified. May raise."""

    async def close(self) -> None:
        """Stop delivering; unacknowledged messages are abandoned (the process is ending)."""
