"""Sustained load on the real processes, short enough for CI (a few seconds of load each).

* The gateway: 32 concurrent HTTP clients for ~10 s while ``Snapshots.Regenerate`` publishes a new
  generation every second. Every answer must be a complete snapshot or delta (a dynamic delta may
  be shed with 429 + ``Retry-After``, the gateway's documented back-pressure), and the gateway's
  memory (parent + worker) stays under a ceiling.
* Ingest from 8 peers at once: 8 ``IngestClient`` streams into one persistence process, each
  peer sending its own graph plus a part every peer shares. Every distinct message is stored
  exactly once, nothing is rejected, and persistence's memory stays under a ceiling.

Each test prints a ``LOAD-REPORT`` line (``pytest -s``) with the figures docs/reliability.md quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
import psutil
import pytest

from lnsync import rpc
from lnsync.clients.ingest import IngestClient
from lnsync.v1 import snapshots_pb2, snapshots_pb2_grpc
from tests.faults.system import metric_sum
from tests.persistence.conftest import channel_announcement, channel_update, node_announcement
from tests.stack import ServiceProcess, Stack, load_history, regenerate, report_synced, stored_gossip, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HTTP_CLIENTS = 32
LOAD_SECONDS = 10.0
# Ceilings far above what was measured (docs/reliability.md) and far below a leak over the run:
# growth per request would show in thousands of requests.
GATEWAY_RSS_CEILING = 400 << 20
PERSISTENCE_RSS_CEILING = 300 << 20
RGS_PREFIX = b"LDK\x02"


def tree_rss(process: ServiceProcess) -> int:
    """Resident memory of a service process and its children (the gateway's workers)."""
    proc = psutil.Process(process.proc.pid)
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


async def sample_peak(process: ServiceProcess, stop: asyncio.Event, every: float = 0.25) -> int:
    peak = 0
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            peak = max(peak, await asyncio.to_thread(tree_rss, process))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return peak


async def test_gateway_under_concurrent_load_while_snapshots_regenerate(
    database_url: str, short_tmp: Path
) -> None:
    await load_history(database_url, seed=31, days=6, channels=40)
    stack = Stack(
        database_url,
        short_tmp,
        extra_env={
            "LNSYNC_INGEST_LAG": "1",
            "LNSYNC_SNAPSHOTTER__INTERVAL": "10800",
            "LNSYNC_GATEWAY__WORKERS": "1",
            "LNSYNC_LOG_LEVEL": "info",
        },
    )
    try:
        await stack.start_healthy("persistence")
        await report_synced(stack)
        await stack.start_healthy("lookup")
        await stack.start_healthy("snapshotter")
        first = await regenerate(stack, int(time.time()) - 60)
        gateway = stack.start("gateway")
        base = f"http://{stack.target('gateway')}"
        answers: Counter[str] = Counter()
        bad: list[str] = []
        stop = asyncio.Event()

        async def client(index: int) -> None:
            # One in four clients asks for dynamic deltas (computed by lookup), the rest for snapshots.
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
                while not stop.is_set():
                    hour_ago = int(time.time()) - 3600
                    path = (
                        "/snapshot/v2/0",
                        f"/snapshot/v2/{hour_ago}",
                        "/snapshot/v2/0",
                        f"/delta/v2/{hour_ago}",
                    )[index % 4]
                    kind = path.split("/")[1]
                    try:
                        async with session.get(base + path) as resp:
                            body = await resp.read()
                            outcome = f"{kind} {resp.status}"
                            if resp.status == 200:
                                if len(body) != int(resp.headers["Content-Length"]) or not body.startswith(
                                    RGS_PREFIX
                                ):
                                    outcome = f"{kind} malformed"
                            elif resp.status == 429 and kind == "delta" and "Retry-After" in resp.headers:
                                await asyncio.sleep(float(resp.headers["Retry-After"]) / 10)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        outcome = f"{kind} {type(exc).__name__}"
                    answers[outcome] += 1
                    if outcome not in ("snapshot 200", "delta 200", "delta 429"):
                        bad.append(f"{path}: {outcome}")

        async def regenerate_repeatedly() -> list[int]:
            generations = []
            async with rpc.channel(stack.target("snapshotter")) as ch:
                stub = snapshots_pb2_grpc.SnapshotsStub(ch)
                while not stop.is_set():
                    # A new reference time each round: every call computes and publishes a generation.
                    ref = int(time.time()) - 10
                    try:
                        resp = await stub.Regenerate(
                            snapshots_pb2.RegenerateRequest(reference_time=ref), timeout=60
                        )
                    except grpc.aio.AioRpcError as exc:
                        bad.append(f"Regenerate: {exc.code().name} {exc.details()}")
                        continue
                    generations.append(int(resp.generation))
                    # One a second: a generation must outlive the gateway's fetch of it (the
                    # snapshotter keeps two), and real ones come hours apart.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
            return generations

        async def gateway_ready() -> None:
            async with aiohttp.ClientSession() as s:
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with s.get(base + "/snapshot/v2/0") as r:
                            if r.status == 200:
                                return
                    await asyncio.sleep(0.1)

        await asyncio.wait_for(gateway_ready(), 30)
        rss_idle = tree_rss(gateway)
        sampler = asyncio.create_task(sample_peak(gateway, stop))
        regenerations = asyncio.create_task(regenerate_repeatedly())
        clients = [asyncio.create_task(client(i)) for i in range(HTTP_CLIENTS)]
        started = time.monotonic()
        await asyncio.sleep(LOAD_SECONDS)
        stop.set()
        await asyncio.gather(*clients)
        elapsed = time.monotonic() - started
        generations = await regenerations
        peak = await sampler

        async def metrics_once_caught_up() -> str:
            # Under load a generation can be replaced before the gateway has fetched all its blobs
            # (here one a second; hours apart in production): it keeps serving the one it holds and
            # must reach the newest once the churn stops.
            admin = f"http://{stack.target('gateway-admin')}"
            async with aiohttp.ClientSession() as s, s.get(admin + "/metrics") as r:
                text = await r.text()
            return (
                text
                if generations and metric_sum(text, "lnsync_gateway_snapshot_generation") >= generations[-1]
                else ""
            )

        metrics = await until(metrics_once_caught_up, 30, "the gateway to hold the newest generation")
    finally:
        stack.close()
    total = sum(answers.values())
    report = {
        "requests": total,
        "per_second": round(total / elapsed),
        "answers": dict(answers),
        "generations_published": len(generations),
        "gateway_rss_idle_mb": round(rss_idle / 2**20),
        "gateway_rss_peak_mb": round(peak / 2**20),
    }
    print("LOAD-REPORT gateway", json.dumps(report))
    assert bad == [], bad[:20]
    assert len(generations) >= 2, generations
    assert generations[0] > first and generations == sorted(generations), generations
    assert answers["snapshot 200"] > 20 * HTTP_CLIENTS // 4 and answers["delta 200"] > 0, report
    assert 0 < peak < GATEWAY_RSS_CEILING, report
    # The gateway counted what the clients saw, never failed upstream, and followed the new generations.
    served_ok = metric_sum(metrics, "lnsync_gateway_requests_total", 'status="200"')
    assert served_ok >= answers["snapshot 200"] + answers["delta 200"], (served_ok, report)
    upstream_errors = [x for x in metrics.splitlines() if x.startswith("lnsync_gateway_upstream_errors")]
    assert metric_sum(metrics, "lnsync_gateway_upstream_errors_total") == 0, upstream_errors
    assert metric_sum(metrics, "lnsync_gateway_snapshot_generation") == generations[-1] > first
    for p in stack.processes:
        assert "Traceback" not in p.log(), p.log()[-3000:]


def peer_messages(peer: int, channels: int, shared: list[bytes]) -> list[bytes]:
    """A peer's own channels (scids and nodes no other peer uses) followed by the shared part."""
    now = int(time.time())
    out: list[bytes] = []
    for c in range(channels):
        scid = (700_000 + peer * 10_000 + c) << 40
        n1, n2 = 1000 * (peer + 1) + c, 1000 * (peer + 1) + c + 1
        out.append(channel_announcement(scid, n1, n2))
        for direction in (0, 1):
            out.append(channel_update(scid, direction, now - 5000 + c, fee_ppm=peer + c))
            out.append(channel_update(scid, direction, now - 4000 + c, fee_ppm=peer + c + 1))
        out.append(node_announcement(1000 * (peer + 1) + c, now - 3000 + c))
    return out + shared


def shared_messages(channels: int) -> list[bytes]:
    now = int(time.time())
    out: list[bytes] = []
    for c in range(channels):
        scid = (690_000 + c) << 40
        out.append(channel_announcement(scid, 900_000 + c, 900_001 + c))
        out += [channel_update(scid, d, now - 6000 + c) for d in (0, 1)]
    return out


async def test_ingest_from_eight_peers_at_once(database_url: str, short_tmp: Path) -> None:
    stack = Stack(database_url, short_tmp, extra_env={"LNSYNC_LOG_LEVEL": "info"})
    shared = shared_messages(400)
    batches = [peer_messages(p, 1200, shared) for p in range(8)]
    expected = set().union(*map(set, batches))
    try:
        persistence = await stack.start_healthy("persistence")
        rss_idle = tree_rss(persistence)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peak(persistence, stop))

        async def peer(index: int) -> IngestClient:
            # Like a downloader: small requests, a bounded window, the messages in arrival order.
            async with IngestClient(
                stack.target("persistence"), f"{index + 2:02x}" * 33, max_request_messages=200, window=2000
            ) as client:
                for raw in batches[index]:
                    await client.send(raw)
            return client

        started = time.monotonic()
        clients = await asyncio.wait_for(asyncio.gather(*(peer(i) for i in range(8))), 90)
        elapsed = time.monotonic() - started
        stop.set()
        peak = await sampler
        rows = await stored_gossip(database_url)
        assert await rpc.check_health(stack.target("persistence"))
    finally:
        stack.close()
    sent = sum(len(b) for b in batches)
    report = {
        "peers": 8,
        "messages_sent": sent,
        "distinct": len(expected),
        "stored": len(rows),
        "seconds": round(elapsed, 1),
        "messages_per_second": round(sent / elapsed),
        "persistence_rss_idle_mb": round(rss_idle / 2**20),
        "persistence_rss_peak_mb": round(peak / 2**20),
    }
    print("LOAD-REPORT ingest", json.dumps(report))
    assert set(rows) == expected  # nothing lost, nothing else stored
    assert len(rows) == len(expected)  # nothing twice
    assert sum(c.counters.stored for c in clients) == len(expected)
    assert sum(c.counters.duplicates for c in clients) == sent - len(expected)
    assert all(c.counters.rejected == 0 and c.counters.unacked == 0 for c in clients)
    assert 0 < peak < PERSISTENCE_RSS_CEILING, report
    for p in stack.processes:
        assert "Traceback" not in p.log(), p.log()[-3000:]
