"""Lookup and snapshotter on a mainnet-scale store, end to end through gRPC.

    python -m bench.bench_lookup [--scale 1.0] [--repeats 5] [--keep DIR]

The store is filled with ``lnsync gen``'s history (the real 2026-02-03 mainnet topology: ~54k
channels, ~17k nodes, ~1.5M channel_updates over 14 days) written through persistence's own writer
(``services.persistence.store.write_batch``), in a PostgreSQL of its own (``--keep DIR`` keeps it for
the next run). Then ``lnsync serve persistence``, ``lookup`` and ``snapshotter`` run as their own
processes and are measured as a client sees them:

* ``Lookup.ComputeDelta`` v2 for a full sync and for clients one week, one day and three hours
  behind (p50 of ``--repeats`` calls; each call uses a distinct apply lag, so lookup's cache never
  answers it); targets: full <= 3 s, one day <= 0.3 s, one week <= 1.5 s;
* the reference, measured in the same run: the time PostgreSQL alone needs to return the rows the
  delta depends on (the same SQL, results discarded);
* the lookup process's RSS (target <= 300 MB);
* ``Snapshots.Regenerate``: the whole ladder (every scope, v1 and v2) for the 24 h interval
  (target <= 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import psutil

from lnsync import rpc, schema
from lnsync.gen import DEFAULT_END_TIME, generate_history
from lnsync.gossip.messages import decode_gossip
from lnsync.pg import LocalPostgres
from lnsync.v1 import (
    lookup_pb2,
    lookup_pb2_grpc,
    persistence_pb2,
    persistence_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from services.lookup import store as lookup_store
from services.persistence.store import Incoming, StateCache, write_batch

HOUR, DAY = 3600, 86400
PORTS = {"persistence": 51051, "lookup": 51052, "snapshotter": 51053}


async def build_store(url: str, scale: float) -> int:
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
        if await conn.fetchval("SELECT to_regclass('bench_store_complete') IS NOT NULL"):
            return int(await conn.fetchval("SELECT count(*) FROM channel_updates"))
        if await conn.fetchval("SELECT count(*) FROM channel_updates"):
            raise SystemExit("the kept store is incomplete (an interrupted run): delete it and rerun")
        cache = StateCache()
        batch: list[Incoming] = []
        count = 0
        started = time.perf_counter()
        for msg in generate_history(seed=1, scale=scale, days=14, sign=False):
            batch.append(Incoming(decode_gossip(msg.raw), int(msg.received_at * 1e6), msg.funding_sats))
            if len(batch) == 5000:
                await write_batch(conn, batch, cache)
                cache.committed()
                count += len(batch)
                batch = []
                if count % 200_000 == 0:
                    print(
                        f"  stored {count:,} messages ({time.perf_counter() - started:.0f} s)",
                        file=sys.stderr,
                    )
        if batch:
            await write_batch(conn, batch, cache)
            cache.committed()
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CREATE TABLE bench_store_complete ()")
        return int(await conn.fetchval("SELECT count(*) FROM channel_updates"))
    finally:
        await conn.close()


async def start(name: str, url: str, workdir: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
    env.update(
        LNSYNC_DATABASE_URL=url,
        LNSYNC_LOG_LEVEL="warning",
        LNSYNC_PERSISTENCE__LISTEN=f"127.0.0.1:{PORTS['persistence']}",
        LNSYNC_PERSISTENCE__PRUNE_INTERVAL="0",
        LNSYNC_LOOKUP__LISTEN=f"127.0.0.1:{PORTS['lookup']}",
        LNSYNC_SNAPSHOTTER__LISTEN=f"127.0.0.1:{PORTS['snapshotter']}",
    )
    log = (workdir / f"{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lnsync", "serve", name, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while not await rpc.check_health(f"127.0.0.1:{PORTS[name]}", timeout=1):
        if time.monotonic() > deadline or proc.returncode is not None:
            raise RuntimeError(f"{name} did not start; see {workdir / f'{name}.log'}")
        await asyncio.sleep(0.2)
    return proc


async def bare_sql_seconds(url: str, T: int, R: int) -> float:
    """PostgreSQL alone: the queries lookup runs for (T, R), results fetched and discarded."""
    conn = await asyncpg.connect(url)
    try:
        sql = lookup_store.CHANNELS_SQL.format(
            d0=lookup_store._DIRECTION_SELECT.format(p="d0"), d1=lookup_store._DIRECTION_SELECT.format(p="d1")
        )
        started = time.perf_counter()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await lookup_store._copy(conn, sql, R)
            if T:
                await lookup_store._copy(conn, lookup_store.CHANGES_SQL, T, R)
                await conn.fetch(lookup_store.NODE_CHANGES_SQL, T, R)
            await conn.fetch(lookup_store.FEATURES_SQL)
            await conn.fetch("SELECT node_id, features, addresses, seen, first_seen FROM nodes")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lnsync-bl-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    pg = LocalPostgres(workdir / "pg", ephemeral=True)
    pg.start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        url = pg.ensure_database("bench")
        started = time.perf_counter()
        updates = await build_store(url, args.scale)
        print(f"store: {updates:,} channel_updates ({time.perf_counter() - started:.0f} s to build or reuse)")
        for name in ("persistence", "lookup", "snapshotter"):
            procs.append(await start(name, url, workdir))
        async with rpc.channel(f"127.0.0.1:{PORTS['persistence']}") as ch:
            await persistence_pb2_grpc.PersistenceStub(ch).ReportSyncComplete(
                persistence_pb2.ReportSyncCompleteRequest(peer_id="02" + "ab" * 32), timeout=10
            )
        await asyncio.sleep(1.5)
        R = DEFAULT_END_TIME
        print("| delta | ComputeDelta v2 p50 (s) | bare SQL p50 (s) | ratio | size |")
        print("|---|---:|---:|---:|---:|")
        async with rpc.channel(f"127.0.0.1:{PORTS['lookup']}") as ch:
            lookup = lookup_pb2_grpc.LookupStub(ch)
            lag = 1000
            for label, T in (
                ("full", 0),
                ("1 week", R - 7 * DAY),
                ("1 day", R - DAY),
                ("3 hours", R - 3 * HOUR),
            ):
                times, sql_times, size = [], [], 0
                for _ in range(args.repeats):
                    lag += 1
                    request = lookup_pb2.ComputeDeltaRequest(
                        last_sync_timestamp=T, version=2, reference_time=R, apply_lag=lag
                    )
                    t0 = time.perf_counter()
                    _, data = await rpc.join_chunks(lookup.ComputeDelta(request, timeout=120))
                    times.append(time.perf_counter() - t0)
                    size = len(data)
                    sql_times.append(await bare_sql_seconds(url, T, R))
                p50, sql50 = statistics.median(times), statistics.median(sql_times)
                print(f"| {label} | {p50:.3f} | {sql50:.3f} | {p50 / sql50:.1f}x | {size:,} |")
        rss = psutil.Process(procs[1].pid).memory_info().rss
        print(f"lookup RSS: {rss / 2**20:.0f} MB")
        async with rpc.channel(f"127.0.0.1:{PORTS['snapshotter']}") as ch:
            snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
            t0 = time.perf_counter()
            resp = await snaps.Regenerate(snapshots_pb2.RegenerateRequest(reference_time=R), timeout=600)
            wall = time.perf_counter() - t0
            listing = await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)
        print(
            f"snapshot ladder (24 h interval: {len(listing.snapshots)} blobs): {wall:.1f} s "
            f"(snapshotter reports {resp.seconds:.1f} s)"
        )
        rss_s = psutil.Process(procs[2].pid).memory_info().rss
        print(
            f"snapshotter RSS: {rss_s / 2**20:.0f} MB; lookup RSS after the ladder: "
            f"{psutil.Process(procs[1].pid).memory_info().rss / 2**20:.0f} MB"
        )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load {os.getloadavg()[0]:.1f}"
        )
    finally:
        for p in procs:
            p.terminate()
        await asyncio.gather(*(p.wait() for p in procs), return_exceptions=True)
        pg.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", metavar="DIR", help="keep (and reuse) the database in DIR")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
