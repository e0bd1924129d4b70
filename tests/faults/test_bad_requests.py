"""Fuzzed gRPC requests into the real lookup and snapshotter processes.

Hypothesis draws every field of ``ComputeDeltaRequest`` and ``GetSnapshotRequest`` over its whole
range (present or not): the services answer each with a success or a typed refusal, never crash,
and every refusal is counted in their Prometheus metrics. A request larger than the receive limit
is refused by gRPC itself and the service keeps serving.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lnsync import rpc
from lnsync.v1 import (
    lookup_pb2,
    lookup_pb2_grpc,
    persistence_pb2,
    persistence_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from tests.conftest import free_port, fresh_database
from tests.faults.system import metric_sum, scrape
from tests.stack import Stack, load_history, report_synced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
U32 = st.one_of(st.sampled_from([0, 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
NOW_ISH = st.integers(int(time.time()) - 40 * 86400, int(time.time()) + 3600)
FIELD = st.one_of(U32, NOW_ISH)
EXPECTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


@pytest.fixture(scope="module")
def services(pg_server, template_db) -> Iterator[tuple[Stack, dict[str, str]]]:  # type: ignore[no-untyped-def]
    async def up(url: str, work: Path) -> tuple[Stack, dict[str, str]]:
        await load_history(url, seed=21, days=3, channels=20)
        stack = Stack(url, work, extra_env={"LNSYNC_INGEST_LAG": "1"})
        metrics = {name: f"127.0.0.1:{free_port()}" for name in ("lookup", "snapshotter")}
        await stack.start_healthy("persistence")
        await report_synced(stack)
        for name, listen in metrics.items():
            await stack.start_healthy(name, "--metrics-listen", listen)
        return stack, metrics

    async def with_db() -> None:
        async with fresh_database(pg_server, template_db) as url:
            holder.append(await up(url, work))
            await done.wait()
            holder[0][0].close()

    work = Path(tempfile.mkdtemp(prefix="lnsync-f-", dir="/tmp"))
    work.chmod(0o755)
    holder: list[tuple[Stack, dict[str, str]]] = []
    done = asyncio.Event()
    loop = asyncio.new_event_loop()
    task = loop.create_task(with_db())
    while not holder and not task.done():
        loop.run_until_complete(asyncio.sleep(0.1))
    if task.done():
        task.result()
    yield holder[0]
    done.set()
    loop.run_until_complete(task)
    loop.close()
    shutil.rmtree(work, ignore_errors=True)


async def _call(target: str, make) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    async with rpc.channel(target) as ch:
        try:
            async for _ in make(ch):
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


refused = {"lookup": 0, "snapshotter": 0}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(last=FIELD, version=st.integers(0, 2**32 - 1) | st.sampled_from([1, 2]), ref=st.none() | FIELD,
       lag=st.none() | U32)  # fmt: skip
def test_fuzzed_compute_delta_requests(
    services, last: int, version: int, ref: int | None, lag: int | None
) -> None:
    stack, _ = services
    fields: dict[str, int] = {"last_sync_timestamp": last, "version": version}
    if ref is not None:
        fields["reference_time"] = ref
    if lag is not None:
        fields["apply_lag"] = min(lag, 30 * 86400)  # a huge apply lag is legal, only slow to compute

    def make(ch):  # type: ignore[no-untyped-def]
        return lookup_pb2_grpc.LookupStub(ch).ComputeDelta(
            lookup_pb2.ComputeDeltaRequest(**fields), timeout=30
        )

    code = asyncio.run(_call(stack.target("lookup"), make))
    assert code in EXPECTED, (fields, code)
    refused["lookup"] += code == grpc.StatusCode.INVALID_ARGUMENT


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    timestamp=FIELD,
    version=st.integers(0, 2**32 - 1) | st.sampled_from([1, 2]),
    gz=st.booleans(),
    kind=st.integers(0, 2**31 - 1) | st.integers(0, 3),
    scope=st.integers(0, 2**64 - 1) | st.sampled_from([0, 86400]),
)
def test_fuzzed_snapshot_requests(
    services, timestamp: int, version: int, gz: bool, kind: int, scope: int
) -> None:
    stack, _ = services

    def make(ch):  # type: ignore[no-untyped-def]
        request = snapshots_pb2.GetSnapshotRequest(
            timestamp=timestamp, version=version, gzip=gz, kind=kind, scope_seconds=scope
        )
        return snapshots_pb2_grpc.SnapshotsStub(ch).GetSnapshot(request, timeout=30)

    code = asyncio.run(_call(stack.target("snapshotter"), make))
    assert code in EXPECTED | {grpc.StatusCode.NOT_FOUND}, (timestamp, version, kind, scope, code)
    refused["snapshotter"] += code == grpc.StatusCode.INVALID_ARGUMENT


def test_every_refusal_was_counted_and_huge_requests_are_refused(services) -> None:
    stack, metrics = services

    async def check() -> None:
        text = await scrape(metrics["lookup"])
        assert metric_sum(text, "lnsync_lookup_requests_total", 'outcome="invalid"') == refused["lookup"]
        text = await scrape(metrics["snapshotter"])
        assert metric_sum(text, "lnsync_snapshotter_rejected_total") == refused["snapshotter"]
        # 9 MB in one message: over the receive limit, refused by gRPC before any handler runs.
        async with rpc.channel(
            stack.target("persistence"), [("grpc.max_send_message_length", 16 << 20)]
        ) as ch:
            stub = persistence_pb2_grpc.PersistenceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ReportSyncComplete(
                    persistence_pb2.ReportSyncCompleteRequest(peer_id="x" * (9 << 20)), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for name in ("persistence", "lookup", "snapshotter"):
            assert await rpc.check_health(stack.target(name))

    assert refused["lookup"] > 0 and refused["snapshotter"] > 0
    asyncio.run(check())
    for p in stack.processes:
        assert p.alive() and not re.search(r"Traceback|failed:", p.log()), p.log()[-3000:]
