"""Gateway throughput: requests/s and p99 latency for a ~200 kB day-old snapshot at 32 connections,
side by side with nginx serving the same bytes from disk, measured in the same run with wrk.

The gateway is the real one (``lnsync serve gateway``, default two workers, plus a one-worker run
for comparison) in front of real persistence, lookup and snapshotter processes on an embedded
PostgreSQL. The store holds a synthetic history (``tests.rgs.histories``) sized so that the v2
snapshot for a client that synced one day before the generation is about 200 kB; the gateway
serves exactly that blob, and nginx serves a copy of it with a plain static configuration
(``worker_processes auto``, sendfile, no access log). Repeats alternate the servers so machine
noise hits both; medians are reported with their ratio, the p99 against nginx's, and each server's
CPU time (user + system, all its processes) per request: on a shared machine the other work moves
requests/s a lot and CPU per request little.

Needs ``wrk`` and ``nginx``: installed with apt-get when missing (as root).

    python -m bench.bench_gateway [--repeats 3] [--seconds 10] [--connections 32] [--channels 12000]
                                  [--json FILE]

(``--channels`` sizes the store: 12,000 gives the ~200 kB blob; fewer make a quick smoke run.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg
import psutil

from bench import results as bench_results
from lnsync import rpc, schema
from lnsync.gossip.messages import decode_gossip
from lnsync.pg import LocalPostgres
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc
from services.persistence.store import Incoming, write_batch
from tests.conftest import free_port
from tests.rgs.histories import DAY, START, event_message, random_events
from tests.stack import Stack

INTERVAL = 3 * 3600
CHANNELS = 12000
DAYS = 3
PEER = "02" + "cd" * 32


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("wrk", "wrk"), ("nginx", "nginx-light")) if not shutil.which(tool)]
    if shutil.which("nginx") is None and Path("/usr/sbin/nginx").exists():
        os.environ["PATH"] += ":/usr/sbin"
        missing = [p for p in missing if p != "nginx-light"]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, stdout=subprocess.DEVNULL)
        os.environ["PATH"] += ":/usr/sbin"


async def load_store(url: str, channels: int = CHANNELS) -> None:
    items = [
        Incoming(decode_gossip(event_message(ev)), ev.seen * 1_000_000)
        for ev in random_events(7, nodes=min(200, channels), channels=channels, days=DAYS)
    ]
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
        for i in range(0, len(items), 2000):
            await write_batch(conn, items[i : i + 2000])
    finally:
        await conn.close()
    print(f"store: {len(items)} messages, {channels} channels over {DAYS} days", flush=True)


async def generate(stack: Stack, reference_time: int) -> None:
    async with rpc.channel(stack.target("persistence")) as ch:
        await persistence_pb2_grpc.PersistenceStub(ch).ReportSyncComplete(
            persistence_pb2.ReportSyncCompleteRequest(peer_id=PEER), timeout=10
        )
    await stack.start_healthy("lookup")
    await stack.start_healthy("snapshotter")
    async with rpc.channel(stack.target("snapshotter")) as ch:
        snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
        # The snapshotter's own first generation comes first (polled: it is another process).
        while (await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)).generation == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        # replace_newer: the reference time lies in the history, before that first generation.
        request = snapshots_pb2.RegenerateRequest(reference_time=reference_time, replace_newer=True)
        await snaps.Regenerate(request, timeout=600)


def start_gateway(stack: Stack, workers: int, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **stack.env,
        "LNSYNC_GATEWAY__WORKERS": str(workers),
        "LNSYNC_GATEWAY__LISTEN": f"127.0.0.1:{port}",
        "LNSYNC_GATEWAY__ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
    }
    env["LNSYNC_LOG_LEVEL"] = "info"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lnsync", "serve", "gateway"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def fetch(url: str, timeout: float = 60) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_nginx(root: Path, blob_path: str, blob: bytes, port: int) -> subprocess.Popen[bytes]:
    target = root / "www" / blob_path.lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_bytes(blob)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {root}/tmp;
  proxy_temp_path {root}/tmp;
  fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp;
  scgi_temp_path {root}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {root}/www;
    location / {{ default_type application/octet-stream; etag on; }}
  }}
}}
"""
    )
    (root / "tmp").mkdir()
    return subprocess.Popen(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, requests) of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx answers\n{out}")
    return rps, float(value) * _UNITS[unit], requests


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a server: the process and its children (workers)."""
    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


async def run(args: argparse.Namespace) -> int:
    ensure_tools()
    root = Path(tempfile.mkdtemp(prefix="lnsync-bench-gw-", dir="/tmp"))
    os.chmod(root, 0o755)
    pg = LocalPostgres(root / "pg", ephemeral=True)
    procs: list[subprocess.Popen[bytes]] = []
    stack: Stack | None = None
    try:
        await asyncio.to_thread(pg.start)
        url = await asyncio.to_thread(pg.ensure_database)
        await load_store(url, args.channels)
        stack = Stack(
            url, root, extra_env={"LNSYNC_SNAPSHOTTER__INTERVAL": str(INTERVAL), "LNSYNC_INGEST_LAG": "1"}
        )
        stack.env["LNSYNC_LOG_LEVEL"] = "info"
        await stack.start_healthy("persistence")
        R = START + (DAYS - 1) * DAY
        R -= R % INTERVAL
        await generate(stack, R)
        path = f"/snapshot/v2/{R - DAY}"

        servers: dict[str, str] = {}
        for workers in (2, 1) if args.one_worker else (2,):
            port = free_port()
            procs.append(start_gateway(stack, workers, port, root / f"gateway-{workers}.log"))
            servers[f"gateway ({workers} worker{'s' if workers > 1 else ''})"] = (
                f"http://127.0.0.1:{port}{path}"
            )
        blob = b""
        for name, u in servers.items():
            deadline = time.monotonic() + 60
            while True:  # until this gateway holds the generation for R
                status, body = await asyncio.to_thread(fetch, u)
                if status == 200 and body[:4] == b"LDK\x02" and int.from_bytes(body[36:40], "big") == R:
                    break
                assert time.monotonic() < deadline, f"{name} did not load the generation"
                await asyncio.sleep(0.5)
            blob = body
        nginx_port = free_port()
        procs.append(start_nginx(root, path, blob, nginx_port))
        servers["nginx (same file, sendfile)"] = f"http://127.0.0.1:{nginx_port}{path}"
        status, same = await asyncio.to_thread(fetch, servers["nginx (same file, sendfile)"])
        assert status == 200
        assert same == blob
        print(f"blob: {path}, {len(blob):,} bytes (v2, one day before R={R})", flush=True)

        gateway_rss = [bench_results.PeakRss(p.pid) for p in procs[:-1]]  # the gateways (nginx is last)
        pids = dict(zip(servers, [p.pid for p in procs], strict=True))
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        # Server CPU per request (all its processes, user + system): what a server costs the machine
        # for one answer, a figure the other work on a shared machine moves far less than req/s.
        cpu_us: dict[str, list[float]] = {name: [] for name in servers}
        for i in range(args.repeats):
            for name, u in servers.items():
                cpu_before = cpu_seconds(pids[name])
                rps, p99, requests = await asyncio.to_thread(wrk, u, args.seconds, args.connections)
                cpu_us[name].append((cpu_seconds(pids[name]) - cpu_before) / max(requests, 1) * 1e6)
                results[name].append((rps, p99))
                for rss in gateway_rss:
                    rss.sample()
                print(
                    f"  repeat {i + 1}: {name:<30} {rps:>9,.0f} req/s  p99 {p99:6.1f} ms  "
                    f"server CPU {cpu_us[name][-1]:5.0f} µs/request (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        ref = statistics.median(r for r, _ in results["nginx (same file, sendfile)"])
        print(
            f"\n{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
            f"load {os.getloadavg()[0]:.1f}; wrk -t2 -c{args.connections} -d{args.seconds}s, "
            f"{args.repeats} repeats\n"
        )
        ref_p99 = statistics.median(p for _, p in results["nginx (same file, sendfile)"])
        print("| server | median req/s | ratio to nginx | median p99 | p99 / nginx's | server CPU/request |")
        print("|---|---:|---:|---:|---:|---:|")
        figures: dict[str, object] = {}
        keys = ("gateway", "gateway_1_worker", "nginx") if args.one_worker else ("gateway", "nginx")
        for (name, rows), key in zip(results.items(), keys, strict=True):
            rps = statistics.median(r for r, _ in rows)
            p99 = statistics.median(p for _, p in rows)
            cpu = statistics.median(cpu_us[name])
            cells = f"{rps:,.0f} | {rps / ref:.2f}x | {p99:.1f} ms | {p99 / ref_p99:.2f}x | {cpu:.0f} µs"
            print(f"| {name} | {cells} |")
            figures[key] = {
                "rps": round(rps),
                "ratio": round(rps / ref, 3),
                "p99_ms": round(p99, 1),
                "p99_ratio": round(p99 / ref_p99, 2),
                "cpu_us_per_request": round(cpu, 1),
            }
        rss = [r.peak_mb for r in gateway_rss]
        print(f"gateway peak RSS (PSS of all its processes): {' MB, '.join(map(str, rss))} MB")
        bench_results.write(
            args.json,
            {
                **figures,
                "blob_bytes": len(blob),
                "connections": args.connections,
                "seconds": args.seconds,
                "repeats": args.repeats,
                "rss_mb": rss[0],
                "rss_mb_1_worker": rss[1] if args.one_worker else None,
            },
        )
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if stack is not None:
            stack.close()
        await asyncio.to_thread(pg.stop, "immediate")
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--channels", type=int, default=CHANNELS, help="channels in the synthetic store")
    parser.add_argument(
        "--no-one-worker", dest="one_worker", action="store_false", help="skip the one-worker gateway run"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the key figures as JSON (- = stdout)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
