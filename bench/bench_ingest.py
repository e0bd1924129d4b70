"""Sustained ingest of a mainnet-scale gossip history through the real persistence service, against
a raw asyncpg COPY of the same rows into the same tables in the same run.

The history is ``lnsync gen``'s (``generate_history(sign=False)``: placeholder signatures, which
persistence never checks; cached by ``bench.history``): the real 2026 mainnet topology, ~54k
channels, ~17k nodes and ~1.5M channel_updates over 14 days in received order. One
``IngestClient`` (a historical stream: seen is the received time) sends it to ``lnsync serve
persistence``, its own process, backed by a durable PostgreSQL (lnsync's LocalPostgres, default
settings) in a temporary directory.
Throughput is messages over the time from the first send to the last acknowledgement. The
service's RSS is sampled throughout (peak reported), and the CPU time of each process (service,
client, PostgreSQL) is reported per message: on a shared machine that is the steadier figure.

Reference: the rows the service stored (channel_announcements, channel_updates,
channel_directions, node_announcements, nodes), read back and COPYed with
``copy_records_to_table`` into a fresh database with the same schema and indexes. Ratio = the
service's messages/s over (messages / COPY seconds). Same-work reference: the same rows COPYed
in batches of the service's size, each batch one transaction that also upserts the latest state
per direction and per node with one set-based statement each (``same_work_once``): what the
service asks of PostgreSQL, with no decision made in Python.

    python -m bench.bench_ingest [--scale 1.0] [--repeats 3] [--profile DIR] [--json FILE]

``--profile DIR`` records both processes with py-spy (if installed) into collapsed-stack files.
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import psutil

from bench import results as bench_results
from bench.history import history as cached_history
from lnsync import rpc, schema
from lnsync.clients.ingest import IngestClient
from lnsync.pg import LocalPostgres
from lnsync.schema import columns

TABLES = ("channel_announcements", "channel_updates", "channel_directions", "node_announcements", "nodes")


def history(scale: float, seed: int = 1) -> list[tuple[bytes, int]]:
    """(raw, received_at_us) in received order: ``lnsync gen``'s unsigned history."""
    return [(msg.raw, round(msg.received_at * 1_000_000)) for msg in cached_history(seed, scale, 14)]


async def start_service(url: str, port: int, log: Path, metrics: int = 0) -> asyncio.subprocess.Process:
    target = f"127.0.0.1:{port}"
    env = {**os.environ, "LNSYNC_LOG_LEVEL": "warning", "LNSYNC_PERSISTENCE__PRUNE_INTERVAL": "0"}
    if metrics:
        env["LNSYNC_PERSISTENCE__METRICS_LISTEN"] = f"127.0.0.1:{metrics}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lnsync", "serve", "persistence", "--listen", target, "--database-url", url,
        env=env, stdout=log.open("wb"), stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not await rpc.check_health(target, "lnsync.v1.Persistence"):
        if time.monotonic() > deadline or proc.returncode is not None:
            text = await asyncio.to_thread(log.read_text, errors="replace")
            raise RuntimeError(f"persistence did not start:\n{text[-3000:]}")
        await asyncio.sleep(0.1)
    return proc


async def fresh_database(pg: LocalPostgres, name: str) -> str:
    admin = await asyncpg.connect(pg.url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = pg.url(name)
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()
    return url


def cpu_seconds(procs: dict[int, psutil.Process]) -> dict[int, float]:
    out = {}
    for pid, p in procs.items():
        try:
            t = p.cpu_times()
            out[pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def postgres_processes(pg: LocalPostgres) -> dict[int, psutil.Process]:
    """The postmaster and its children (backends, WAL writer, checkpointer, ...)."""
    pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    master = psutil.Process(pid)
    return {p.pid: p for p in [master, *master.children()]}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


async def ingest_once(
    pg: LocalPostgres, messages: list[tuple[bytes, int]], port: int, root: Path, profile: Path | None
) -> dict[str, float]:
    url = await fresh_database(pg, "bench_service")
    metrics_port = rpc_port()
    proc = await start_service(url, port, root / "persistence.log", metrics_port)
    ps = psutil.Process(proc.pid)
    spies = []
    peak_rss = 0

    async def sample() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, ps.memory_info().rss)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    me = psutil.Process()
    try:
        if profile is not None:
            for name, pid in (("service", proc.pid), ("client", os.getpid())):
                spies.append(await bench_results.start_py_spy(pid, profile / f"{name}.txt"))
        pg_procs = postgres_processes(pg)
        cpu0 = (cpu_seconds({0: ps}), cpu_seconds({0: me}), cpu_seconds(pg_procs))
        started = time.perf_counter()
        async with IngestClient(
            f"127.0.0.1:{port}", "import:bench", source="import", historical=True
        ) as client:
            for raw, received in messages:
                await client.send(raw, received)
            await client.flush()
        seconds = time.perf_counter() - started
        pg_procs.update(postgres_processes(pg))
        cpu = [cpu_delta(a, cpu_seconds(p)) for a, p in zip(cpu0, ({0: ps}, {0: me}, pg_procs), strict=True)]
        ahead = await asyncio.to_thread(decided_ahead, metrics_port)
    finally:
        sampler.cancel()
        await bench_results.stop_py_spy(spies)
        proc.terminate()
        await proc.wait()
    c = client.counters
    if c.stored + c.duplicates != len(messages) or c.rejected:
        raise RuntimeError(f"unexpected counters {c}")
    return {
        "seconds": seconds,
        "rate": len(messages) / seconds,
        "rss_mb": peak_rss / 2**20,
        "stored": c.stored,
        "cpu_service": cpu[0],
        "cpu_client": cpu[1],
        "cpu_postgres": cpu[2],
        "decided_ahead": ahead,
    }


def decided_ahead(port: int) -> dict[str, int]:
    """The writer's decisions made ahead of the lock, kept or made again, and its early COPYs
    (its metrics)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = {"kept": 0, "remade": 0, "copied": 0, "failed": 0}
    for family in text_string_to_metric_families(text):
        if family.name in ("lnsync_persistence_decided_ahead", "lnsync_persistence_copied_early"):
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("result") in counts:
                    counts[sample.labels["result"]] = int(sample.value)
    return counts


async def copy_once(pg: LocalPostgres) -> tuple[float, float]:
    """Seconds (and CPU seconds of PostgreSQL and this process) to COPY what the service stored
    into a fresh copy of the schema."""
    source = await asyncpg.connect(pg.url("bench_service"))
    try:
        rows = {t: [tuple(r) for r in await source.fetch(f"SELECT * FROM {t}")] for t in TABLES}
        columns = {
            t: [r["attname"] for r in await source.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum", t)]
            for t in TABLES
        }  # fmt: skip
    finally:
        await source.close()

    async def copy(conn: asyncpg.Connection) -> None:
        for t in TABLES:
            await conn.copy_records_to_table(t, records=rows[t], columns=columns[t])

    return await timed_in_fresh_database(pg, "bench_copy", copy)


async def timed_in_fresh_database(
    pg: LocalPostgres, name: str, work: Callable[[asyncpg.Connection], Awaitable[None]]
) -> tuple[float, float]:
    """Seconds, and CPU seconds of PostgreSQL and this process, that ``work`` takes on a connection
    to a fresh database with the schema."""
    conn = await asyncpg.connect(await fresh_database(pg, name))
    try:
        me = psutil.Process()
        pg_procs = postgres_processes(pg)
        cpu0 = (cpu_seconds({0: me}), cpu_seconds(pg_procs))
        started = time.perf_counter()
        await work(conn)
        seconds = time.perf_counter() - started
        cpu = cpu_delta(cpu0[0], cpu_seconds({0: me})) + cpu_delta(cpu0[1], cpu_seconds(pg_procs))
        return seconds, cpu
    finally:
        await conn.close()


# The same-work reference: the raw COPY of the stored rows, in batches of the service's size, each
# batch one transaction that also brings the latest-per-direction and latest-per-node tables up to
# date with one set-based upsert each (the latest of the batch per key, replacing an older one). It
# does what the service's writer does to PostgreSQL without deciding anything in Python: the bound
# for a design that keeps the latest state current on every write. (The life columns are simplified:
# a direction's life starts at its first row here; the rows carry the service's change masks.)
SAME_WORK_BATCH = 5000  # persistence.max_batch's default: a historical import's batches reach it
_DIRECTION_COLUMNS = ", ".join(columns.names(columns.DIRECTION))
_DIRECTION_SET = ", ".join(
    f"{c.name} = EXCLUDED.{c.name}" for c in columns.DIRECTION
    if c.name not in (*columns.DIRECTION_KEY, "alive_update_id", "alive_since")
)  # fmt: skip
UPSERT_DIRECTIONS_SQL = f"""
INSERT INTO channel_directions ({_DIRECTION_COLUMNS})
SELECT DISTINCT ON (scid, direction) scid, direction, id, timestamp, channel_flags, cltv_expiry_delta,
       htlc_minimum_msat, fee_base_msat, fee_proportional_millionths, htlc_maximum_msat, seen, id, seen
FROM channel_updates WHERE id BETWEEN $1 AND $2
ORDER BY scid, direction, timestamp DESC
ON CONFLICT (scid, direction) DO UPDATE SET {_DIRECTION_SET}
WHERE EXCLUDED.timestamp > channel_directions.timestamp
"""
UPSERT_NODES_SQL = f"""
INSERT INTO nodes ({", ".join(columns.names(columns.NODE))})
SELECT DISTINCT ON (node_id) node_id, id, id, timestamp, features, addresses, seen, seen
FROM node_announcements WHERE id BETWEEN $1 AND $2
ORDER BY node_id, timestamp DESC
ON CONFLICT (node_id) DO UPDATE SET announcement_id = EXCLUDED.announcement_id,
    timestamp = EXCLUDED.timestamp, features = EXCLUDED.features, addresses = EXCLUDED.addresses,
    seen = EXCLUDED.seen
WHERE EXCLUDED.timestamp > nodes.timestamp
"""


def _slices(rows: list[tuple], batches: int) -> list[list[tuple]]:
    """``rows`` cut into ``batches`` consecutive slices of near-equal size."""
    n = len(rows)
    return [rows[n * k // batches : n * (k + 1) // batches] for k in range(batches)]


async def same_work_once(pg: LocalPostgres, messages: int) -> tuple[float, float]:
    """Seconds (and CPU seconds of PostgreSQL and this process) of the same-work reference over
    what the service stored, into a fresh copy of the schema."""
    source = await asyncpg.connect(pg.url("bench_service"))
    try:
        rows = {
            t: [tuple(r) for r in await source.fetch(f"SELECT * FROM {t} ORDER BY id")]
            for t in ("channel_announcements", "channel_updates", "node_announcements")
        }
    finally:
        await source.close()
    batches = max(1, -(-messages // SAME_WORK_BATCH))
    sliced = {t: _slices(r, batches) for t, r in rows.items()}

    async def batches_with_upserts(conn: asyncpg.Connection) -> None:
        for k in range(batches):
            async with conn.transaction():
                for t in ("channel_announcements", "channel_updates", "node_announcements"):
                    part = sliced[t][k]
                    if not part:
                        continue
                    await conn.copy_records_to_table(t, records=part)  # every column, in order
                    if t == "channel_updates":
                        await conn.execute(UPSERT_DIRECTIONS_SQL, part[0][0], part[-1][0])
                    elif t == "node_announcements":
                        await conn.execute(UPSERT_NODES_SQL, part[0][0], part[-1][0])

    return await timed_in_fresh_database(pg, "bench_same_work", batches_with_upserts)


async def run(
    messages: list[tuple[bytes, int]], pg: LocalPostgres, root: Path, repeats: int, profile: Path | None
) -> dict[str, object]:
    port = rpc_port()
    results = []
    cpu_us: list[tuple[float, float, float, float, float]] = []
    n = len(messages) / 1e6
    for i in range(repeats):
        svc = await ingest_once(pg, messages, port, root, profile)
        copy_seconds, copy_cpu = await copy_once(pg)
        same_seconds, same_cpu = await same_work_once(pg, len(messages))
        copy_rate = len(messages) / copy_seconds
        same_rate = len(messages) / same_seconds
        ratio = svc["rate"] / copy_rate
        same_ratio = svc["rate"] / same_rate
        results.append((svc["rate"], copy_rate, ratio, svc["rss_mb"], same_rate, same_ratio))
        cpu_us.append(
            (
                svc["cpu_service"] / n,
                svc["cpu_client"] / n,
                svc["cpu_postgres"] / n,
                copy_cpu / n,
                same_cpu / n,
            )
        )
        print(
            f"repeat {i + 1}: service {svc['rate']:,.0f} msgs/s ({svc['seconds']:.1f} s), raw COPY "
            f"{copy_rate:,.0f} msgs/s ({copy_seconds:.1f} s), ratio {ratio:.2f}; same-work reference "
            f"{same_rate:,.0f} msgs/s ({same_seconds:.1f} s), ratio {same_ratio:.2f}; service peak RSS "
            f"{svc['rss_mb']:.0f} MB\n  CPU µs/msg: service {svc['cpu_service'] / n:.1f}, client "
            f"{svc['cpu_client'] / n:.1f}, PostgreSQL {svc['cpu_postgres'] / n:.1f}; "
            f"raw COPY {copy_cpu / n:.1f}, same-work {same_cpu / n:.1f} (PostgreSQL + asyncpg)\n"
            f"  batches decided ahead of the lock: {svc['decided_ahead']['kept']:,} kept, "
            f"{svc['decided_ahead']['remade']:,} made again; their updates COPYed before the lock: "
            f"{svc['decided_ahead']['copied']:,} ({svc['decided_ahead']['failed']:,} could not be)",
            flush=True,
        )
    med = [statistics.median(col) for col in zip(*results, strict=True)]
    print(
        f"\nmedian of {repeats}: service {med[0]:,.0f} msgs/s, raw COPY {med[1]:,.0f} msgs/s, "
        f"ratio {med[2]:.2f}; same-work {med[4]:,.0f} msgs/s, ratio {med[5]:.2f}; "
        f"peak RSS {max(r[3] for r in results):.0f} MB "
        f"(targets: >= 25,000 msgs/s, >= 0.5x raw COPY or >= 0.8x same-work, <= 300 MB)\n"
        f"machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    )
    cpu_med = [round(statistics.median(col), 1) for col in zip(*cpu_us, strict=True)]
    return {
        "messages": len(messages),
        "repeats": repeats,
        "rate": round(med[0]),
        "copy_rate": round(med[1]),
        "ratio": round(med[2], 3),
        "same_work_rate": round(med[4]),
        "same_work_ratio": round(med[5], 3),
        "rss_mb": round(max(r[3] for r in results), 1),
        "cpu_us_per_msg": dict(
            zip(("service", "client", "postgres", "raw_copy", "same_work"), cpu_med, strict=True)
        ),
    }


def rpc_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="share of mainnet size (1.0 = ~1.5M updates)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="record both processes with py-spy")
    parser.add_argument("--json", metavar="FILE", help="also write the key figures as JSON (- = stdout)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    messages = history(args.scale)
    kinds = {k: sum(1 for raw, _ in messages if raw[1] == k) for k in (0, 1, 2)}
    print(
        f"history: {len(messages):,} messages ({kinds[0]:,} channel_announcements, "
        f"{kinds[2]:,} channel_updates, {kinds[1]:,} node_announcements), "
        f"generated in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    if args.profile is not None:
        bench_results.py_spy()  # (missing: say so before anything starts)
        args.profile.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="lnsync-bench-", dir="/tmp"))
    root.chmod(0o755)
    pg = LocalPostgres(root / "pg")
    pg.start()
    try:
        figures = asyncio.run(run(messages, pg, root, args.repeats, args.profile))
        bench_results.write(args.json, {"scale": args.scale, **figures})
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
