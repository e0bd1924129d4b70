"""Per-peer limits: how fast we read, and how much junk we tolerate before dropping the peer."""

from __future__ import annotations

from collections import deque


class TokenBucket:
    """``rate`` messages per second with bursts of ``burst``: :meth:`take` says how long to wait.

    The reader sleeps that long before reading on, so a flooding peer is slowed to ``rate`` (and
    its TCP window closes) instead of eating the CPU; ``rate <= 0`` disables the limit.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._at = now

    def take(self, now: float, n: float = 1.0) -> float:
        if self.rate <= 0:
            return 0.0
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def allow(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many (never goes into debt): whether they were."""
        if self.take(now, n) == 0.0:
            return True
        self._tokens += n
        return False


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
