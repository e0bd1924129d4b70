"""The gateway's gRPC connections: one long-lived channel per upstream service, with stubs.

Channels reconnect by themselves (gRPC; :class:`lnsync.rpc.Remote` dials again when name resolution
has backed off), so a restarted service is picked up again without any action here; health checks
reuse the same channels instead of dialling for every probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lnsync import rpc
from lnsync.config import Settings
from lnsync.v1 import lookup_pb2_grpc, snapshots_pb2_grpc

HEALTH_TIMEOUT = 2.0


@dataclass
class Upstream:
    name: str
    target: str
    remote: rpc.Remote = field(init=False)
    health: health_pb2_grpc.HealthStub = field(init=False)

    def __post_init__(self) -> None:
        self.remote = rpc.Remote(self.target)
        self.health = self.remote.stub(health_pb2_grpc.HealthStub)

    async def serving(self) -> bool:
        """True if the service answers its health check with SERVING."""
        try:
            resp = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == rpc.SERVING)


class Upstreams:
    """Lookup (dynamic deltas, graph counts, the sync state it relays from persistence) and the
    snapshotter: all the gateway reaches (its NetworkPolicy and certificate allow nothing else)."""

    def __init__(self, settings: Settings) -> None:
        self.lookup = Upstream("lookup", settings.lookup.target)
        self.snapshotter = Upstream("snapshotter", settings.snapshotter.target)
        self.lookup_stub = self.lookup.remote.stub(lookup_pb2_grpc.LookupStub)
        self.snapshots_stub = self.snapshotter.remote.stub(snapshots_pb2_grpc.SnapshotsStub)

    @property
    def all(self) -> tuple[Upstream, ...]:
        return (self.lookup, self.snapshotter)

    async def close(self) -> None:
        for up in self.all:
            await up.remote.close()
