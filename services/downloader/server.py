"""Downloader: one process per Lightning peer; streams verified gossip to persistence.

The gRPC side is small: ``Downloader.GetStatus`` and health (SERVING as soon as the service runs:
a peer that is down or a persistence that is restarting is this service working as designed,
not a reason to restart it). Prometheus metrics are on ``downloader.metrics_listen``.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from lnsync.chain import chain_hash
from lnsync.chain.verifier import from_settings as verifier_from_settings
from lnsync.config import ConfigError, PeerAddress, Settings
from lnsync.service import ReadySignal, run_service
from lnsync.v1 import downloader_pb2, downloader_pb2_grpc
from services.downloader.downloader import Downloader
from services.downloader.forward import PersistenceSink
from services.downloader.options import PeerOptions
from services.downloader.sink import GossipSink

FLUSH_GRACE = 3.0


class DownloaderService(downloader_pb2_grpc.DownloaderServicer):
    service_names = ("lnsync.v1.Downloader",)

    def __init__(
        self, settings: Settings, *, sink: GossipSink | None = None, options: PeerOptions | None = None
    ) -> None:
        if not settings.downloader.peer:
            raise ConfigError(
                "the downloader needs a peer: --peer PUBKEY@HOST:PORT or LNSYNC_DOWNLOADER__PEER"
            )
        self.settings = settings
        self.peer = PeerAddress.parse(settings.downloader.peer)
        self.sink = sink or _persistence_sink(settings, self.peer)
        self.downloader = Downloader(
            self.peer,
            chain_hash(settings.network),
            self.sink,
            options or PeerOptions.from_settings(settings.downloader),
            verifier=verifier_from_settings(settings),
        )

    def register(self, server: grpc.aio.Server) -> None:
        downloader_pb2_grpc.add_DownloaderServicer_to_server(self, server)

    async def run(self, ready: ReadySignal) -> None:
        await self.sink.start()
        task = asyncio.create_task(self.downloader.run(), name="downloader")
        await ready.set(True)
        await task

    async def close(self) -> None:
        await self.downloader.close()
        # A short grace for messages already sent to persistence; whatever is still unacknowledged
        # after it is fetched again from the peer by the next run (its dump starts from zero).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sink.flush(), FLUSH_GRACE)
        await self.sink.close()

    async def GetStatus(
        self, request: downloader_pb2.GetDownloaderStatusRequest, context: grpc.aio.ServicerContext
    ) -> downloader_pb2.DownloaderStatus:
        s = self.downloader.stats
        f = s.forwarded
        return downloader_pb2.DownloaderStatus(
            peer_id=s.peer_id,
            address=s.address,
            connected=s.connected,
            state=s.state,
            initial_sync_complete=s.initial_sync_complete,
            channel_announcements=f["channel_announcement"],
            channel_updates=f["channel_update"],
            node_announcements=f["node_announcement"],
            invalid=s.invalid_total,
            unacknowledged=s.unacked(),
            last_message_at=int(s.last_message_at),
            reconnects=s.reconnects,
        )


def _persistence_sink(settings: Settings, peer: PeerAddress) -> GossipSink:
    return PersistenceSink(settings.persistence.target, peer.node_id, window=settings.downloader.max_unacked)


async def main(settings: Settings) -> int:
    d = settings.downloader
    return await run_service("downloader", d.listen, DownloaderService(settings), d.metrics_listen)
