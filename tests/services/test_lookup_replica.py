"""Lookup with a read replica (``lookup.database_url``): deltas are read there only when it holds
everything the blob may contain, and a lagging or failing replica falls back to the primary with
the same answer."""

from __future__ import annotations

import pytest

from lnsync.config import Settings
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.model import DeltaParams
from services.lookup import server
from services.lookup.server import DYNAMIC_APPLY_LAG, LookupService, replica_is_current
from tests.conftest import free_port
from tests.rgs.histories import DAY, START
from tests.stack import load_history


def reads(database: str) -> float:
    return server.READS.labels(database)._value.get()


def test_a_replica_is_current_once_it_replayed_past_r_plus_the_ingest_lag():
    R, lag = 1_700_000_000, 60
    assert replica_is_current(False, None, R, lag)  # not in recovery: a primary sees everything
    assert not replica_is_current(True, None, R, lag)  # nothing replayed yet
    assert not replica_is_current(True, R + lag, R, lag)  # a commit at R + lag may still be missing
    assert replica_is_current(True, R + lag + server.REPLICA_MARGIN, R, lag)


@pytest.mark.slow
async def test_lookup_reads_the_replica_only_when_it_is_current(database_url: str, monkeypatch) -> None:
    history = await load_history(database_url, seed=5, days=6)
    R, T = START + 5 * DAY, START + 3 * DAY
    expected = encode(compute_delta(history.delta_input(T, R), DeltaParams(apply_lag=DYNAMIC_APPLY_LAG)), 2)

    async def delta(replica_url: str) -> bytes:
        """T's delta from a new lookup (empty caches) reading ``replica_url`` besides the primary."""
        service = LookupService(Settings(database_url=database_url, lookup={"database_url": replica_url}))
        await service.connect()
        try:
            return encode(await service._delta_set(T, R, DYNAMIC_APPLY_LAG, 1), 2)
        finally:
            await service.close()

    # The same server as the "replica" (not in recovery: current): graph and delta come from it.
    before = reads("replica"), reads("primary")
    assert await delta(database_url) == expected
    assert (reads("replica"), reads("primary")) == (before[0] + 2, before[1])
    # A standby that has not replayed up to R + ingest_lag: the primary answers, the same bytes.
    with monkeypatch.context() as patch:
        patch.setattr(server, "REPLAY_SQL", f"SELECT true AS standby, {R}::float8 AS replayed")
        before = reads("replica"), reads("primary")
        assert await delta(database_url) == expected
        assert (reads("replica"), reads("primary")) == (before[0], before[1] + 2)
    # A replica that cannot be reached: the primary answers; the replica is tried once, then left
    # alone for a while (the graph's read failed, the delta's read went straight to the primary).
    failures = []
    monkeypatch.setattr(server.log, "warning", lambda *args: failures.append(args))
    before = reads("replica"), reads("primary")
    assert await delta(f"postgresql://lnsync@127.0.0.1:{free_port()}/lnsync") == expected
    assert (reads("replica"), reads("primary")) == (before[0], before[1] + 2)
    assert len(failures) == 1
