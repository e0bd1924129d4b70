"""Per-peer limits: how fast we read, and how much junk we tolerate before dropping the peer."""

from __future__ import annotations

from collections import deque

from lnsync.ratelimit import TokenBucket as TokenBucket  # re-exported: the downloader's read limit


class EventWindow:
    """Counts events in a sliding time window; :meth:`add` is true once more than ``limit`` fell
    within ``window`` seconds. Memory is bounded by ``limit``."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque(maxlen=limit + 1)

    def add(self, now: float) -> bool:
        self._times.append(now)
        return len(self._times) > self.limit and now - self._times[0] <= self.window
