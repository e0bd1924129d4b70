"""PostgreSQL stopped (immediate: as abrupt as a crash) and restarted under ``lnsync up``, once in
the middle of the initial sync (ingest) and once while clients ask lookup for deltas.

``lnsync up`` runs its embedded PostgreSQL here (durable settings), which the test stops and
starts behind its back. While it is down: ingest stalls without acknowledging anything, lookup and
the gateway answer "unavailable, retry", snapshots keep being served from memory; when it is back
every service resumes by itself and every message the peers sent is stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from lnsync.pg import LocalPostgres
from tests.faults.system import Clients, FaultPeer, UpSystem, loss_report
from tests.faults.test_kill9 import current_generation, synced_peers
from tests.persistence.test_faults import pg_ctl
from tests.stack import stored_gossip, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]
OUTAGE = 4.0


async def outage(system: UpSystem, root: Path) -> float:
    """Stop PostgreSQL for OUTAGE seconds; return the seconds from its restart until every service
    reports healthy again (persistence is NOT_SERVING while the database is gone)."""
    await pg_ctl(root, "stop")
    await asyncio.sleep(OUTAGE)
    await pg_ctl(root, "start")
    back = time.monotonic()
    await system.wait_all_healthy(60)
    return time.monotonic() - back


async def test_postgres_restarts_during_ingest_and_lookups(short_tmp: Path) -> None:
    peers = [FaultPeer("pg-a", channels=300, pace=4), FaultPeer("pg-b", channels=150, pace=4)]
    for p in peers:
        await p.__aenter__()
    system = UpSystem(short_tmp, peers)
    root = short_tmp / "data" / "pg"
    url = LocalPostgres(root).url()
    clients = Clients(system)
    try:
        system.start()
        await system.wait_all_healthy()
        clients.start()
        await until(lambda: _stored_some(url, 300), 60, "the dump to be under way")
        mid_ingest = peers[0].node_id not in await synced_peers(system)
        ingest_recovery = await outage(system, root)

        ids = {p.node_id for p in peers}
        await until(lambda: _synced(system, ids), 90, "every peer's initial sync")
        await until(lambda: current_generation(url), 60, "the first generation")
        live = asyncio.create_task(_live(peers[0]))
        await asyncio.sleep(2)  # deltas flowing
        lookup_recovery = await outage(system, root)
        await asyncio.sleep(2)
        live.cancel()
        await asyncio.gather(live, return_exceptions=True)
        await clients.stop()

        sent = set().union(*(p.sent() for p in peers))

        async def all_stored() -> bool:
            return sent <= set(await stored_gossip(url))

        await until(all_stored, 60, "every message the peers sent to be stored")
        losses = loss_report(peers, await stored_gossip(url))
        report = {
            "scenario": "PostgreSQL stopped 4 s during ingest, then during lookups (lnsync up)",
            "losses": losses,
            "outage_landed_mid_ingest": mid_ingest,
            "recovery_seconds_after_restart": {
                "ingest": round(ingest_recovery, 2),
                "lookup": round(lookup_recovery, 2),
            },
            "answers": clients.summary(),
            "non_retryable_failures": len(clients.failures()),
            "generation_lost": len(clients.lost_generation()),
        }
        print("\nFAULT-REPORT " + json.dumps(report))
        assert losses["lost"] == losses["duplicated"] == losses["unexpected"] == 0, losses
        assert not clients.failures(), clients.failures()[:20]
        assert not clients.lost_generation(), clients.lost_generation()[:20]
        # Lookups did fail during the outage, with the retryable statuses only.
        assert clients.summary()["grpc-lookup"].get("UNAVAILABLE", 0) > 0
        assert system.proc is not None and system.proc.poll() is None
        assert system.first_traceback() is None, system.first_traceback()
    finally:
        if not clients._stop.is_set():
            await clients.stop()
        system.stop()
        for p in peers:
            await p.__aexit__(None, None, None)


async def _stored_some(url: str, n: int) -> bool:
    try:
        return len(await stored_gossip(url)) >= n
    except OSError:
        return False


async def _synced(system: UpSystem, ids: set[str]) -> bool:
    return ids <= await synced_peers(system)


async def _live(peer: FaultPeer) -> None:
    while True:
        await peer.send_live_update()
        await asyncio.sleep(0.2)
