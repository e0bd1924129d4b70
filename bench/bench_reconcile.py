"""The observer's set-reconciliation estimate over a day of deliveries at the demo's scale.

Synthetic deliveries shaped like the demo dataset (scripts/observer_demo.py): ``--messages`` unique
messages (90 % channel_updates) first seen evenly over 24 h, delivered by each of the demo's eight
simulated peers with its own coverage and log-normal delay (median 0.3 s to 60 s), with real
message sizes; COPYed into ``observations`` of a durable PostgreSQL (lnsync's LocalPostgres) and
ANALYZEd.

Timed: ``queries.reconciliation`` over the whole day for the four default intervals (what
``lnsync observe report --since 24h`` adds), then pricing it (``recon.figures``). Reference: SELECT of
the same rows into Python plus ``recon.tally`` (the pure definition); results checked equal.

    python -m bench.bench_reconcile [--messages 1750] [--repeats 3] [--no-reference]
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
from scripts.observer_demo import PEERS, peer_delays
from services.observer import queries, recon
from services.observer.recon import US, SizedDelivery
from services.persistence.store import to_timestamp

DAY = 86400
T0 = 1_780_000_000 // DAY * DAY
SIZES = {256: (432, 440), 257: (142, 260), 258: (138, 138)}  # (smallest, largest) bytes by kind


def deliveries(messages: int, seed: int = 1) -> list[SizedDelivery]:
    """The demo's peers delivering ``messages`` messages over a day (see the module docstring)."""
    rng = random.Random(seed)
    out = []
    for msg in range(messages):
        first = T0 * US + rng.randrange(DAY * US)
        kind = 258 if rng.random() < 0.9 else rng.choice((256, 257))
        size = rng.randint(*SIZES[kind])
        for peer, delay in peer_delays(rng).items():
            out.append(SizedDelivery(peer, msg * 2654435761 % (1 << 62), kind, first + int(delay * US), size))
    return out


async def run(url: str, messages: int, repeats: int, reference: bool) -> None:
    rows = deliveries(messages)
    intervals = recon.DEFAULT_INTERVALS
    conn = await asyncpg.connect(url)
    await schema.migrate(conn)
    await conn.copy_records_to_table(
        "observations",
        records=[(d.peer, d.msg, d.kind, to_timestamp(d.received_us), False, d.size) for d in rows],
        columns=("peer_num", "msg_hash", "kind", "received", "first", "size"),
    )
    await conn.execute("ANALYZE observations")
    print(
        f"{len(rows):,} deliveries of {messages:,} messages by {len(PEERS)} peers over 24 h,"
        f" intervals {intervals}"
    )
    sql_times, ref_times = [], []
    table: dict[str, list[dict[str, float | int | None]]] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        async with conn.transaction():
            links, floods = await queries.reconciliation(conn, T0, T0 + DAY + 3600, intervals)
        table = recon.figures(links, floods, intervals, recon.SketchModel())
        sql_times.append(time.perf_counter() - started)
        if reference:
            started = time.perf_counter()
            fetched = await conn.fetch(
                "SELECT peer_num, msg_hash, kind, (extract(epoch FROM received) * 1000000)::int8, size"
                " FROM observations"
            )
            ref = recon.tally((SizedDelivery(*r) for r in fetched), intervals)
            ref_times.append(time.perf_counter() - started)
            assert (links, floods) == ref, "SQL and Python tallies differ"
    await conn.close()
    sql = statistics.median(sql_times)
    line = (
        f"median of {repeats}: SQL reconciliation + pricing {sql:.2f} s ({len(rows) / sql:,.0f} deliveries/s)"
    )
    if ref_times:
        ref_s = statistics.median(ref_times)
        line += f", Python reference (fetch + tally) {ref_s:.2f} s, ratio {ref_s / sql:.1f}x"
    print(line)
    for r in table["intervals"]:
        print(
            f"  {r['interval']:>4} s: flooding {r['flood_bytes']:,} B, reconciliation {r['recon_bytes']:,} B"
            f" (saving {r['saving'] or 0:.0%}), mean delay per hop {r['delay_mean'] or 0:.1f} s"
        )
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1750)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-reference", dest="reference", action="store_false")
    args = parser.parse_args()
    with throwaway_database("lnsync-bench-reconcile-") as url:
        asyncio.run(run(url, args.messages, args.repeats, args.reference))


if __name__ == "__main__":
    main()
