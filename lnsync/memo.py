"""A small LRU of computed values whose concurrent computations of one key are shared.

Lookup uses it for the graph at a reference time R (what every delta for R starts from) and for
delta sets (the snapshotter asks for v1 and v2 of each scope back to back); the gateway for the
answers of dynamic deltas. The values are large (megabytes at mainnet scale), so the LRUs are
short, bounded by a count or by bytes (``weight``); sharing in-flight work is what saves the
database from N identical queries when N clients ask at once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _one(_: Any) -> int:
    return 1


class Memo(Generic[K, V]):
    """Values by key, at most ``capacity`` in total ``weight`` (default: one per value).

    ``admit(key, value)`` may refuse to remember a computed value (it is still returned to its
    callers); a value heavier than the whole capacity is never remembered.
    """

    def __init__(
        self,
        capacity: int,
        *,
        weight: Callable[[V], int] = _one,
        admit: Callable[[K, V], bool] | None = None,
    ) -> None:
        self.capacity = capacity
        self._weight = weight
        self._admit = admit
        self._done: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._pending: dict[K, asyncio.Future[V]] = {}
        self.weight = 0  # of the remembered values

    def __len__(self) -> int:
        return len(self._done)

    def __contains__(self, key: object) -> bool:
        return key in self._done

    def __iter__(self) -> Iterator[K]:
        """The remembered keys, oldest first (a copy: forgetting while iterating is fine)."""
        return iter(list(self._done))

    @property
    def computing(self) -> int:
        """Computations in flight."""
        return len(self._pending)

    def is_computing(self, key: K) -> bool:
        return key in self._pending

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        """The value for ``key``: remembered, being computed for another caller, or computed now.

        The computation runs in its own task, so a caller that goes away (a cancelled RPC) does not
        cancel it for the others. A failure reaches every caller waiting on it and is not remembered.
        """
        done = self._done.get(key)
        if done is not None:
            self._done.move_to_end(key)
            return done[0]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._compute(key, compute))
            task.add_done_callback(_retrieve)
            self._pending[key] = task
        return await asyncio.shield(task)

    def forget(self, key: K) -> None:
        done = self._done.pop(key, None)
        if done is not None:
            self.weight -= done[1]

    async def close(self) -> None:
        """Cancel the computations in flight (their callers get CancelledError)."""
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _compute(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await compute()
        finally:
            del self._pending[key]
        weight = self._weight(value)
        if weight <= self.capacity and (self._admit is None or self._admit(key, value)):
            self.forget(key)
            self._done[key] = (value, weight)
            self.weight += weight
            while self.weight > self.capacity:
                self.forget(next(iter(self._done)))
        return value


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a failure seen even when every caller went away before it came."""
    if not task.cancelled():
        task.exception()
