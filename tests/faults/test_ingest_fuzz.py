"""Fuzzed input into ``Persistence.Ingest`` over real gRPC, into one real persistence process.

* Gossip bytes: hypothesis draws random bytes and mutations of valid messages (bytes flipped,
  truncated, extended, another type); each batch goes through an ``IngestClient`` stream like a
  downloader's. Afterwards only messages that were sent and pass persistence's checks are stored,
  every rejection the clients saw is in ``lnsync_persistence_rejections_total``, and the service
  is still healthy.
* Stream protocol: hypothesis draws whole streams (header or not, peer ids, seq orders, headers
  repeated); a small model says which protocol rule each breaks. Each broken stream ends with
  INVALID_ARGUMENT and is counted in ``lnsync_persistence_refused_total`` under that rule.

Hypothesis draws the inputs up front (the process under test is shared by every example, which
runs inside one event loop); a failure names the example.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lnsync import rpc
from lnsync.chain import chain_hash
from lnsync.clients.ingest import IngestClient
from lnsync.gossip.errors import GossipError
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc
from services.persistence.checks import check_message
from services.persistence.peers import MAX_PEER_ID, peer_id_problem
from tests.conftest import free_port
from tests.faults.system import metric_sum, scrape
from tests.persistence.conftest import channel_announcement, channel_update, node_announcement
from tests.stack import Stack, stored_gossip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
MAINNET = chain_hash("bitcoin")
NOW = int(time.time())
SEEDS = [
    channel_announcement(800_123 << 40, 1, 2),
    channel_update(800_123 << 40, 0, NOW - 100),
    channel_update(800_123 << 40, 1, NOW - 90, fee_ppm=7),
    node_announcement(1, NOW - 80),
]


def draw_all(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` examples of ``strategy`` (hypothesis as a generator: no I/O happens here)."""
    out: list[Any] = []

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out[:count]


@st.composite
def gossip_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "flip", "truncate", "extend", "retype", "valid"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    seed = bytearray(draw(st.sampled_from(SEEDS)))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(seed) - 1))
            seed[i] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        del seed[draw(st.integers(0, len(seed) - 1)) :]
    elif kind == "extend":
        seed += draw(st.binary(min_size=1, max_size=300))
    elif kind == "retype":
        seed[0:2] = draw(st.sampled_from([256, 257, 258, 16, 18, 265, 0xFFFF])).to_bytes(2, "big")
    return bytes(seed)


BATCHES = st.lists(gossip_bytes(), min_size=1, max_size=30)

PEER_IDS = st.one_of(
    st.sampled_from(["03" * 33, "import:fuzz"]),
    st.text(max_size=MAX_PEER_ID + 8),
    st.text(max_size=MAX_PEER_ID).map(lambda t: "import:" + t),
    st.sampled_from(["", "x" * (MAX_PEER_ID + 1), "a\nb", "\x00", "03" * 32, "03" * 33 + "0", "AB" * 33]),
)
REQUEST = st.fixed_dictionaries(
    {"header": st.none() | PEER_IDS, "seqs": st.lists(st.integers(0, 20), max_size=4)}
)
STREAMS = st.lists(REQUEST, max_size=5)


def expected_refusal(stream: list[dict[str, Any]]) -> str | None:
    """The protocol rule ``stream`` breaks first (persistence's reason label), or None."""
    if not stream:
        return None
    first = stream[0]
    if first["header"] is None:
        return "no_header"
    peer_id = first["header"]
    if peer_id_problem(peer_id) is not None:
        return "invalid_peer_id"
    last = 0
    for index, request in enumerate(stream):
        if index > 0 and request["header"] is not None:
            return "second_header"
        for seq in request["seqs"]:
            if seq <= last:
                return "seq_not_increasing"
            last = seq
    return None


async def stream_status(
    stub: persistence_pb2_grpc.PersistenceStub, requests: list[persistence_pb2.IngestRequest]
) -> tuple[grpc.StatusCode, bool]:
    """The status the stream ended with, and whether a write failed because the server had already
    ended it. In that race grpc's aio client reports INTERNAL instead of the server's status
    (grpc/grpc#36066); the server's decision is then read from its metrics."""
    call = stub.Ingest(timeout=20)
    write_failed = False
    try:
        for request in requests:
            if call.done():
                break
            await call.write(request)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
        write_failed = True
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in call:
            pass
    return await call.code(), write_failed


async def test_fuzzed_gossip_and_streams_into_ingest(database_url: str, short_tmp: Path) -> None:
    batches = draw_all(BATCHES, 100)
    streams = draw_all(STREAMS, 80)
    metrics_listen = f"127.0.0.1:{free_port()}"
    stack = Stack(database_url, short_tmp, extra_env={"LNSYNC_LOG_LEVEL": "info"})
    try:
        await stack.start_healthy("persistence", "--metrics-listen", metrics_listen)
        target = stack.target("persistence")

        # -- gossip bytes through IngestClient streams ------------------------------------------
        sent: set[bytes] = set()
        rejected = stored = 0
        for index, batch in enumerate(batches):
            async with IngestClient(target, f"{index:02x}" * 33, max_request_messages=7) as client:
                for raw in batch:
                    await client.send(raw)
            assert client.error is None and client.counters.unacked == 0, (index, batch)
            sent.update(batch)
            rejected += client.counters.rejected
            stored += client.counters.stored
        rows = await stored_gossip(database_url)
        for raw in rows:
            assert raw in sent, raw.hex()
            check_message(raw, MAINNET)  # raises if something invalid was stored
        invalid = set()
        for raw in sent:
            try:
                check_message(raw, MAINNET)
            except GossipError:
                invalid.add(raw)
        assert not invalid & set(rows)
        assert rejected > 0 and len(invalid) > 0

        # -- broken stream protocols ----------------------------------------------------------------
        refusals: Counter[str] = Counter()
        races = 0
        async with rpc.channel(target) as ch:
            stub = persistence_pb2_grpc.PersistenceStub(ch)
            for index, stream in enumerate(streams):
                requests = []
                for request in stream:
                    header = None
                    if request["header"] is not None:
                        header = persistence_pb2.StreamHeader(peer_id=request["header"])
                    messages = [persistence_pb2.GossipMessage(seq=s, raw=SEEDS[1]) for s in request["seqs"]]
                    requests.append(persistence_pb2.IngestRequest(header=header, messages=messages))
                want = expected_refusal(stream)
                code, raced = await stream_status(stub, requests)
                if raced and code == grpc.StatusCode.INTERNAL:
                    races += 1
                    code = grpc.StatusCode.INVALID_ARGUMENT if want else code
                assert code == (grpc.StatusCode.INVALID_ARGUMENT if want else grpc.StatusCode.OK), (
                    index,
                    stream,
                )
                if want:
                    refusals[want] += 1
        assert refusals, streams  # the drawn streams broke at least one rule

        text = await scrape(metrics_listen)
        assert metric_sum(text, "lnsync_persistence_rejections_total") == rejected
        # An acknowledgement's "stored" includes stale updates (kept in the history, not the
        # latest), which the service's metric counts apart as outcome="stale".
        counted = metric_sum(text, "lnsync_persistence_messages_total", 'outcome="stored"')
        counted += metric_sum(text, "lnsync_persistence_messages_total", 'outcome="stale"')
        assert counted >= stored
        for reason in ("no_header", "invalid_peer_id", "second_header", "seq_not_increasing"):
            counted = metric_sum(text, "lnsync_persistence_refused_total", f'reason="{reason}"')
            assert counted == refusals[reason], (reason, counted, refusals)
        assert await rpc.check_health(target)
    finally:
        stack.close()
    for p in stack.processes:
        assert "Traceback" not in p.log(), p.log()[-3000:]
    report = {
        "messages": len(sent),
        "invalid": len(invalid),
        "stored_rows": len(rows),
        "rejected": rejected,
        "streams_refused": dict(refusals),
        "client_races": races,
    }
    print("FUZZ-REPORT ingest", report)
