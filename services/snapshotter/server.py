"""Snapshotter: precomputes RGS snapshots for a ladder of scopes and serves them."""

from __future__ import annotations

import asyncio

import grpc

from lnsync import db, schema
from lnsync.commands._common import require_database_url
from lnsync.config import Settings
from lnsync.service import ReadySignal, run_service
from lnsync.v1 import snapshots_pb2_grpc


class SnapshotterService(snapshots_pb2_grpc.SnapshotsServicer):
    service_names = ("lnsync.v1.Snapshots",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = require_database_url(settings)
        self.pool: object | None = None

    def register(self, server: grpc.aio.Server) -> None:
        snapshots_pb2_grpc.add_SnapshotsServicer_to_server(self, server)

    async def run(self, ready: ReadySignal) -> None:
        pool = self.pool = await db.create_pool(self.url)
        async with pool.acquire() as conn:
            await schema.migrate(conn)
        await ready.set(True)
        await asyncio.Event().wait()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()  # type: ignore[attr-defined]


async def main(settings: Settings) -> int:
    p = settings.snapshotter
    return await run_service("snapshotter", p.listen, SnapshotterService(settings), p.metrics_listen)
