"""kill -9 of every service in turn, under ``lnsync up``, while four peers sync and clients read.

Peers: one honest with a long paced dump, one that disconnects mid-dump, one that stalls mid-dump
(silent: no gossip, no pongs) and one that floods (its dump forty times over, as fast as the socket
takes it). Phase 1 kills each service while the initial sync runs; phase 2 kills each service
while a snapshot generation is being computed, with live gossip flowing. ``lnsync up``'s
supervisor must restart every one by itself. Afterwards: every message any peer sent is stored
exactly once, no client got an answer other than a success or a retryable "come back later", the
served generation never went away, and every process came back (recovery times are printed).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from lnsync import rpc
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc
from tests.faults.system import Clients, FaultPeer, UpSystem, loss_report
from tests.stack import stored_gossip, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def synced_peers(system: UpSystem) -> set[str]:
    try:
        async with rpc.channel(system.target("persistence")) as ch:
            stub = persistence_pb2_grpc.PersistenceStub(ch)
            status = await stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest(), timeout=5)
    except grpc.aio.AioRpcError:
        return set()
    return {p.peer_id for p in status.peers if p.initial_sync_complete}


async def regenerate_until_published(system: UpSystem, clients: Clients, reference_time: int) -> int:
    """What an operator's script would do: call Regenerate, retrying the retryable failures."""
    while True:
        try:
            async with rpc.channel(system.target("snapshotter")) as ch:
                stub = snapshots_pb2_grpc.SnapshotsStub(ch)
                resp = await stub.Regenerate(
                    snapshots_pb2.RegenerateRequest(reference_time=reference_time), timeout=120
                )
                clients._record("grpc-regenerate", "OK")
                return int(resp.generation)
        except grpc.aio.AioRpcError as exc:
            clients._record("grpc-regenerate", exc.code().name)
            await asyncio.sleep(0.5)


async def generating(database_url: str, reference_time: int) -> bool:
    """True while a generation for ``reference_time`` has blobs but is not published yet."""
    conn = await asyncpg.connect(database_url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM snapshot_blobs b JOIN snapshot_generations g ON g.id = b.generation_id "
                "WHERE g.reference_time = $1 AND g.published_at IS NULL",
                reference_time,
            )
        )
    finally:
        await conn.close()


async def current_generation(database_url: str) -> int | None:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT generation_id FROM snapshot_current")  # type: ignore[no-any-return]
    finally:
        await conn.close()


async def test_kill_9_of_each_service_during_sync_and_generation(database_url: str, short_tmp: Path) -> None:
    peers = [
        FaultPeer("honest", channels=300, pace=3),
        FaultPeer("disconnect", channels=300, mode="disconnect", pace=20),
        FaultPeer("stall", channels=300, mode="stall", pace=20),
        FaultPeer("flood", channels=200, mode="flood", pace=20),
    ]
    for p in peers:
        await p.__aenter__()
    system = UpSystem(short_tmp, peers, database_url, extra_env={"LNSYNC_DOWNLOADER__STALL_TIMEOUT": "10"})
    clients = Clients(system)
    kills_mid: dict[str, bool] = {}
    started = time.monotonic()
    try:
        system.start()
        await system.wait_all_healthy()
        clients.start()
        # Phase 1: the initial sync. The honest peer's dump takes ~30 s; kill each service in turn.
        honest = f"downloader-{peers[0].node_id[:8]}"
        # The honest peer's downloader first (its dump starts over), then the others while it runs.
        for name in (honest, *GRPC_AND_GATEWAY):
            mid_sync = peers[0].node_id not in await synced_peers(system)
            await system.kill_and_time_recovery(name, "initial sync")
            kills_mid[f"{name} during sync"] = mid_sync
            await asyncio.sleep(0.3)
        all_ids = {p.node_id for p in peers}
        try:
            await until(lambda: _all_synced(system, all_ids), 120, "every peer's initial sync")
        except AssertionError:
            raise AssertionError(
                f"synced: {await synced_peers(system)} of {all_ids}\n{system.log()[-8000:]}"
            ) from None
        sync_done = time.monotonic() - started

        # Phase 2: snapshot generations with live gossip; kill each service in the middle of one.
        live = asyncio.create_task(_live_gossip(peers[0]))
        served = await until(lambda: current_generation(database_url), 60, "the first generation")
        for name in ("snapshotter", "lookup", "persistence", "gateway", honest):
            reference_time = int(time.time()) - 2
            regen = asyncio.create_task(regenerate_until_published(system, clients, reference_time))
            mid = False
            deadline = time.monotonic() + 20
            while not regen.done() and time.monotonic() < deadline:
                if await generating(database_url, reference_time):
                    mid = True
                    break
                await asyncio.sleep(0.02)
            await system.kill_and_time_recovery(name, "snapshot generation")
            kills_mid[f"{name} during generation"] = mid
            generation = await asyncio.wait_for(regen, 120)
            assert generation > served
            served = generation
            await asyncio.sleep(1)
        live.cancel()
        await asyncio.gather(live, return_exceptions=True)
        await asyncio.sleep(1)  # clients keep reading the newest generation
        await clients.stop()

        sent = set().union(*(p.sent() for p in peers))

        async def all_stored() -> bool:
            return sent <= set(await stored_gossip(database_url))

        await until(all_stored, 60, "every message the peers sent to be stored")
        losses = loss_report(peers, await stored_gossip(database_url))
        report = {
            "scenario": "kill -9 each service (lnsync up), 4 peers incl. disconnect/stall/flood",
            "losses": losses,
            "live_updates": len(peers[0].live),
            "kills_landed_mid_phase": kills_mid,
            "recovery_seconds": {f"{r.service} ({r.phase})": round(r.seconds, 2) for r in system.recoveries},
            "answers": clients.summary(),
            "non_retryable_failures": len(clients.failures()),
            "generation_lost": len(clients.lost_generation()),
            "initial_sync_seconds": round(sync_done, 1),
            "max_rss_mb": {k: round(v / 2**20) for k, v in sorted(system.max_rss.items())},
            "peer_connections": {p.name: p.connections for p in peers},
        }
        print("\nFAULT-REPORT " + json.dumps(report))
        t0 = started
        for a in clients.lost_generation()[:40]:
            print(f"lost {a.at - t0:.2f} {a.client} {a.outcome}")
        for r in system.recoveries:
            print(f"kill {r.killed_at - t0:.2f} {r.service} {r.seconds:.2f}")
        assert losses["lost"] == losses["duplicated"] == losses["unexpected"] == 0, losses
        assert not clients.failures(), clients.failures()[:20]
        assert not clients.lost_generation(), clients.lost_generation()[:20]
        assert len(system.recoveries) == 2 * len(GRPC_AND_GATEWAY) + 2
        assert all(r.seconds < 30 for r in system.recoveries), system.recoveries
        # The misbehaving peers were dropped and reconnected; the flooder's junk was not stored.
        assert all(p.connections >= 2 for p in peers[1:]), {p.name: p.connections for p in peers}
        assert system.proc is not None and system.proc.poll() is None
        assert system.first_traceback() is None, system.first_traceback()
    finally:
        await clients.stop() if not clients._stop.is_set() else None
        system.stop()
        for p in peers:
            await p.__aexit__(None, None, None)


GRPC_AND_GATEWAY = ("persistence", "lookup", "snapshotter", "gateway")


async def _all_synced(system: UpSystem, ids: set[str]) -> bool:
    return ids <= await synced_peers(system)


async def _live_gossip(peer: FaultPeer) -> None:
    while True:
        await peer.send_live_update()
        await asyncio.sleep(0.2)
