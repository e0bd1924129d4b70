"""Gossip from a local LDK peer into PostgreSQL through the downloader and persistence, end to end:
messages per second and the downloader process's CPU seconds per message.

Each repeat starts a fresh database, ``lnsync serve persistence`` and ``lnsync serve downloader``
(real processes, as ``lnsync up`` runs them) against one real LDK node (tools/ldk/peer.mjs) and
polls ``Downloader.GetStatus`` every 20 ms. The clock runs from the connection until every
message is forwarded *and acknowledged* (committed by persistence); CPU is the downloader
process's user+system time over the same span (psutil). Reference, measured in the same run: the
gossip core alone (``GossipValidator.validate`` of the same messages, in this process), i.e.
parse + signature checks with no I/O, per message.

    python -m bench.bench_downloader [--repeats 3] [--graph-in FILE[.xz]] [--json FILE]

The downloader's peak RSS is sampled along (it grows with the graph: the channel and node keys
it remembers to check signatures).

``--graph-in`` serves a serialized LDK NetworkGraph instead of the 934-channel fixture, e.g. the
mainnet-size ``cln2026_full_ldk0.1.2_networkgraph.bin.xz`` from the shared data (by hand; the
repository does not ship it).
"""

from __future__ import annotations

import argparse
import asyncio
import lzma
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

from bench import results
from lnsync import rpc, schema
from lnsync.chain import chain_hash
from lnsync.gossip.signing import forget_parsed_keys
from lnsync.gossip.validate import GossipValidator
from lnsync.pg import LocalPostgres
from lnsync.v1 import downloader_pb2, downloader_pb2_grpc
from tests.ldk import LdkPeer, read_records
from tests.stack import stored_gossip

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "data" / "cln2026_top50_resigned_mainnet.bin"


@dataclass
class Run:
    messages: int
    seconds: float
    cpu: float  # downloader process, user + system
    persistence_cpu: float
    stored: int
    rss_mb: float  # the downloader's peak

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_per_message_us(self) -> float:
        return self.cpu / self.messages * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lnsync", "serve", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _wait_healthy(target: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await rpc.check_health(target, timeout=1):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{target} did not become healthy")


async def one_run(pg: LocalPostgres, peer: LdkPeer, workdir: Path, index: int) -> tuple[Run, list[bytes]]:
    name = f"bench_dl_{os.getpid()}_{index}"
    admin = await asyncpg.connect(pg.url("postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = pg.url(name)
    conn = await asyncpg.connect(url)
    await schema.migrate(conn)
    await conn.close()
    persistence_at, downloader_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
    env.update(
        LNSYNC_NETWORK="bitcoin",
        LNSYNC_DATABASE_URL=url,
        LNSYNC_DATA_DIR=str(workdir),
        LNSYNC_LOG_LEVEL="info",
        LNSYNC_PERSISTENCE__LISTEN=persistence_at,
        LNSYNC_DOWNLOADER__SYNC_SETTLE="1",
        # No retention passes: the bench graphs are months old, and pruning their "dead" channels
        # mid-run would both cost CPU and empty the store we count.
        LNSYNC_PERSISTENCE__PRUNE_INTERVAL="0",
    )
    procs = [_spawn(["persistence"], env, workdir / f"persistence-{index}.log")]
    try:
        await _wait_healthy(persistence_at)
        persistence = psutil.Process(procs[0].pid)
        procs.append(
            _spawn(
                ["downloader", "--peer", peer.address, "--listen", downloader_at],
                env,
                workdir / f"downloader-{index}.log",
            )
        )
        downloader = psutil.Process(procs[1].pid)
        rss = results.PeakRss(procs[1].pid)
        await _wait_healthy(downloader_at)
        async with rpc.channel(downloader_at) as ch:
            stub = downloader_pb2_grpc.DownloaderStub(ch)
            request = downloader_pb2.GetDownloaderStatusRequest()
            t0 = cpu0 = pcpu0 = None
            done_at = None
            total = 0
            while True:
                s = await stub.GetStatus(request, timeout=5)
                now = time.perf_counter()
                if t0 is None and s.connected:
                    t0, cpu0, pcpu0 = now, _cpu(downloader), _cpu(persistence)
                total = s.channel_announcements + s.channel_updates + s.node_announcements
                if t0 is not None and total and s.unacknowledged == 0:
                    if done_at is None or done_at[1] != total:
                        done_at = (now, total, _cpu(downloader), _cpu(persistence))
                else:
                    done_at = None
                if s.initial_sync_complete and done_at is not None:
                    break
                rss.sample()
                await asyncio.sleep(0.02)
            rss.sample()
        assert t0 is not None
        assert cpu0 is not None
        assert pcpu0 is not None
        assert done_at is not None
        raws = await stored_gossip(url)
        stored = len(raws)
        run = Run(total, done_at[0] - t0, done_at[2] - cpu0, done_at[3] - pcpu0, stored, rss.peak_mb)
        return run, raws
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        admin = await asyncpg.connect(pg.url("postgres"))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def reference_cpu_per_message(raws: list[bytes], repeats: int, network: str = "bitcoin") -> float:
    """The gossip core alone on the same messages: CPU seconds per message (median). Each repeat
    starts as cold as the downloader does: every node id is parsed once again."""
    anns = [r for r in raws if r[:2] == b"\x01\x00"]
    rest = [r for r in raws if r[:2] != b"\x01\x00"]
    times = []
    for _ in range(repeats):
        forget_parsed_keys()
        validator = GossipValidator(chain_hash(network), reject_htlc_min_above_max=False)
        start = time.process_time()
        for raw in anns:
            validator.validate(raw)
        for raw in rest:
            validator.validate(raw)
        times.append((time.process_time() - start) / len(raws))
    return statistics.median(times)


def _graph_file(arg: str | None, workdir: Path) -> Path | None:
    if arg is None:
        return None
    path = Path(arg)
    if path.suffix == ".xz":
        out = workdir / path.stem
        with lzma.open(path) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        return out
    return path


async def main_async(args: argparse.Namespace) -> None:
    workdir = results.work_dir("lnsync-bench-dl-")
    pg = LocalPostgres(workdir / "pg", ephemeral=True)
    pg.start()
    graph = _graph_file(args.graph_in, workdir)
    peer = LdkPeer(graph_in=graph, startup_timeout=600) if graph else LdkPeer(FIXTURE)
    peer.start()
    try:
        runs: list[Run] = []
        raws: list[bytes] = []
        for i in range(args.repeats):
            run, raws = await one_run(pg, peer, workdir, i)
            runs.append(run)
            print(
                f"  run {i + 1}: {run.messages} messages in {run.seconds:.2f} s = {run.rate:,.0f}/s; "
                f"downloader CPU {run.cpu:.2f} s ({run.cpu_per_message_us:.0f} µs/msg), "
                f"persistence CPU {run.persistence_cpu:.2f} s; stored {run.stored}; "
                f"downloader peak RSS {run.rss_mb:.0f} MB",
                flush=True,
            )
        expected = len(list(read_records(FIXTURE))) if graph is None else None
        for run in runs:
            if expected is not None and (run.messages, run.stored) != (expected, expected):
                raise SystemExit(
                    f"incomplete run: {run.messages} forwarded, {run.stored} stored of {expected}"
                )
        ref = reference_cpu_per_message(raws, 3)
        rate = statistics.median(r.rate for r in runs)
        cpu = statistics.median(r.cpu_per_message_us for r in runs)
        pcpu = statistics.median(r.persistence_cpu / r.messages * 1e6 for r in runs)
        load = os.getloadavg()[0]
        machine = f"Python {platform.python_version()}, {os.cpu_count()} cores, load {load:.1f}"
        print(f"\nbench_downloader ({machine})")
        source = FIXTURE.name if graph is None else args.graph_in
        print(f"  graph: {source}, {runs[0].messages} messages")
        print(f"  end to end, peer to committed: median {rate:,.0f} messages/s over {len(runs)} runs")
        print(f"  downloader CPU: median {cpu:.0f} µs/message")
        print(f"  persistence CPU: median {pcpu:.0f} µs/message")
        print(f"  reference, gossip core parse+verify in-process: {ref * 1e6:.0f} µs/message")
        print(f"  downloader CPU / reference: {cpu / (ref * 1e6):.2f}x")
        print(f"  downloader peak RSS: {max(r.rss_mb for r in runs):.0f} MB")
        results.write(
            args.json,
            {
                "graph": source,
                "messages": runs[0].messages,
                "repeats": len(runs),
                "rate": round(rate),
                "cpu_us_per_msg": round(cpu, 1),
                "persistence_cpu_us_per_msg": round(pcpu, 1),
                "reference_us_per_msg": round(ref * 1e6, 1),
                "ratio_cpu": round(cpu / (ref * 1e6), 3),
                "rss_mb": max(r.rss_mb for r in runs),
            },
        )
    finally:
        peer.close()
        pg.stop("immediate")
        results.finish_work_dir(workdir, args.keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--graph-in", help="a serialized LDK NetworkGraph (.bin or .bin.xz) for the peer")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (service logs)")
    parser.add_argument("--json", metavar="FILE", help="also write the key figures as JSON (- = stdout)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
