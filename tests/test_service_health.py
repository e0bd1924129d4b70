"""A stopping service stays NOT_SERVING: its database watch, still running while the server drains,
once set health back to SERVING after the stop had cleared it (seen in a lookup's log). A real gRPC
server with the health service, asked over a socket."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc

from lnsync import rpc
from lnsync.service import ReadySignal
from tests.conftest import free_port


async def test_a_stopping_service_never_says_serving_again() -> None:
    server = rpc.make_server()
    health = rpc.add_health_and_reflection(server, ["lnsync.v1.Lookup"])
    port = rpc.add_port(server, f"127.0.0.1:{free_port()}")
    await server.start()
    ready = ReadySignal(health, ["lnsync.v1.Lookup"])
    try:
        async with rpc.channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)

            async def status() -> int:
                answer = await stub.Check(
                    health_pb2.HealthCheckRequest(service="lnsync.v1.Lookup"), timeout=5
                )
                return int(answer.status)

            await ready.set(True)
            assert await status() == rpc.SERVING
            await ready.stop()
            assert await status() == rpc.NOT_SERVING
            await ready.set(True)  # the database watch, a moment later
            assert await status() == rpc.NOT_SERVING
            assert not ready.is_ready
    finally:
        await server.stop(None)
