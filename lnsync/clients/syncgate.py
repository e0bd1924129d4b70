"""Whether the graph is fully synced, as persistence reports it (``Persistence.GetSyncGate``).

Lookup and the snapshotter serve nothing before the first full graph sync: a client that synced
against a half-downloaded graph would miss channels until they change. The answer is cached for a
few seconds; once fully synced it stays so (persistence never un-syncs). The call's answer is
small whatever number of peers persistence knows (``GetSyncStatus`` lists them all, and once failed
with RESOURCE_EXHAUSTED under made-up peers, closing the gate).

The channel connects when the gate is made, not at the first request; until persistence first
answers, and for at most ``startup_wait`` seconds after that, calls wait for the channel
(``wait_for_ready``) rather than failing at once: a pod whose first connection fails (its network
or DNS not working yet: a new lookup pod in a Kubernetes scale-out once refused deltas for a
second) waits for the reconnection instead. Past that they fail at once again, so that a
persistence that is down is reported as such without holding every request.

Lookup also relays the full ``GetSyncStatus`` (:meth:`SyncGate.sync_status`, as ``Lookup.GetSyncStatus``)
for the gateway's status page, so that the internet-facing gateway never reaches persistence.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from lnsync import rpc
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc


class SyncGate:
    def __init__(
        self, target: str, cache_seconds: float = 1.0, *, timeout: float = 5.0, startup_wait: float = 5.0
    ) -> None:
        """``target``: persistence's address."""
        self._channel = rpc.channel(target)
        self._stub = persistence_pb2_grpc.PersistenceStub(self._channel)
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._wait_until = time.monotonic() + startup_wait
        self._answered = False
        self._channel.get_state(try_to_connect=True)
        self._status: persistence_pb2.SyncGate | None = None
        self._fetched_at = 0.0
        self._sync_status: tuple[float, persistence_pb2.SyncStatus] | None = None

    async def status(self) -> persistence_pb2.SyncGate:
        """The current status; raises grpc.aio.AioRpcError if persistence cannot be reached."""
        now = time.monotonic()
        cached = self._status
        if cached is not None and (cached.fully_synced or now - self._fetched_at < self._cache_seconds):
            return cached
        status: persistence_pb2.SyncGate = await self._stub.GetSyncGate(
            persistence_pb2.GetSyncGateRequest(), **self._call_options(now)
        )
        self._status, self._fetched_at, self._answered = status, now, True
        return status

    async def sync_status(self) -> persistence_pb2.SyncStatus:
        """Persistence's ``GetSyncStatus``, cached as :meth:`status` is (so many gateways asking
        cost persistence one call a second); raises grpc.aio.AioRpcError if it cannot be reached."""
        now = time.monotonic()
        if self._sync_status is not None and now - self._sync_status[0] < self._cache_seconds:
            return self._sync_status[1]
        status: persistence_pb2.SyncStatus = await self._stub.GetSyncStatus(
            persistence_pb2.GetSyncStatusRequest(), **self._call_options(now)
        )
        self._sync_status, self._answered = (now, status), True
        return status

    def _call_options(self, now: float) -> dict[str, Any]:
        """Wait for the channel only in the start-up window, and not past its end."""
        if self._answered or now >= self._wait_until:
            return {"timeout": self._timeout}
        return {"timeout": min(self._timeout, self._wait_until - now), "wait_for_ready": True}

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
        await self._channel.close()
