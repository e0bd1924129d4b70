"""A channel to a service whose name stopped resolving finds it again as soon as it resolves.

When every pod of a component restarts, its headless Service has no address and the name does not
resolve; gRPC's resolver then looks again only after a backoff that grows to minutes (1 s, x1.6).
:class:`lnsync.rpc.Remote` dials again instead. A real DNS server (dnslib on a UDP socket) answers
NXDOMAIN for the name during the outage and the address after it; a real gRPC server (health
service) stands behind the name.
"""

from __future__ import annotations

import asyncio
import math
import random
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lnsync import rpc
from tests.conftest import free_port

NAME = "persistence.lnsync.test"


class Dns:
    """A DNS server for one name: NXDOMAIN until ``up`` is set, then 127.0.0.1."""

    def __init__(self) -> None:
        self.up = False
        self.queries = 0
        dns = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                request = DNSRecord.parse(data)
                reply = request.reply()
                dns.queries += 1
                if not dns.up or str(request.q.qname).rstrip(".") != NAME:
                    reply.header.rcode = RCODE.NXDOMAIN
                elif request.q.qtype == QTYPE.A:
                    reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=5))
                sock.sendto(bytes(reply.pack()), self.client_address)

        self.server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def target(self, port: int) -> str:
        return f"dns://127.0.0.1:{self.port}/{NAME}:{port}"


@pytest.fixture
def dns() -> Iterator[Dns]:
    server = Dns()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
async def health_port() -> AsyncIterator[int]:
    server = rpc.make_server()
    port = rpc.add_port(server, f"127.0.0.1:{free_port()}")
    health = rpc.add_health_and_reflection(server, [])
    await rpc.set_serving(health, [], True)
    await server.start()
    yield port
    await server.stop(None)


async def check(stub: health_pb2_grpc.HealthStub, service: str = "") -> health_pb2.HealthCheckResponse:
    answer: health_pb2.HealthCheckResponse = await stub.Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return answer


@pytest.mark.timeout(60)
async def test_a_name_that_resolves_again_is_dialled_at_once(dns: Dns, health_port: int) -> None:
    remote = rpc.Remote(dns.target(health_port))
    stub = remote.stub(health_pb2_grpc.HealthStub)  # made before the channel is replaced
    try:
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await remote.call(lambda: check(stub), wait=0.5)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        # 12 s without a resolution: gRPC's resolver has backed off to ~4-8 s between tries.
        await asyncio.sleep(12)
        dns.up = True
        started = time.monotonic()
        answer = await remote.call(lambda: check(stub), wait=6)
        took = time.monotonic() - started
    finally:
        await remote.close()
    assert answer.status == rpc.SERVING
    assert took < 1.5, f"{took:.1f} s to reach a name that resolves again"
    assert remote.renewals >= 1


@pytest.mark.timeout(30)
async def test_a_service_out_of_reach_fails_after_the_wait_and_is_dialled_boundedly(dns: Dns) -> None:
    remote = rpc.Remote(dns.target(free_port()))
    stub = remote.stub(health_pb2_grpc.HealthStub)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await remote.call(lambda: check(stub), wait=5)
        took = time.monotonic() - started
    finally:
        await remote.close()
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 5 <= took < 8
    assert 1 <= remote.renewals <= 5 / rpc.RENEW_AFTER + 1  # not a new channel per loop


@pytest.mark.timeout(30)
async def test_only_a_lost_connection_is_tried_again(dns: Dns, health_port: int) -> None:
    dns.up = True
    remote = rpc.Remote(dns.target(health_port))
    stub = remote.stub(health_pb2_grpc.HealthStub)
    attempts = 0

    async def unknown_service() -> health_pb2.HealthCheckResponse:
        nonlocal attempts
        attempts += 1
        return await check(stub, "no.such.Service")

    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await remote.call(unknown_service, wait=5)
    finally:
        await remote.close()
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert attempts == 1
    assert remote.renewals == 0


@pytest.mark.timeout(30)
async def test_callers_waiting_together_survive_each_others_renewals(dns: Dns, health_port: int) -> None:
    """Several callers wait in ready() at once (lookup's gate asks persistence two things): when one
    replaces the channel, the others, waiting on the one being closed, go on waiting on the new one
    (they used to fail with grpc's UsageError "Channel is closed", which lookup returned as UNKNOWN)."""
    remote = rpc.Remote(dns.target(health_port))
    stub = remote.stub(health_pb2_grpc.HealthStub)
    try:
        waiting = []
        for _ in range(4):  # staggered: one renews while the others wait on the channel it closes
            waiting.append(asyncio.ensure_future(remote.ready(20)))
            await asyncio.sleep(rpc.RENEW_AFTER / 4)
        await asyncio.sleep(2 * rpc.RENEW_AFTER)
        assert remote.renewals >= 1
        dns.up = True
        assert await asyncio.gather(*waiting) == [True] * 4
        assert (await check(stub)).status == rpc.SERVING
    finally:
        await remote.close()


@pytest.mark.timeout(60)
async def test_a_wait_for_the_channel_stops_when_cancelled(health_port: int) -> None:
    """Cancelling ready() as the channel connects stops it (holders stop their loops this way: the
    Ingest client's close). Python 3.11's asyncio.wait_for returned the result instead when the
    channel connected in the same moment, and the client's close() then waited forever: measured
    with it, about 7 of 10 cancellations that met a connecting channel were lost."""
    cancelled = lost = tries = 0
    delay = 0.002  # about when the channel connects; adapted, as a busy machine connects later
    while cancelled < 100 and tries < 3000:
        tries += 1
        remote = rpc.Remote(f"127.0.0.1:{health_port}")
        try:
            waiting = asyncio.ensure_future(remote.ready(math.inf))
            await asyncio.sleep(random.uniform(0, delay))
            if not waiting.cancel():
                delay *= 0.8  # connected already: nothing to cancel, cancel sooner
                continue
            delay *= 1.05
            cancelled += 1
            await asyncio.wait([waiting], timeout=5)
            lost += not waiting.cancelled()
        finally:
            await remote.close()
    assert cancelled >= 20, f"only {cancelled} of {tries} cancellations met a channel still connecting"
    assert lost == 0, f"{lost} of {cancelled} cancellations lost"
