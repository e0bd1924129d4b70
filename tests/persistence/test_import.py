"""``lnsync import`` end to end: the real CLI process, the real service, the real store, lookup's reader."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from lnsync.gossip.archive import read_archive_bytes
from services.lookup.store import load_delta_input
from tests.conftest import ROOT, free_port
from tests.persistence.conftest import MAINNET, RunningPersistence

pytestmark = pytest.mark.timeout(120)
FIXTURE = ROOT / "data" / "cln2026_top50_resigned_mainnet.bin"
FIXTURE_TIME = 1770076800  # the fixture's timestamps lie in the 14 days before this


async def lnsync_import(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lnsync", "import", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_import_of_the_mainnet_fixture_feeds_lookup(
    persistence: RunningPersistence, database_url: str, short_tmp: Path
) -> None:
    code, out, err = await lnsync_import(
        str(FIXTURE), "--seen", "message", "--persistence", persistence.target
    )
    assert code == 0, err
    assert "read 2,852 messages, invalid 0" in out and "stored 2,852" in out, out
    assert "acknowledged 2,852" in err  # the final progress line

    conn = await asyncpg.connect(database_url)
    try:
        counts = [
            await conn.fetchval(f"SELECT count(*) FROM {t}")
            for t in ("channel_announcements", "channel_updates", "node_announcements")
        ]
        assert counts == [934, 1868, 50]
        # --seen message: every update's seen is its own timestamp; an announcement's is the
        # earliest of its updates' timestamps.
        assert not await conn.fetchval(
            "SELECT count(*) FROM channel_updates WHERE seen <> to_timestamp(timestamp)"
        )
        assert not await conn.fetchval(
            "SELECT count(*) FROM channel_announcements a WHERE a.seen <>"
            " (SELECT to_timestamp(min(u.timestamp)) FROM channel_updates u WHERE u.scid = a.scid)"
        )
        assert await conn.fetchval("SELECT source FROM peers") == "import"
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            graph = await load_delta_input(conn, MAINNET, 0, FIXTURE_TIME)
        assert 900 <= len(graph.channels.scid) <= 934
    finally:
        await conn.close()

    # Tampered copy: a flipped signature byte is caught by the importer and never sent, nor are
    # that channel's two updates (their signer is unknown); the rest are already stored.
    data = bytearray(FIXTURE.read_bytes())
    data[2 + 2 + 10] ^= 1  # inside the first channel_announcement's first signature
    tampered = short_tmp / "tampered.bin"
    tampered.write_bytes(bytes(data))
    code, out, err = await lnsync_import(str(tampered), "--persistence", persistence.target)
    assert code == 0, err
    assert "invalid 3 (bad_signature 1, unknown_channel 2); sent 2,849" in out, out
    assert "stored 0, already stored 2,849" in out, out


async def test_import_fails_clearly(short_tmp: Path) -> None:
    code, _, err = await lnsync_import(str(short_tmp / "missing.bin"))
    assert code == 2 and "no such file" in err

    code, _, err = await lnsync_import(str(FIXTURE), "--seen", "record", "--persistence", "127.0.0.1:9")
    assert code == 1 and "no record times" in err

    unreachable = f"127.0.0.1:{free_port()}"
    code, _, err = await lnsync_import(str(FIXTURE), "--persistence", unreachable, "--stall-timeout", "1")
    assert code == 1 and f"persistence at {unreachable} acknowledged nothing" in err


async def test_import_of_a_core_lightning_gossip_store_keeps_record_times_and_amounts(
    persistence_factory, database_url: str
) -> None:
    running = await persistence_factory(network="regtest")
    store = ROOT / "data" / "cln-gossip-store" / "gossip_store.mesh-3x3"  # a 9-node regtest mesh
    code, out, err = await lnsync_import(
        str(store), "--seen", "record", "--network", "regtest", "--persistence", running.target
    )
    assert code == 0, err
    assert "read 45 messages, invalid 0" in out and "stored 45" in out, out
    records = {r.raw: r for r in read_archive_bytes(store.read_bytes())}
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT raw, funding_sats, extract(epoch FROM seen)::int8 AS seen FROM channel_announcements"
        )
        assert len(rows) == 12
        for r in rows:
            rec = records[bytes(r["raw"])]
            assert r["seen"] == rec.timestamp and r["funding_sats"] == rec.funding_sats is not None
    finally:
        await conn.close()


async def test_import_into_a_live_store_cannot_make_a_channel_look_older(
    persistence: RunningPersistence, database_url: str, short_tmp: Path
) -> None:
    """Once the graph is fully synced (deltas are served), a historical import's times are clamped
    like a live stream's: its channels appear as new to clients, and a channel already learned live
    keeps its first-seen time. Updates dated more than a day after now are not imported."""
    import time

    from lnsync import rpc
    from lnsync.clients.ingest import IngestClient
    from lnsync.gossip import messages as m
    from lnsync.gossip.archive import encode_gsp
    from lnsync.gossip.signing import sign_channel_announcement
    from lnsync.v1 import persistence_pb2, persistence_pb2_grpc
    from tests.gossip_helpers import BTC_A, BTC_B, NODE_A, NODE_B, channel_update

    records = read_archive_bytes(FIXTURE.read_bytes())
    first = next(r.raw for r in records if r.raw[:2] == b"\x01\x00")
    scid = m.decode_channel_announcement(first).short_channel_id
    async with IngestClient(persistence.target, "08" * 33) as client:
        await client.send(first)
        await client.flush(timeout=20)
    async with rpc.channel(persistence.target) as ch:
        stub = persistence_pb2_grpc.PersistenceStub(ch)
        report = persistence_pb2.ReportSyncCompleteRequest(peer_id="08" * 33)
        await stub.ReportSyncComplete(report, timeout=10)
    started = int(time.time())
    code, out, err = await lnsync_import(
        str(FIXTURE), "--seen", "message", "--persistence", persistence.target
    )
    assert code == 0, err
    conn = await asyncpg.connect(database_url)
    try:
        oldest = await conn.fetchval("SELECT min(extract(epoch FROM seen)) FROM channel_announcements")
        live = await conn.fetchval(
            "SELECT extract(epoch FROM seen) FROM channel_announcements WHERE scid = $1", scid
        )
        oldest_update = await conn.fetchval("SELECT min(extract(epoch FROM seen)) FROM channel_updates")
    finally:
        await conn.close()
    lag = persistence.settings.ingest_lag
    assert oldest >= started - lag - 1 and oldest_update >= started - lag - 1, (oldest, started)
    assert live < started  # learned live before the import, never moved back by it

    # A validly signed update dated two days ahead of now, in an archive: counted, never sent.
    ours = (800_000 << 40) | 1
    now = int(time.time())
    archive = [
        sign_channel_announcement(MAINNET, ours, NODE_A, NODE_B, BTC_A, BTC_B),
        channel_update(ours, timestamp=now + 2 * 86400),
        channel_update(ours, direction=1, timestamp=now),
    ]
    path = short_tmp / "future.gsp"
    path.write_bytes(encode_gsp(archive))
    code, out, err = await lnsync_import(str(path), "--persistence", persistence.target)
    assert code == 0, err
    assert "invalid 1 (timestamp_in_future 1); sent 2" in out, out
