"""The gossip observer's SQL over a day of mainnet-like deliveries, against the same figures
computed in Python from the same rows read out of PostgreSQL, in the same run.

Synthetic deliveries (no store messages needed): ``--messages`` unique messages (mostly
channel_updates) first seen evenly over 24 h, each delivered by a random subset of ``--peers``
peers with log-normal delays (median 2 s), so rows = messages x mean redundancy. They are COPYed
into ``observations`` of a durable PostgreSQL (lnsync's LocalPostgres) and ANALYZEd.

Timed: ``queries.summarise_range`` over the whole day in 1-hour intervals (what a 24-hour
``lnsync observe report`` does before any interval is folded, and the worst case for the job), and
one job pass folding 24 closed intervals. Reference: ``SELECT`` of the same rows into Python plus
``stats.summarise`` (the pure implementation); ratio = reference seconds / SQL seconds. The two
results are checked equal.

    python -m bench.bench_observer [--messages 100000] [--peers 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import time

import asyncpg

from bench.pgtmp import throwaway_database
from lnsync import schema
from services.observer import job, queries, stats
from services.persistence.store import to_timestamp

DAY = 86400
T0 = 1_780_000_000 // DAY * DAY
INTERVAL, MAX_DELAY = 3600, 600


def deliveries(messages: int, peers: int, seed: int = 1) -> list[stats.Delivery]:
    rng = random.Random(seed)
    out = []
    for msg in range(messages):
        first = T0 * stats.US + rng.randrange(DAY * stats.US)
        kind = 258 if rng.random() < 0.9 else rng.choice((256, 257))
        delays = sorted(rng.lognormvariate(0.7, 1.2) for _ in range(rng.randint(1, peers)))
        for peer, d in zip(rng.sample(range(1, peers + 1), len(delays)), delays, strict=True):
            out.append(
                stats.Delivery(peer, msg * 2654435761 % (1 << 62), kind, first + int((d - delays[0]) * 1e6))
            )
    return out


async def run(url: str, messages: int, peers: int, repeats: int) -> None:
    rows = deliveries(messages, peers)
    conn = await asyncpg.connect(url)
    await schema.migrate(conn)
    await conn.copy_records_to_table(
        "observations",
        records=[(d.peer, d.msg, d.kind, to_timestamp(d.received_us), False) for d in rows],
        columns=("peer_num", "msg_hash", "kind", "received", "first"),
    )
    await conn.execute("ANALYZE observations")
    print(f"{len(rows):,} deliveries of {messages:,} messages by {peers} peers over 24 h")
    sql_times, ref_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        async with conn.transaction():
            kinds, peer_sums = await queries.summarise_range(
                conn, T0, T0 + DAY, interval=INTERVAL, max_delay=MAX_DELAY
            )
        sql_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        fetched = await conn.fetch(
            "SELECT peer_num, msg_hash, kind, (extract(epoch FROM received) * 1000000)::int8"
            " FROM observations"
        )
        ref = stats.summarise(
            (stats.Delivery(*r) for r in fetched),
            interval=INTERVAL,
            max_delay_us=MAX_DELAY * stats.US,
            lo_us=T0 * stats.US,
            hi_us=(T0 + DAY) * stats.US,
        )
        ref_times.append(time.perf_counter() - started)
        assert (kinds, peer_sums) == ref, "SQL and Python summaries differ"
    await conn.close()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    started = time.perf_counter()
    folded = await job.fold(
        pool,
        now=T0 + DAY + 3600,
        interval=INTERVAL,
        max_delay=MAX_DELAY,
        ingest_lag=60,
        summary_retention=0,
    )
    fold_seconds = time.perf_counter() - started
    await pool.close()
    assert folded is not None
    assert folded.hi - folded.lo == DAY
    sql, ref = statistics.median(sql_times), statistics.median(ref_times)
    print(
        f"median of {repeats}: SQL summarise_range {sql:.2f} s ({len(rows) / sql:,.0f} rows/s), "
        f"Python reference (fetch + summarise) {ref:.2f} s, ratio {ref / sql:.1f}x; "
        f"one job pass folding 24 intervals {fold_seconds:.2f} s"
    )
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with throwaway_database("lnsync-bench-observer-") as url:
        asyncio.run(run(url, args.messages, args.peers, args.repeats))


if __name__ == "__main__":
    main()
