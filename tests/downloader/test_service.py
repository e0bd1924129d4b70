"""The downloader service's own API: Downloader.GetStatus and health over real gRPC, Prometheus
metrics in the text exposition format."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lnsync import rpc
from lnsync.config import load_settings
from lnsync.service import ReadySignal
from lnsync.v1 import downloader_pb2, downloader_pb2_grpc
from services.downloader.server import DownloaderService
from tests.conftest import free_port
from tests.downloader.scripted import PEER_ID, MemorySink, ScriptedPeer, make_graph
from tests.downloader.test_session import FAST


def samples(name: str, peer: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for s in family.samples:
            if s.name == name and s.labels.get("peer") == peer:
                out[tuple(sorted((k, v) for k, v in s.labels.items() if k != "peer"))] = s.value
    return out


async def test_get_status_health_and_metrics():
    graph = make_graph(4)
    sink = MemorySink()
    async with ScriptedPeer(graph) as peer:
        settings = load_settings(network="bitcoin", downloader={"peer": peer.address})
        service = DownloaderService(settings, sink=sink, options=FAST)
        server = rpc.make_server()
        service.register(server)
        health = rpc.add_health_and_reflection(server, service.service_names)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        ready = ReadySignal(health, service.service_names)
        running = asyncio.create_task(service.run(ready))
        try:
            await asyncio.wait_for(service.downloader.sync_reported.wait(), 10)
            assert await rpc.check_health(f"127.0.0.1:{port}", "lnsync.v1.Downloader")
            async with rpc.channel(f"127.0.0.1:{port}") as ch:
                status = await downloader_pb2_grpc.DownloaderStub(ch).GetStatus(
                    downloader_pb2.GetDownloaderStatusRequest(), timeout=5
                )
            assert status.peer_id == PEER_ID.hex() and status.address == peer.address
            assert status.connected and status.state == "synced" and status.initial_sync_complete
            counts = (status.channel_announcements, status.channel_updates, status.node_announcements)
            assert counts == (4, 8, 6)
            assert status.invalid == 0 and status.unacknowledged == 0 and status.reconnects == 0
            assert status.last_message_at > 1_700_000_000

            p = PEER_ID.hex()
            assert samples("lnsync_downloader_connected", p) == {(): 1.0}
            assert samples("lnsync_downloader_sync_state", p)[(("state", "synced"),)] == 1.0
            forwarded = samples("lnsync_downloader_messages_forwarded_total", p)
            assert forwarded == {
                (("type", "channel_announcement"),): 4.0,
                (("type", "channel_update"),): 8.0,
                (("type", "node_announcement"),): 6.0,
            }
            assert samples("lnsync_downloader_bytes_total", p)[(("direction", "in"),)] > 4 * 430
            assert samples("lnsync_downloader_unacked_messages", p) == {(): 0.0}
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await service.close()
            await server.stop(0)
