"""Hostile gRPC calls into the real services (issue 25): no accepted request may break serving.

Each test runs the production processes on loopback (``lnsync serve``), real PostgreSQL and real
gRPC/HTTP clients, makes the call an attacker made, and checks what wallets see afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest

from lnsync import rpc
from lnsync.clients.ingest import IngestClient
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc
from services.snapshotter import storage
from tests.persistence.conftest import channel_announcement, channel_update, start_persistence
from tests.rgs.histories import DAY, START
from tests.stack import SYNCED_PEER, ServiceProcess, Stack, load_history, regenerate, report_synced, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
INTERVAL = 3 * 3600


async def _http_status(base: str, path: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(base + path, timeout=aiohttp.ClientTimeout(total=10)) as r,
    ):
        return r.status, await r.read()


async def _gateway_generation(stack: Stack) -> int:
    """The generation the gateway reports on its admin listener (0: none, or no answer)."""
    try:
        status, body = await _http_status(f"http://{stack.target('gateway-admin')}", "/api/status")
    except aiohttp.ClientError:
        return 0
    if status != 200:
        return 0
    return int(json.loads(body)["snapshots"].get("generation") or 0)


@contextlib.asynccontextmanager
async def serving(
    database_url: str, workdir: Path, seed: int, **env: str
) -> AsyncIterator[tuple[Stack, ServiceProcess, int, int]]:
    """Persistence, lookup, snapshotter and gateway on a small history, synced, the gateway holding
    a generation: (stack, gateway process, its reference time, its id)."""
    await load_history(database_url, seed=seed, days=3, channels=12)
    stack = Stack(
        database_url,
        workdir,
        extra_env={"LNSYNC_SNAPSHOTTER__INTERVAL": str(INTERVAL), "LNSYNC_INGEST_LAG": "1", **env},
    )
    try:
        await stack.start_healthy("persistence")
        await report_synced(stack)
        await stack.start_healthy("lookup")
        await stack.start_healthy("snapshotter")
        R = START + 2 * DAY
        R -= R % INTERVAL
        first = await regenerate(stack, R)
        gateway = stack.start("gateway")
        await until(lambda: _is(stack, first), 60, f"the gateway to hold generation {first}")
        yield stack, gateway, R, first
    finally:
        stack.close()


async def test_bad_reference_times_are_refused_and_the_gateway_keeps_following(
    database_url: str, short_tmp: Path
) -> None:
    """Finding 1: ``Regenerate(reference_time=1000000)`` was accepted; the gateway's poll task then
    died on ``R - scope < 0`` (no log line), never loaded a later generation, and restarted workers
    failed at start-up. Now such times are refused, and whatever is listed, the poll survives."""
    async with serving(database_url, short_tmp, seed=5) as (stack, gateway, R, _):
        base = f"http://{stack.target('gateway')}"

        answers: Counter[int] = Counter()
        stop = asyncio.Event()

        async def wallet() -> None:
            while not stop.is_set():
                try:
                    answers[(await _http_status(base, "/snapshot/v2/0"))[0]] += 1
                except aiohttp.ClientError:
                    answers[0] += 1
                await asyncio.sleep(0.05)

        client = asyncio.create_task(wallet())
        async with rpc.channel(stack.target("snapshotter")) as ch:
            snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
            refused = []
            for request in (
                snapshots_pb2.RegenerateRequest(reference_time=1_000_000),
                snapshots_pb2.RegenerateRequest(reference_time=1_000_000, replace_newer=True),
                snapshots_pb2.RegenerateRequest(reference_time=R - INTERVAL),
                snapshots_pb2.RegenerateRequest(reference_time=int(time.time()) + 3600),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await snaps.Regenerate(request, timeout=120)
                refused.append((info.value.code(), info.value.details()))
            assert all(code == grpc.StatusCode.INVALID_ARGUMENT for code, _ in refused), refused
            assert "older than the current generation" in refused[2][1]
            # A valid later generation is still picked up by every worker.
            newer = snapshots_pb2.RegenerateRequest(reference_time=R + INTERVAL)
            later = (await snaps.Regenerate(newer, timeout=120)).generation
        await until(lambda: _is(stack, later), 60, f"the gateway to hold generation {later}")
        stop.set()
        await client
        assert set(answers) == {200}, answers
        status, body = await _http_status(base, "/readyz")
        assert status == 200, body
        assert gateway.alive()
        assert "Traceback" not in gateway.log(), gateway.log()[-3000:]


async def _is(stack: Stack, generation: int) -> bool:
    return await _gateway_generation(stack) == generation


async def _forge_generation(
    database_url: str, reference_time: int, copy_of: int, drop_scope: int | None
) -> int:
    """Publish a generation the snapshotter would never make: ``copy_of``'s blobs under another
    reference time, optionally without one scope (a damaged or hostile database row)."""
    conn = await asyncpg.connect(database_url)
    try:
        gen = await storage.create_generation(conn, reference_time, INTERVAL)
        await conn.execute(
            "INSERT INTO snapshot_blobs (generation_id, version, scope, last_sync, timestamp, node_count, "
            "announcement_count, update_count, sha256, blob, gzip) SELECT $1, version, scope, last_sync, "
            "timestamp, node_count, announcement_count, update_count, sha256, blob, gzip FROM snapshot_blobs "
            "WHERE generation_id = $2 AND scope IS DISTINCT FROM $3",
            gen, copy_of, drop_scope,
        )  # fmt: skip
        # The listing tells the "nothing new" blob by its last sync, the reference time.
        await conn.execute(
            "UPDATE snapshot_blobs SET last_sync = $2 WHERE generation_id = $1 AND scope = -1",
            gen,
            reference_time,
        )
        await storage.publish(conn, gen, 0.0, 3)
        return gen
    finally:
        await conn.close()


async def test_gateway_poll_survives_unloadable_generations_and_readyz_says_stale(
    database_url: str, short_tmp: Path
) -> None:
    """Finding 1, the gateway side: whatever generation is listed (one whose reference time is
    below its scopes, one missing blobs), the gateway keeps serving the one it holds, logs one
    line, reports the stale generation in /readyz, and loads the next good one."""
    async with serving(database_url, short_tmp, seed=6) as (stack, gateway, R, first):
        base = f"http://{stack.target('gateway')}"
        # Reference time 1,000,000: R - scope < 0 for the larger scopes (what killed the poll task).
        tiny = await _forge_generation(database_url, 1_000_000, first, None)
        await until(lambda: _is(stack, tiny), 60, f"the gateway to hold generation {tiny}")
        assert (await _http_status(base, "/snapshot/v2/0"))[0] == 200
        # A generation without its full snapshot cannot be loaded: keep serving, say stale.
        broken = await _forge_generation(database_url, R + INTERVAL, first, 0)

        async def stale() -> bool:
            status, body = await _http_status(base, "/readyz")
            return status == 503 and b"stale" in body and f"generation {broken}".encode() in body

        await until(stale, 60, "/readyz to report the stale generation")
        assert (await _http_status(base, "/snapshot/v2/0"))[0] == 200
        assert await _gateway_generation(stack) == tiny
        good = await regenerate(stack, R + 2 * INTERVAL)

        async def ready_again() -> bool:  # every worker (a request may reach either of the two)
            for _ in range(10):
                if (await _http_status(base, "/readyz"))[0] != 200:
                    return False
            return True

        await until(ready_again, 60, "/readyz to answer 200 again")
        assert await _gateway_generation(stack) == good
        assert gateway.alive()
        log = gateway.log()
        assert "Traceback" not in log, log[-3000:]
        # One error line per worker for the broken generation, not one per poll.
        errors = [
            line
            for line in log.splitlines()
            if "ERROR" in line and f"cannot load snapshot generation {broken}" in line
        ]
        assert 1 <= len(errors) <= 2, errors  # one per worker


async def _header_only_stream(target: str, peer_id: str) -> grpc.StatusCode:
    """An Ingest stream that sends its header and ends (what the attacker opened 64,000 of)."""
    async with rpc.channel(target) as ch:
        stub = persistence_pb2_grpc.PersistenceStub(ch)
        header = persistence_pb2.IngestRequest(header=persistence_pb2.StreamHeader(peer_id=peer_id))
        try:
            async for _ in stub.Ingest(iter([header]), timeout=20):
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_made_up_peers_cannot_close_the_sync_gate(database_url: str, short_tmp: Path) -> None:
    """Finding 2: 64,000 made-up peer ids (header-only Ingest streams) made ``GetSyncStatus`` larger
    than a gRPC message; a restarted lookup could then never open its sync gate and every /delta
    answered 503 while /readyz said ready. Now peer ids must be node ids or ``import:<name>``, the
    peers table is bounded (``persistence.max_peers``) with empty rows pruned, and the gate is a
    small call."""
    max_peers = 100
    env = {"LNSYNC_PERSISTENCE__MAX_PEERS": str(max_peers)}
    async with serving(database_url, short_tmp, seed=7, **env) as (stack, _, R, _gen):
        base = f"http://{stack.target('gateway')}"
        persistence = stack.target("persistence")
        # The state 64,000 header-only streams with made-up 128-character ids left behind.
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO peers (peer_id, source, first_seen) SELECT lpad(to_hex(i), 128, 'x'), "
                "'downloader', now() - interval '1 hour' FROM generate_series(1, 64000) i"
            )
        finally:
            await conn.close()
        lookup = next(p for p in stack.processes if p.name == "lookup")
        lookup.kill()
        await stack.start_healthy("lookup")
        answers: list[tuple[int, bytes]] = []

        async def delta_served() -> bool:
            # The gateway's channel may still be reconnecting to the new lookup (503 "unavailable"
            # for a moment); the gate itself must not be what refuses.
            answers.append(await _http_status(base, f"/delta/v2/{R - DAY}"))
            return answers[-1][0] == 200

        with contextlib.suppress(AssertionError):
            await until(delta_served, 30, "a delta after lookup's restart", interval=0.5)
        assert answers[-1][0] == 200, answers[-3:]
        assert not any(b"first full graph sync" in body for _, body in answers), answers[-3:]
        async with rpc.channel(persistence) as ch:
            stub = persistence_pb2_grpc.PersistenceStub(ch)
            listing = await stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest(), timeout=10)
            assert listing.fully_synced and len(listing.peers) <= 1000
            gate = await stub.GetSyncGate(persistence_pb2.GetSyncGateRequest(), timeout=10)
            assert gate.fully_synced and gate.peers_complete == 1
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ReportSyncComplete(
                    persistence_pb2.ReportSyncCompleteRequest(peer_id="made-up"), timeout=10
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for bad in ("made-up", "02" * 32, "AB" * 33, "import:", "x" * 300):
            assert await _header_only_stream(persistence, bad) == grpc.StatusCode.INVALID_ARGUMENT, bad
        # New made-up node ids: the empty rows are pruned to make room, the table stays bounded.
        codes: Counter[grpc.StatusCode] = Counter()
        for i in range(150):
            codes[await _header_only_stream(persistence, f"{i + 1:066x}".replace("0", "f", 1))] += 1
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM peers")
            synced_peer_kept = await conn.fetchval(
                "SELECT sync_completed_at IS NOT NULL FROM peers WHERE peer_id = $1", SYNCED_PEER
            )
        finally:
            await conn.close()
        assert rows <= max_peers and synced_peer_kept, (rows, codes)
        assert set(codes) == {grpc.StatusCode.OK}, codes
        status, body = await _http_status(base, "/readyz")
        assert status == 200, body
        assert (await _http_status(base, f"/delta/v2/{R - DAY}"))[0] == 200


async def test_updates_dated_more_than_a_day_ahead_are_rejected(database_url: str) -> None:
    """Finding 3 (timestamps): a channel_update dated 2**32 - 1 was stored and superseded every
    later update of its direction. Now updates more than a day ahead of their arrival are rejected
    (counted as ``timestamp_in_future``); an update an hour ahead is still stored."""
    running = await start_persistence(database_url)
    await running.wait_serving()
    now = int(time.time())
    scid = 905_000 << 40
    try:
        async with IngestClient(running.target, "05" * 33) as client:
            await client.send(channel_announcement(scid))
            await client.send(channel_update(scid, 0, 2**32 - 1))
            await client.send(channel_update(scid, 1, now + 2 * DAY))
            await client.send(channel_update(scid, 1, now + 3600))
        assert client.counters.rejections == {"timestamp_in_future": 2}
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT direction, timestamp FROM channel_updates WHERE scid = $1", scid)
        finally:
            await conn.close()
        assert [(r["direction"], r["timestamp"]) for r in rows] == [(1, now + 3600)]
    finally:
        await running.stop()


async def test_idle_ingest_streams_are_ended(database_url: str) -> None:
    """Minor finding: an Ingest stream that sent its header and then nothing stayed open for ever
    (a task and buffers each). Now it ends after ``persistence.ingest_idle_timeout``."""
    running = await start_persistence(database_url, ingest_idle_timeout=1.0)
    await running.wait_serving()
    try:
        async with rpc.channel(running.target) as ch:
            stub = persistence_pb2_grpc.PersistenceStub(ch)
            header = persistence_pb2.IngestRequest(header=persistence_pb2.StreamHeader(peer_id="05" * 33))
            stop = asyncio.Event()

            async def requests():  # type: ignore[no-untyped-def]
                yield header
                await stop.wait()  # and nothing more, without closing

            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Ingest(requests(), timeout=20):
                    pass
            stop.set()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "ingest_idle_timeout" in (info.value.details() or "")
        assert time.monotonic() - started < 5
    finally:
        await running.stop()


async def test_garbage_protobuf_is_invalid_argument(database_url: str, short_tmp: Path) -> None:
    """Minor finding: bytes that are no protobuf message, sent to Lookup, got UNKNOWN and a
    traceback in its log. Now every lnsync.v1 method answers INVALID_ARGUMENT and logs nothing."""
    garbage = b"\xff\xff\xff\xff"
    stack = Stack(database_url, short_tmp)
    try:
        await stack.start_healthy("persistence")
        lookup = await stack.start_healthy("lookup")
        codes = {}
        async with rpc.channel(stack.target("lookup")) as ch, rpc.channel(stack.target("persistence")) as p:
            raw = {"request_serializer": bytes, "response_deserializer": bytes}
            delta = ch.unary_stream("/lnsync.v1.Lookup/ComputeDelta", **raw)
            summary = ch.unary_unary("/lnsync.v1.Lookup/GraphSummary", **raw)
            ingest = p.stream_stream("/lnsync.v1.Persistence/Ingest", **raw)
            for name, call in (
                ("ComputeDelta", delta(garbage, timeout=10)),
                ("GraphSummary", summary(garbage, timeout=10)),
                ("Ingest", ingest(iter([garbage]), timeout=10)),
            ):
                try:
                    if hasattr(call, "__aiter__"):
                        async for _ in call:
                            pass
                    else:
                        await call
                    codes[name] = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    codes[name] = exc.code()
        assert set(codes.values()) == {grpc.StatusCode.INVALID_ARGUMENT}, codes
        assert "Traceback" not in lookup.log() and "Exception deserializing" not in lookup.log()
    finally:
        stack.close()


async def test_readyz_says_so_while_lookups_gate_is_closed(database_url: str, short_tmp: Path) -> None:
    """Finding 2, the gateway side: while lookup refused every delta for its sync gate (503), the
    gateway's /readyz still said ready. Now /readyz lists the closed gate."""
    async with serving(database_url, short_tmp, seed=8) as (stack, _, R, _gen):
        base = f"http://{stack.target('gateway')}"
        next(p for p in stack.processes if p.name == "persistence").kill()
        lookup = next(p for p in stack.processes if p.name == "lookup")
        lookup.kill()  # a new lookup has not seen the sync yet and cannot ask persistence
        await stack.start_healthy("lookup")
        status, body = await _http_status(base, f"/delta/v2/{R - DAY}")
        assert status == 503, body

        async def unready() -> bool:
            # The gateway learns of the closed gate from a delta lookup refuses (the first may
            # instead meet the gateway's channel still reconnecting to the new lookup).
            await _http_status(base, f"/delta/v2/{R - DAY}")
            status, body = await _http_status(base, "/readyz")
            return status == 503 and b"sync gate is closed" in body

        # Each refused delta first waits up to 6 s for persistence (SyncGate's ready_wait).
        await until(unready, 60, "/readyz to report lookup's closed gate", interval=0.2)
        # Every worker is unready, not only the one that met the refusal: each probe is a new
        # connection, which the kernel gives to either of the gateway's two workers (a worker that
        # never reached persistence says it has not seen the first sync: unready too).
        for _ in range(8):
            status, body = await _http_status(base, "/readyz")
            assert status == 503 and (b"sync gate is closed" in body or b"first full graph sync" in body), (
                body
            )
        assert (await _http_status(base, "/snapshot/v2/0"))[0] == 200  # snapshots keep coming
