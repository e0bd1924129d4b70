"""Lookup and snapshotter on a mainnet-scale store, end to end through gRPC.

    python -m bench.bench_lookup [--scale 1.0 | --growth 3] [--repeats 5] [--keep DIR] [--json FILE]
                                 [--profile DIR]

The store is filled with ``lnsync gen``'s history (the real 2026-02-03 mainnet topology: ~54k
channels, ~17k nodes, ~1.5M channel_updates over 14 days) sent to ``lnsync serve persistence`` on
one historical ingest stream, in a PostgreSQL of its own (``--keep DIR`` keeps it for the next
run); ``--growth 0.3|1|3`` takes bench_growth's history of that multiple instead (3: three times
today's updates over a graph grown by half), for issue 26's lookup RSS against history. Then
``lnsync serve lookup`` and ``snapshotter`` run as their own processes and are measured as a
client sees them:

* ``Lookup.ComputeDelta`` v2 for a full sync and for clients one week, one day and three hours
  behind (p50 of ``--repeats`` calls; each call uses a distinct apply lag, so lookup's cache never
  answers it); targets: full <= 3 s, one day <= 0.3 s, one week <= 1.5 s;
* the reference, measured in the same run: the time PostgreSQL alone needs to return the rows the
  delta depends on (the same SQL, results discarded);
* ``Snapshots.Regenerate``: the whole ladder (every scope, v1 and v2) for the 24 h interval and its
  proof before publishing (``--no-prove``: without; target <= 30 s), wall time and the CPU time of
  lookup + snapshotter;
* the peak RSS of persistence (while ingesting, when the store is built), lookup, snapshotter and
  ``lnsync serve gateway`` (started last; measured once it holds the generation), sampled every
  0.25 s over all of a service's processes (target <= 300 MB each).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench import bench_growth as growth
from bench import results
from bench.bench_gateway import fetch
from bench.history import history
from bench.results import PeakRss
from lnsync import rpc, schema
from lnsync.clients.ingest import IngestClient
from lnsync.gen import DEFAULT_END_TIME, GeneratedMessage
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
from tests.conftest import free_port

HOUR, DAY = 3600, 86400


async def build_store(url: str, stream: Iterable[GeneratedMessage], persistence: str) -> tuple[int, float]:
    """Fill the store through the running persistence service (a historical ingest stream, as
    ``lnsync import`` would), unless a completed one is kept. Returns (channel_updates, seconds
    spent ingesting, 0 if reused)."""
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('bench_store_complete') IS NOT NULL"):
            return int(await conn.fetchval("SELECT count(*) FROM channel_updates")), 0.0
        if await conn.fetchval("SELECT count(*) FROM channel_updates"):
            raise SystemExit("the kept store is incomplete (an interrupted run): delete it and rerun")
        started = time.perf_counter()
        count = 0
        async with IngestClient(persistence, "import:bench", source="import", historical=True) as client:
            for msg in stream:
                await client.send(msg.raw, round(msg.received_at * 1e6), funding_sats=msg.funding_sats)
                count += 1
                if count % 200_000 == 0:
                    elapsed = time.perf_counter() - started
                    print(f"  sent {count:,} messages ({elapsed:.0f} s)", file=sys.stderr)
            await client.flush()
        seconds = time.perf_counter() - started
        if client.counters.rejected:
            raise RuntimeError(f"persistence rejected messages: {client.counters}")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CREATE TABLE bench_store_complete ()")
        return int(await conn.fetchval("SELECT count(*) FROM channel_updates")), seconds
    finally:
        await conn.close()


def service_env(url: str, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
    env.update(
        LNSYNC_DATABASE_URL=url,
        LNSYNC_LOG_LEVEL="warning",
        LNSYNC_PERSISTENCE__PRUNE_INTERVAL="0",
        LNSYNC_PERSISTENCE__LISTEN=f"127.0.0.1:{ports['persistence']}",
        LNSYNC_LOOKUP__LISTEN=f"127.0.0.1:{ports['lookup']}",
        LNSYNC_SNAPSHOTTER__LISTEN=f"127.0.0.1:{ports['snapshotter']}",
        LNSYNC_GATEWAY__LISTEN=f"127.0.0.1:{ports['gateway']}",
        LNSYNC_GATEWAY__ADMIN_LISTEN=f"127.0.0.1:{ports['gateway-admin']}",
    )
    return env


async def start(
    name: str, env: dict[str, str], ports: dict[str, int], workdir: Path
) -> asyncio.subprocess.Process:
    log = (workdir / f"{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lnsync", "serve", name, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    if name == "gateway":  # HTTP, not gRPC: the caller waits for it to serve
        return proc
    deadline = time.monotonic() + 120
    while not await rpc.check_health(f"127.0.0.1:{ports[name]}", timeout=1):
        if time.monotonic() > deadline or proc.returncode is not None:
            raise RuntimeError(f"{name} did not start; see {workdir / f'{name}.log'}")
        await asyncio.sleep(0.2)
    return proc


def cpu_seconds(*pids: int) -> float:
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lnsync-bl-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    pg = LocalPostgres(workdir / "pg", ephemeral=True)
    pg.start()
    procs: dict[str, asyncio.subprocess.Process] = {}
    rss: dict[str, PeakRss] = {}
    sampler: asyncio.Task[None] | None = None
    figures: dict[str, Any] = {"scale": args.scale, "growth": args.growth, "repeats": args.repeats}

    async def sample() -> None:
        while True:
            for r in rss.values():
                r.sample()
            await asyncio.sleep(0.25)

    try:
        url = pg.ensure_database("bench")
        conn = await asyncpg.connect(url)
        try:
            await schema.migrate(conn)
        finally:
            await conn.close()
        ports = {
            name: free_port() for name in ("persistence", "lookup", "snapshotter", "gateway", "gateway-admin")
        }
        env = service_env(url, ports)
        env["LNSYNC_SNAPSHOTTER__PROVE"] = "false" if args.no_prove else "true"
        figures["prove"] = not args.no_prove
        if args.proof_samples is not None:
            env["LNSYNC_SNAPSHOTTER__PROOF_SAMPLES"] = str(args.proof_samples)
            figures["proof_samples"] = args.proof_samples
        procs["persistence"] = await start("persistence", env, ports, workdir)
        rss["persistence"] = PeakRss(procs["persistence"].pid)
        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        stream = growth.messages(growth.POINTS[args.growth][1]) if args.growth else history(1, args.scale, 14)
        updates, ingest_seconds = await build_store(url, stream, f"127.0.0.1:{ports['persistence']}")
        print(f"store: {updates:,} channel_updates ({time.perf_counter() - started:.0f} s to build or reuse)")
        figures.update(channel_updates=updates, ingest_seconds=round(ingest_seconds, 1))
        figures["rss_mb_persistence_ingest"] = rss["persistence"].peak_mb if ingest_seconds else None
        for name in ("lookup", "snapshotter"):
            procs[name] = await start(name, env, ports, workdir)
            rss[name] = PeakRss(procs[name].pid)
        async with rpc.channel(f"127.0.0.1:{ports['persistence']}") as ch:
            await persistence_pb2_grpc.PersistenceStub(ch).ReportSyncComplete(
                persistence_pb2.ReportSyncCompleteRequest(peer_id="02" + "ab" * 32), timeout=10
            )
        await asyncio.sleep(1.5)
        R = DEFAULT_END_TIME
        lookup_pid = procs["lookup"].pid
        print("| delta | ComputeDelta v2 p50 (s) | lookup CPU p50 (s) | bare SQL p50 (s) | ratio | size |")
        print("|---|---:|---:|---:|---:|---:|")
        deltas: dict[str, Any] = {}
        spies = []
        if args.profile:
            spies.append(await results.start_py_spy(lookup_pid, Path(args.profile) / "lookup.txt"))
        async with rpc.channel(f"127.0.0.1:{ports['lookup']}") as ch:
            lookup = lookup_pb2_grpc.LookupStub(ch)
            lag = 1000
            for label, T in (
                ("full", 0),
                ("1 week", R - 7 * DAY),
                ("1 day", R - DAY),
                ("3 hours", R - 3 * HOUR),
            ):
                times, cpus, sql_times, data = [], [], [], b""
                for _ in range(args.repeats):
                    lag += 1
                    request = lookup_pb2.ComputeDeltaRequest(
                        last_sync_timestamp=T, version=2, reference_time=R, apply_lag=lag
                    )
                    cpu0 = cpu_seconds(lookup_pid)
                    t0 = time.perf_counter()
                    _, data = await rpc.join_chunks(lookup.ComputeDelta(request, timeout=120))
                    times.append(time.perf_counter() - t0)
                    cpus.append(cpu_seconds(lookup_pid) - cpu0)
                    sql_times.append(await bare_sql_seconds(url, T, R))
                p50, cpu50, sql50 = (statistics.median(x) for x in (times, cpus, sql_times))
                print(
                    f"| {label} | {p50:.3f} | {cpu50:.3f} | {sql50:.3f} | {p50 / sql50:.1f}x "
                    f"| {len(data):,} |"
                )
                deltas[label] = {
                    "p50_seconds": round(p50, 3),
                    "max_seconds": round(max(times), 3),
                    "lookup_cpu_seconds": round(cpu50, 3),
                    "bare_sql_seconds": round(sql50, 3),
                    "ratio_to_sql": round(p50 / sql50, 2),
                    "v2_bytes": len(data),
                    "v2_gzip_bytes": len(gzip.compress(data, 6)),
                    "lookup_rss_mb_after": round(rss["lookup"].sample() / 2**20),
                }
        await results.stop_py_spy(spies)
        figures["deltas"] = deltas
        print(f"lookup peak RSS so far: {rss['lookup'].peak_mb:.0f} MB")
        async with rpc.channel(f"127.0.0.1:{ports['snapshotter']}") as ch:
            snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
            cpu0 = cpu_seconds(lookup_pid, procs["snapshotter"].pid)
            t0 = time.perf_counter()
            # replace_newer: R lies in the synthetic history, before the snapshotter's own generation.
            request = snapshots_pb2.RegenerateRequest(reference_time=R, replace_newer=True)
            resp = await snaps.Regenerate(request, timeout=600)
            wall = time.perf_counter() - t0
            ladder_cpu = cpu_seconds(lookup_pid, procs["snapshotter"].pid) - cpu0
            listing = await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)
        print(
            f"snapshot ladder (24 h interval: {len(listing.snapshots)} blobs): {wall:.1f} s wall, "
            f"{ladder_cpu:.1f} s CPU of lookup + snapshotter (snapshotter reports {resp.seconds:.1f} s)"
        )
        figures["ladder"] = {
            "seconds": round(wall, 2),
            "cpu_seconds": round(ladder_cpu, 2),
            "blobs": len(listing.snapshots),
            "generation": listing.generation,
        }
        # The gateway holds the whole generation in memory: measured once it serves it.
        procs["gateway"] = await start("gateway", env, ports, workdir)
        rss["gateway"] = PeakRss(procs["gateway"].pid)
        try:
            await wait_gateway(f"http://127.0.0.1:{ports['gateway']}/snapshot/v2/{R - DAY}", R)
        except RuntimeError as exc:
            log = await asyncio.to_thread((workdir / "gateway.log").read_text, errors="replace")
            raise RuntimeError(f"{exc}; gateway log:\n{log[-3000:]}") from None
        await asyncio.sleep(1)
        for r in rss.values():
            r.sample()
        figures["rss_mb"] = {name: r.peak_mb for name, r in rss.items()}
        print(
            "peak RSS (MB, all of a service's processes): "
            + ", ".join(f"{name} {r.peak_mb:.0f}" for name, r in rss.items())
        )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load {os.getloadavg()[0]:.1f}"
        )
        return figures
    finally:
        if sampler is not None:
            sampler.cancel()
        for p in procs.values():
            p.terminate()
        await asyncio.gather(*(p.wait() for p in procs.values()), return_exceptions=True)
        pg.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


async def wait_gateway(url: str, reference_time: int, timeout: float = 120) -> None:
    """Until the gateway answers ``url`` with a v2 blob of the generation for ``reference_time``."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            status, body = await asyncio.to_thread(fetch, url, 5)
            stamp = int.from_bytes(body[36:40], "big")
            if status == 200 and body[:4] == b"LDK\x02" and stamp == reference_time:
                return
            last = f"status {status}, {body[:4]!r}, timestamp {stamp}"
        except OSError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not serve the generation at {url} (last: {last})")
        await asyncio.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument(
        "--growth", choices=list(growth.POINTS), help="bench_growth's history of that size instead of --scale"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", metavar="DIR", help="keep (and reuse) the database in DIR")
    ap.add_argument("--json", metavar="FILE", help="also write the key figures as JSON (- = stdout)")
    ap.add_argument(
        "--no-prove", action="store_true", help="publish generations unproven (snapshotter.prove off)"
    )
    ap.add_argument(
        "--proof-samples", type=int, metavar="N", help="snapshotter.proof_samples (default: the setting's)"
    )
    ap.add_argument("--profile", metavar="DIR", help="record lookup with py-spy during the deltas")
    args = ap.parse_args()
    if args.profile:
        results.py_spy()  # (missing: say so before anything starts)
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    results.write(args.json, asyncio.run(run(args)))


if __name__ == "__main__":
    main()
