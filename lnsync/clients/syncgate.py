"""Whether the graph is fully synced, as persistence reports it (``Persistence.GetSyncGate``).

Lookup and the snapshotter serve nothing before the first full graph sync: a client that synced
against a half-downloaded graph would miss channels until they change. The answer is cached for a
few seconds; once fully synced it stays so (persistence never un-syncs). The call's answer is
small whatever number of peers persistence knows (``GetSyncStatus`` lists them all, and once failed
with RESOURCE_EXHAUSTED under made-up peers, closing the gate).

The channel connects when the gate is made, not at the first request. A call that finds persistence
unreachable waits up to ``ready_wait`` seconds for the channel to connect and is made once more
(:meth:`lnsync.rpc.Remote.call`, which dials again when name resolution has backed off): a pod whose
first connection fails (its network or DNS not working yet: a new lookup pod in a Kubernetes
scale-out once refused deltas for a second), or a lookup that asks right after persistence came
back from a restart (gRPC's resolver may not look at the name again for tens of seconds), gets its
answer instead of a refusal. Concurrent
callers share one call, so a persistence that is down holds each of them at most that long.

Lookup also relays the full ``GetSyncStatus`` (:meth:`SyncGate.sync_status`, as ``Lookup.GetSyncStatus``)
for the gateway's status page, so that the internet-facing gateway never reaches persistence.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from lnsync import rpc
from lnsync.memo import Memo
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc


class SyncGate:
    def __init__(
        self, target: str, cache_seconds: float = 1.0, *, timeout: float = 5.0, ready_wait: float = 6.0
    ) -> None:
        """``target``: persistence's address; ``timeout``: each call's deadline."""
        self._remote = rpc.Remote(target)
        self._stub = self._remote.stub(persistence_pb2_grpc.PersistenceStub)
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._ready_wait = ready_wait
        self._status: persistence_pb2.SyncGate | None = None
        self._fetched_at = 0.0
        self._sync_status: tuple[float, persistence_pb2.SyncStatus] | None = None
        # Calls in flight, shared by the callers that come meanwhile (capacity 0: nothing kept).
        self._calls: Memo[str, Any] = Memo(0)

    async def status(self) -> persistence_pb2.SyncGate:
        """The current status; raises grpc.aio.AioRpcError if persistence cannot be reached."""
        now = time.monotonic()
        cached = self._status
        if cached is not None and (cached.fully_synced or now - self._fetched_at < self._cache_seconds):
            return cached
        request = persistence_pb2.GetSyncGateRequest()
        status: persistence_pb2.SyncGate = await self._shared(
            "gate", lambda: self._stub.GetSyncGate(request, timeout=self._timeout)
        )
        self._status, self._fetched_at = status, now
        return status

    async def sync_status(self) -> persistence_pb2.SyncStatus:
        """Persistence's ``GetSyncStatus``, cached as :meth:`status` is (so many gateways asking
        cost persistence one call a second); raises grpc.aio.AioRpcError if it cannot be reached."""
        now = time.monotonic()
        if self._sync_status is not None and now - self._sync_status[0] < self._cache_seconds:
            return self._sync_status[1]
        request = persistence_pb2.GetSyncStatusRequest()
        status: persistence_pb2.SyncStatus = await self._shared(
            "sync", lambda: self._stub.GetSyncStatus(request, timeout=self._timeout)
        )
        self._sync_status = (now, status)
        return status

    async def _shared(self, key: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """One call at a time per kind: callers that come while it runs share its outcome."""
        return await self._calls.get(key, lambda: self._remote.call(attempt, self._ready_wait))

    async def why_not_ready(self) -> str | None:
        """None when fully synced, otherwise a sentence saying what is missing."""
        try:
            status = await self.status()
        except grpc.aio.AioRpcError as exc:
            return f"cannot reach persistence to check the sync state ({exc.code().name})"
        if status.fully_synced:
            return None
        waiting = [p[:16] for p in status.syncing]
        listed = ", ".join(waiting) if waiting else "no peer has connected yet"
        return (
            f"the first full graph sync is not complete: {status.peers_complete} of {status.quorum} "
            "required peers "
            f"reported (still syncing: {listed})"
        )

    async def close(self) -> None:
        await self._calls.close()
        await self._remote.close()
