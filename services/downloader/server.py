"""Downloader: one process per Lightning peer; streams verified gossip to persistence."""

from __future__ import annotations

import asyncio

import grpc

from lnsync.config import ConfigError, PeerAddress, Settings
from lnsync.service import ReadySignal, run_service
from lnsync.v1 import downloader_pb2_grpc


class DownloaderService(downloader_pb2_grpc.DownloaderServicer):
    service_names = ("lnsync.v1.Downloader",)

    def __init__(self, settings: Settings) -> None:
        if not settings.downloader.peer:
            raise ConfigError(
                "the downloader needs a peer: --peer PUBKEY@HOST:PORT or LNSYNC_DOWNLOADER__PEER"
            )
        self.settings = settings
        self.peer = PeerAddress.parse(settings.downloader.peer)

    def register(self, server: grpc.aio.Server) -> None:
        downloader_pb2_grpc.add_DownloaderServicer_to_server(self, server)

    async def run(self, ready: ReadySignal) -> None:
        await ready.set(True)
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


async def main(settings: Settings) -> int:
    d = settings.downloader
    return await run_service("downloader", d.listen, DownloaderService(settings), d.metrics_listen)
