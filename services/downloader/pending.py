"""Channel updates whose channel_announcement has not arrived yet.

An update can only be verified with its channel's node ids, which come with the announcement. A
live update often overtakes the dump's announcement, so it waits here, bounded in count and age:
when the announcement arrives the pipeline verifies the held updates; the rest age out or are
pushed out by newer ones, each counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HeldUpdate:
    raw: bytes
    received_at_us: int
    expires: float  # monotonic seconds


class PendingUpdates:
    """Held updates by short channel id, oldest channel first.

    ``max_total`` bounds all entries, ``max_per_channel`` one channel's (a real channel has two
    directions and rarely more than a few updates in flight); past either bound the oldest entry
    goes. ``ttl`` is how long an update may wait for its announcement.
    """

    def __init__(self, max_total: int, ttl: float, max_per_channel: int = 8) -> None:
        self.max_total = max_total
        self.max_per_channel = max_per_channel
        self.ttl = ttl
        self._held: OrderedDict[int, list[HeldUpdate]] = OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, scid: int) -> bool:
        return scid in self._held

    def scids(self) -> list[int]:
        return list(self._held)

    def add(self, scid: int, raw: bytes, received_at_us: int, now: float) -> int:
        """Hold an update; returns how many older entries were dropped to make room."""
        held = self._held.get(scid)
        if held is None:
            held = self._held[scid] = []
        elif any(h.raw == raw for h in held):
            return 0
        held.append(HeldUpdate(raw, received_at_us, now + self.ttl))
        self._count += 1
        dropped = 0
        if len(held) > self.max_per_channel:
            del held[0]
            self._count -= 1
            dropped += 1
        while self._count > self.max_total:
            oldest_scid, oldest = next(iter(self._held.items()))
            del oldest[0]
            self._count -= 1
            dropped += 1
            if not oldest:
                del self._held[oldest_scid]
        return dropped

    def take(self, scid: int) -> list[HeldUpdate]:
        """Remove and return the updates held for ``scid`` (its announcement has arrived)."""
        held = self._held.pop(scid, [])
        self._count -= len(held)
        return held

    def restore(self, scid: int, held: list[HeldUpdate]) -> None:
        """Put back updates taken by :meth:`take` that could not be handled after all."""
        if held:
            self._held.setdefault(scid, []).extend(held)
            self._count += len(held)

    def expire(self, now: float) -> int:
        """Drop updates older than ``ttl``; returns how many."""
        dropped = 0
        for scid in list(self._held):
            held = self._held[scid]
            keep = [h for h in held if h.expires > now]
            dropped += len(held) - len(keep)
            if keep:
                self._held[scid] = keep
            else:
                del self._held[scid]
        self._count -= dropped
        return dropped
