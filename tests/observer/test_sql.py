"""The SQL edge computes exactly what the pure reference computes, and folding then pruning the
raw rows leaves every figure unchanged (real PostgreSQL)."""

from __future__ import annotations

import random

import asyncpg
import pytest

from services.observer import job, queries, report, stats
from services.observer.stats import US, Delivery
from services.persistence import retention
from services.persistence.store import to_timestamp

pytestmark = pytest.mark.timeout(60)

INTERVAL = 600
MAX_DELAY = 120
T0 = 1_780_000_200  # an interval boundary


def random_deliveries(seed: int, messages: int = 300, peers: int = 6) -> list[Delivery]:
    """Messages first seen over an hour; each peer delivers some of them after random delays
    (some late, some twice, a few exactly on histogram edges)."""
    rng = random.Random(seed)
    out = []
    for msg in range(messages):
        kind = rng.choice((256, 257, 258, 258, 258))
        first = (T0 + rng.randrange(3600)) * US + rng.randrange(US)
        chosen = rng.sample(range(1, peers + 1), rng.randint(1, peers))
        for i, peer in enumerate(chosen):
            delay = (
                0 if i == 0 else rng.choice((rng.randrange(200 * US), rng.choice(stats.DELAY_EDGES_US[:20])))
            )
            out.append(Delivery(peer, msg * 7919 - 10**6, kind, first + delay))
            if rng.random() < 0.1:
                out.append(Delivery(peer, msg * 7919 - 10**6, kind, first + delay + rng.randrange(5 * US)))
    return out


async def insert(conn: asyncpg.Connection, rows: list[Delivery]) -> None:  # type: ignore[type-arg]
    first = {}
    for d in sorted(rows, key=lambda d: d.received_us):
        first.setdefault(d.msg, d)
    await conn.copy_records_to_table(
        "observations",
        records=[(d.peer, d.msg, d.kind, to_timestamp(d.received_us), first[d.msg] is d) for d in rows],
        columns=("peer_num", "msg_hash", "kind", "received", "first"),
    )


async def test_sql_summaries_equal_the_reference(database_url: str) -> None:
    rows = random_deliveries(1)
    conn = await asyncpg.connect(database_url)
    try:
        await insert(conn, rows)
        lo, hi = T0, T0 + 3600
        async with conn.transaction():
            kinds, peers = await queries.summarise_range(conn, lo, hi, interval=INTERVAL, max_delay=MAX_DELAY)
        ref_kinds, ref_peers = stats.summarise(
            rows, interval=INTERVAL, max_delay_us=MAX_DELAY * US, lo_us=lo * US, hi_us=hi * US
        )
        assert kinds == ref_kinds
        assert peers == ref_peers
        assert sum(s.messages for s in kinds.values()) == 300
    finally:
        await conn.close()


async def test_folding_and_pruning_keep_the_report_equal(database_url: str) -> None:
    """Report, fold every closed interval, prune the raw rows with the real retention pass: the
    report's figures are unchanged (only where they came from differs)."""
    rows = random_deliveries(2, messages=200)
    end = T0 + 3600 + INTERVAL + MAX_DELAY + 60  # every interval holding a delivery is closed
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await insert(conn, rows)
            before = await report.gather(
                conn, now=end, since=2 * 3600, interval=INTERVAL, max_delay=MAX_DELAY
            )
        folds = 0
        while await job.fold(pool, now=end, interval=INTERVAL, max_delay=MAX_DELAY, ingest_lag=60,
                             summary_retention=0):  # fmt: skip
            folds += 1
        assert folds == 1  # seven intervals, at most MAX_INTERVALS per pass
        pruned = await retention.prune(
            pool,
            now=end + 7200,
            superseded_retention=86400,
            pending_update_ttl=86400,
            observation_retention=60,
        )
        assert pruned.observations == len(rows)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM observation_summaries") > 0
            after = await report.gather(conn, now=end, since=2 * 3600, interval=INTERVAL, max_delay=MAX_DELAY)
    finally:
        await pool.close()
    assert after["window"].pop("summarised_until") == T0 + 3600 + INTERVAL  # folded up to here
    assert before["window"].pop("summarised_until") == before["window"]["start"]
    # The reconciliation estimate needs the raw rows: it covers only what retention still keeps.
    assert before.pop("reconciliation")["links"] and after.pop("reconciliation")["window"]["seconds"] == 0
    assert after == before
    assert before["total"]["messages"] == 200 and before["total"]["deliveries"] == len(rows)
