"""A token bucket: the downloader's per-peer read limit and the chain source's request rate."""

from __future__ import annotations


class TokenBucket:
    """``rate`` messages per second with bursts of ``burst``: :meth:`take` says how long to wait.

    A downloader's reader sleeps that long before reading on, so a flooding peer is slowed to
    ``rate`` (and its TCP window closes) instead of eating the CPU; a funding verifier sleeps before
    asking its chain source. ``rate <= 0`` disables the limit.
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
