"""Persistence.Ingest over real gRPC into a real PostgreSQL: dedup, seen, rejections, acks, sync."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from lnsync import rpc
from lnsync.chain import chain_hash
from lnsync.clients.ingest import IngestClient
from lnsync.clients.syncgate import SyncGate
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc
from tests.conftest import free_port
from tests.persistence.conftest import (
    RunningPersistence,
    channel_announcement,
    channel_update,
    node_announcement,
)

NOW = int(time.time())
pytestmark = pytest.mark.timeout(60)


def graph_messages(channels: int, updates_per_direction: int) -> list[bytes]:
    out = []
    for c in range(channels):
        scid = (800_000 + c) << 40
        out.append(channel_announcement(scid, c, c + 1))
        for d in (0, 1):
            for k in range(updates_per_direction):
                out.append(channel_update(scid, d, NOW - 10_000 + 100 * k, fee_ppm=c + k))
    out += [node_announcement(i, NOW - 5000 + i) for i in range(channels)]
    return out


async def test_duplicates_from_concurrent_streams_stored_once_with_earliest_seen(
    persistence: RunningPersistence, database_url: str
) -> None:
    messages = graph_messages(channels=40, updates_per_direction=3)  # 40 + 240 + 40 = 320
    peers = [f"{i:02x}" * 33 for i in range(5)]
    rng = random.Random(7)
    now_us = time.time_ns() // 1000
    # Each peer delivers every message, in its own order, having received it up to 30 s ago
    # (inside the ingest lag, so persistence keeps these times).
    received = {(p, i): now_us - rng.randrange(30_000_000) for p in peers for i in range(len(messages))}

    async def deliver(peer: str) -> IngestClient:
        order = list(range(len(messages)))
        rng_peer = random.Random(peer)
        rng_peer.shuffle(order)
        async with IngestClient(persistence.target, peer, max_request_messages=37) as client:
            for i in order:
                await client.send(messages[i], received[(peer, i)])
        return client

    clients = await asyncio.gather(*(deliver(p) for p in peers))
    assert all(c.counters.unacked == 0 and c.counters.rejected == 0 for c in clients)
    assert sum(c.counters.stored for c in clients) == len(messages)
    assert sum(c.counters.duplicates for c in clients) == len(messages) * (len(peers) - 1)

    earliest = {i: min(received[(p, i)] for p in peers) for i in range(len(messages))}
    conn = await asyncpg.connect(database_url)
    try:
        raw_seen = {}
        for table in ("channel_announcements", "channel_updates", "node_announcements"):
            for r in await conn.fetch(
                f"SELECT raw, (extract(epoch FROM seen) * 1e6)::int8 AS us FROM {table}"
            ):
                raw_seen[bytes(r["raw"])] = r["us"]
        assert len(raw_seen) == len(messages)
        for i, raw in enumerate(messages):
            assert raw_seen[raw] == earliest[i]
        # Per-peer counters and one delivery row per (peer, message), one of them the first.
        rows = await conn.fetch(
            "SELECT channel_announcements, channel_updates, node_announcements FROM peers"
        )
        assert sorted(tuple(r) for r in rows) == [(40, 240, 40)] * len(peers)
        assert await conn.fetchval("SELECT count(*) FROM observations") == len(messages) * len(peers)
        assert await conn.fetchval("SELECT count(*) FROM observations WHERE first") == len(messages)
        assert await conn.fetchval("SELECT count(DISTINCT msg_hash) FROM observations") == len(messages)
        # Each delivery records its message's size (the reconciliation estimate's flooding bytes).
        sizes = await conn.fetchval("SELECT sum(size) FROM observations")
        assert sizes == sum(len(raw) for raw in messages) * len(peers)
    finally:
        await conn.close()


async def test_malformed_and_wrong_chain_messages_are_rejected_counted_and_never_stored(
    persistence: RunningPersistence, database_url: str
) -> None:
    scid = 900_000 << 40
    good = [channel_announcement(scid), channel_update(scid, 0, NOW - 100)]
    testnet = chain_hash("testnet")
    bad = {
        "malformed": [good[1][:100], b"\x01", channel_announcement(scid + 1)[:300]],
        "wrong_chain": [
            channel_update(scid, 1, NOW - 50, chain=testnet),
            channel_announcement(scid + 2, chain=testnet),
        ],
    }
    rejected_seqs: list[tuple[int, str]] = []
    async with IngestClient(
        persistence.target, "02" * 33, on_rejection=lambda seq, reason: rejected_seqs.append((seq, reason))
    ) as client:
        expected = {}
        for raw in good[:1]:
            await client.send(raw)
        for reason, raws in bad.items():
            for raw in raws:
                expected[await client.send(raw)] = reason
        await client.send(b"\x00\x10" + b"\0" * 10)  # an init message, not gossip
        expected[client.counters.sent] = "malformed"
        await client.send(good[1])
        huge = await client.send(channel_announcement(scid + 3), funding_sats=10**17)
        expected[huge] = "invalid_funding_sats"
    c = client.counters
    assert c.rejected == 7 and c.stored == 2 and c.unacked == 0
    assert c.rejections == {"malformed": 4, "wrong_chain": 2, "invalid_funding_sats": 1}
    assert sorted(rejected_seqs) == sorted(expected.items())

    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM channel_announcements") == 1
        assert await conn.fetchval("SELECT count(*) FROM channel_updates") == 1
        rows = await conn.fetch(
            "SELECT r.reason, r.count FROM peer_rejections r JOIN peers p ON p.num = r.peer_num"
            " WHERE p.peer_id = $1",
            "02" * 33,
        )
        assert dict((r["reason"], r["count"]) for r in rows) == c.rejections
        assert await conn.fetchval("SELECT rejected FROM peers WHERE peer_id = $1", "02" * 33) == 7
    finally:
        await conn.close()


async def test_seen_is_clamped_for_live_streams_and_kept_for_historical_ones(
    persistence: RunningPersistence, database_url: str
) -> None:
    lag = persistence.settings.ingest_lag
    scid = 910_000 << 40
    hour_ago = (time.time_ns() // 1000) - 3600 * 1_000_000
    future = (time.time_ns() // 1000) + 3600 * 1_000_000
    before = time.time()
    async with IngestClient(persistence.target, "03" * 33) as live:
        await live.send(channel_update(scid, 0, NOW - 10), hour_ago)
        await live.send(channel_update(scid, 1, NOW - 10), future)
    async with IngestClient(persistence.target, "import:test", historical=True, source="import") as hist:
        await hist.send(channel_update(scid + 1, 0, NOW - 10), hour_ago)
        await hist.send(channel_update(scid + 1, 1, NOW - 10), future)
    after = time.time()
    conn = await asyncpg.connect(database_url)
    try:
        seen = {
            (r["scid"], r["direction"]): r["s"]
            for r in await conn.fetch(
                "SELECT scid, direction, extract(epoch FROM seen)::float8 AS s FROM channel_updates"
            )
        }
    finally:
        await conn.close()
    assert before - lag <= seen[(scid, 0)] <= after  # an hour ago, clamped into the lag window
    assert before <= seen[(scid, 1)] <= after  # never in the future
    assert seen[(scid + 1, 0)] == pytest.approx(hour_ago / 1e6)  # historical: kept
    assert before <= seen[(scid + 1, 1)] <= after  # ... but never in the future


async def test_protocol_errors_end_the_stream_with_invalid_argument(persistence: RunningPersistence) -> None:
    async with rpc.channel(persistence.target) as ch:
        stub = persistence_pb2_grpc.PersistenceStub(ch)
        msg = persistence_pb2.GossipMessage

        async def run(*requests: persistence_pb2.IngestRequest) -> grpc.StatusCode:
            call = stub.Ingest(iter(requests))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in call:
                    pass
            return err.value.code()

        header = persistence_pb2.StreamHeader(peer_id="04" * 33)
        raw = channel_update(1 << 40, 0, NOW)
        assert (
            await run(persistence_pb2.IngestRequest(messages=[msg(seq=1, raw=raw)]))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert (
            await run(persistence_pb2.IngestRequest(header=persistence_pb2.StreamHeader(peer_id="")))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        decreasing = persistence_pb2.IngestRequest(
            header=header, messages=[msg(seq=5, raw=raw), msg(seq=5, raw=raw)]
        )
        assert await run(decreasing) == grpc.StatusCode.INVALID_ARGUMENT

        # A well-formed stream that ends is acknowledged up to its last seq, then closed.
        call = stub.Ingest(
            iter(
                [
                    persistence_pb2.IngestRequest(
                        header=header, messages=[msg(seq=3, raw=raw), msg(seq=9, raw=b"")]
                    )
                ]
            )
        )
        acks = [a async for a in call]
        assert (
            acks[-1].acked_seq == 9
            and sum(a.stored for a in acks) == 1
            and sum(a.rejected for a in acks) == 1
        )


async def test_requests_larger_than_a_batch_are_split_and_the_queue_stays_bounded(
    persistence_factory, database_url: str
) -> None:
    running = await persistence_factory(max_batch=16)
    queue = running.service.queue
    peak = 0
    kept, copied = _decided_ahead("kept"), _copied_early("copied")

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, queue.used)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    messages = graph_messages(channels=30, updates_per_direction=4)
    async with IngestClient(running.target, "05" * 33, max_request_messages=500) as client:
        for raw in messages:
            await client.send(raw)
    watcher.cancel()
    assert client.counters.stored == len(messages)
    assert 0 < peak <= queue.capacity == 64
    assert running.service.writer is not None and running.service.writer.batches >= len(messages) // 16
    # The writer decided batches ahead, while the one before was being written, and kept them;
    # their updates went in before the writer lock.
    assert _decided_ahead("kept") > kept
    assert _copied_early("copied") > copied


def _decided_ahead(result: str) -> float:
    return REGISTRY.get_sample_value("lnsync_persistence_decided_ahead_total", {"result": result}) or 0.0


def _copied_early(result: str) -> float:
    return REGISTRY.get_sample_value("lnsync_persistence_copied_early_total", {"result": result}) or 0.0


async def test_sync_quorum_counts_each_peer_once(persistence_factory) -> None:
    running = await persistence_factory(sync_quorum=2)
    async with rpc.channel(running.target) as ch:
        stub = persistence_pb2_grpc.PersistenceStub(ch)
        gate = SyncGate(running.target, cache_seconds=0)
        status = await stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest())
        assert not status.fully_synced and status.quorum == 2 and status.fully_synced_at == 0
        assert "0 of 2" in (await gate.why_not_ready() or "")

        a, b = "0a" * 33, "0b" * 33
        report = persistence_pb2.ReportSyncCompleteRequest
        assert not (await stub.ReportSyncComplete(report(peer_id=a, channel_updates=10))).fully_synced
        assert not (await stub.ReportSyncComplete(report(peer_id=a, channel_updates=99))).fully_synced
        status = await stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest())
        assert [(p.peer_id, p.initial_sync_complete) for p in status.peers] == [(a, True)]
        assert "1 of 2" in (await gate.why_not_ready() or "")

        assert (await stub.ReportSyncComplete(report(peer_id=b))).fully_synced
        status = await stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest())
        assert status.fully_synced and abs(status.fully_synced_at - time.time()) < 60
        assert sorted(p.peer_id for p in status.peers if p.initial_sync_complete) == [a, b]
        assert await gate.why_not_ready() is None
        await gate.close()

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ReportSyncComplete(report(peer_id=""))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    conn = await asyncpg.connect(running.settings.database_url)
    try:  # the first report's counts are kept
        assert await conn.fetchval("SELECT sync_channel_updates FROM peers WHERE peer_id = $1", a) == 10
    finally:
        await conn.close()


async def test_caught_up_to_only_moves_forward_and_never_past_now(persistence) -> None:
    a, b = "0c" * 33, "0d" * 33
    report = persistence_pb2.ReportSyncCompleteRequest
    now = int(time.time())

    async def caught_up() -> dict[str, int]:
        status = await stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest())
        return {p.peer_id: p.caught_up_to for p in status.peers}

    async with rpc.channel(persistence.target) as ch:
        stub = persistence_pb2_grpc.PersistenceStub(ch)
        await stub.ReportSyncComplete(report(peer_id=a))  # a downloader that predates caught_up_to
        assert (await caught_up())[a] == 0
        await stub.ReportSyncComplete(report(peer_id=a, caught_up_to=now - 7200))
        await stub.ReportSyncComplete(report(peer_id=b, caught_up_to=now - 60))
        assert await caught_up() == {a: now - 7200, b: now - 60}  # per peer
        await stub.ReportSyncComplete(report(peer_id=a, caught_up_to=now - 9000))  # late, older
        await stub.ReportSyncComplete(report(peer_id=a, caught_up_to=0))  # not given
        assert (await caught_up())[a] == now - 7200
        await stub.ReportSyncComplete(report(peer_id=b, caught_up_to=now + 10 * 86400))  # the future
        assert now - 60 < (await caught_up())[b] <= int(time.time())


async def test_the_sync_gate_waits_for_persistence_instead_of_failing_at_once(persistence_factory) -> None:
    """A lookup or snapshotter that asks before persistence answers (or before its pod's network
    and DNS work: a new lookup pod in a Kubernetes scale-out once refused deltas for a second) waits
    up to its ready_wait for persistence; out of reach, it says so, no later than that."""
    port = free_port()
    gate = SyncGate(f"127.0.0.1:{port}", cache_seconds=0, timeout=20, ready_wait=20)
    check = asyncio.create_task(gate.why_not_ready())
    also = asyncio.create_task(gate.why_not_ready())  # a second caller shares the first's call
    await asyncio.sleep(3.0)  # past gRPC's own retries and the channel's first reconnect backoff
    assert not check.done()  # nothing listens yet: the check waits rather than failing
    await persistence_factory(port=port)
    started = time.monotonic()
    reason = await check
    assert reason is not None and "0 of 1" in reason  # persistence answered: not synced yet
    assert await also == reason
    assert time.monotonic() - started < 5  # dialled again, not after a grown backoff
    await gate.close()

    for wait in (0.0, 3.0):
        nowhere = SyncGate(f"127.0.0.1:{free_port()}", cache_seconds=0, timeout=20, ready_wait=wait)
        started = time.monotonic()
        reason = await nowhere.why_not_ready()
        assert reason == "cannot reach persistence to check the sync state (UNAVAILABLE)"
        assert wait <= time.monotonic() - started < wait + 3
        await nowhere.close()
