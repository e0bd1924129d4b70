"""A small LRU of computed values whose concurrent computations of one key are shared.

Lookup uses it twice: for the graph at a reference time R (what every delta for R starts from) and
for delta sets (the snapshotter asks for v1 and v2 of each scope back to back). Both are large
(megabytes to tens of megabytes at mainnet scale), so the LRUs are short; sharing in-flight work
is what saves the database from N identical queries when N clients ask at once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._done: OrderedDict[K, V] = OrderedDict()
        self._pending: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        """The value for ``key``: remembered, being computed for another caller, or computed now.

        The computation runs in its own task, so a caller that goes away (a cancelled RPC) does not
        cancel it for the others. A failure reaches every caller waiting on it and is not remembered.
        """
        if key in self._done:
            self._done.move_to_end(key)
            return self._done[key]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._compute(key, compute))
            task.add_done_callback(_retrieve)
            self._pending[key] = task
        return await asyncio.shield(task)

    async def _compute(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await compute()
        finally:
            del self._pending[key]
        self._done[key] = value
        while len(self._done) > self.size:
            self._done.popitem(last=False)
        return value


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a failure seen even when every caller went away before it came."""
    if not task.cancelled():
        task.exception()
