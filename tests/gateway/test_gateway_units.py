"""The gateway's pure parts: URL timestamps, content negotiation, validators, caching and CORS
headers, error mapping, rates."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import random
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from lnsync.clients import snapshots as snapshot_kinds
from lnsync.rgs import ladder, policy
from lnsync.v1 import snapshots_pb2
from services.gateway.blobs import Blob, accepts_gzip, cache_control, none_match, respond, unmodified_since
from services.gateway.cors import Cors
from services.gateway.errors import from_grpc
from services.gateway.snapshots import SnapshotCache
from services.gateway.timestamps import U32_MAX, BadTimestamp, parse_timestamp
from services.gateway.volume import Series, VolumeSampler

NOW = 1_800_000_000


@given(st.integers(0, NOW))
@settings(deadline=None)  # the machine is shared: a slow example is not a failure
def test_every_canonical_timestamp_parses(value: int) -> None:
    assert parse_timestamp(str(value), NOW) == value


@given(st.text(max_size=14))
@settings(deadline=None)
def test_anything_else_is_rejected_with_a_one_line_reason(text: str) -> None:
    canonical = text.isascii() and text.isdigit() and str(int(text)) == text and int(text) <= NOW + 60
    if canonical:
        assert parse_timestamp(text, NOW) == int(text)
    else:
        with pytest.raises(BadTimestamp) as err:
            parse_timestamp(text, NOW)
        assert "\n" not in str(err.value) and len(str(err.value)) < 200


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "01",
        "00",
        "0x10",
        "1_000",
        "1e3",
        "\u0661\u0662",
        "\uff14",
        str(U32_MAX + 1),
    ],
)
def test_rejected_spellings(text: str) -> None:
    with pytest.raises(BadTimestamp):
        parse_timestamp(text, float(U32_MAX))


def test_the_u32_bound_and_the_future() -> None:
    assert parse_timestamp(str(U32_MAX), float(U32_MAX)) == U32_MAX
    assert parse_timestamp(str(NOW + 60), NOW) == NOW + 60
    with pytest.raises(BadTimestamp, match="future"):
        parse_timestamp(str(NOW + 61), NOW)


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("br, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*", True),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("identity", False),
        ("br, deflate", False),
        ("gzip;q=banana", False),
        ("gzip;q=2", False),
        ("", False),
    ],
)
def test_accept_encoding(header: str, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_if_none_match_uses_weak_comparison() -> None:
    tag = '"abc"'
    assert none_match('"abc"', tag) and none_match('W/"abc"', tag) and none_match('"x", "abc"', tag)
    assert none_match("*", tag)
    assert not none_match('"abcd"', tag) and not none_match("abc", tag) and not none_match("", tag)


def test_gzip_is_offered_only_when_it_saves_bytes() -> None:
    body = b"LDK\x02" + b"\x00" * 5000
    blob = Blob.of(body, 7, "public, max-age=1", NOW, gzip.compress(body))
    assert blob.gzip_headers is not None and blob.gzip_headers["Content-Encoding"] == "gzip"
    assert blob.gzip_headers["ETag"] != blob.identity_headers["ETag"]
    noise = random.Random(1).randbytes(1024)
    incompressible = Blob.of(noise, 7, "public, max-age=1", NOW, gzip.compress(noise))
    assert incompressible.gzip_headers is None
    assert incompressible.identity_headers["X-RGS-Timestamp"] == "7"


def test_cache_control_names_every_directive() -> None:
    assert cache_control(60, 120, 30, 86400) == (
        "public, max-age=60, s-maxage=120, stale-while-revalidate=30, stale-if-error=86400"
    )


@pytest.mark.parametrize(
    ("header", "unmodified"),
    [
        ("Fri, 15 Jan 2027 08:00:00 GMT", True),  # NOW exactly
        ("Fri, 15 Jan 2027 08:00:01 GMT", True),
        ("Fri, 15 Jan 2027 07:59:59 GMT", False),
        ("Friday, 15-Jan-27 08:00:00 GMT", True),  # RFC 850
        ("Fri Jan 15 08:00:00 2027", True),  # asctime (GMT without saying so)
        ("Fri, 15 Jan 2027 09:00:00 +0100", True),  # not an HTTP-date, but unambiguous
        ("yesterday", False),
        ("", False),
        ("Fri, 99 Jan 2027 08:00:00 GMT", False),
        ("9" * 200, False),
    ],
)
def test_if_modified_since(header: str, unmodified: bool) -> None:
    assert unmodified_since(header, NOW) is unmodified


def _ask(blob: Blob, **headers: str) -> int:
    return respond(CIMultiDictProxy(CIMultiDict(headers)), blob).status


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    blob = Blob.of(b"LDK\x02", 7, "public", NOW)
    assert blob.identity_headers["Last-Modified"] == "Fri, 15 Jan 2027 08:00:00 GMT"
    tag, date = blob.identity_headers["ETag"], blob.identity_headers["Last-Modified"]
    assert _ask(blob) == 200
    assert _ask(blob, **{"If-Modified-Since": date}) == 304
    assert _ask(blob, **{"If-None-Match": tag, "If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 304
    assert _ask(blob, **{"If-None-Match": '"other"', "If-Modified-Since": date}) == 200


def test_cors_any_origin_a_list_or_off() -> None:
    anyone = Cors(("*",))
    assert anyone.headers(None)["Access-Control-Allow-Origin"] == "*" and not anyone.vary
    listed = Cors(("https://a.example",))
    assert listed.headers("https://a.example")["Access-Control-Allow-Origin"] == "https://a.example"
    assert listed.headers("https://b.example") == {} and listed.headers(None) == {} and listed.vary
    off = Cors(())
    assert not off.enabled and off.headers("https://a.example") == {}
    asks = {"Origin": "https://a.example", "Access-Control-Request-Method": "GET"}
    assert listed.preflight(asks)["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert listed.preflight(asks)["Vary"] == "Origin"
    # Not a CORS preflight (no requested method), or an origin not listed: no CORS headers.
    assert "Access-Control-Allow-Origin" not in listed.preflight({"Origin": "https://a.example"})
    assert "Access-Control-Allow-Origin" not in listed.preflight({**asks, "Origin": "https://b.example"})


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400, False),
        (grpc.StatusCode.FAILED_PRECONDITION, 503, True),
        (grpc.StatusCode.NOT_FOUND, 503, True),
        (grpc.StatusCode.UNAVAILABLE, 503, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 503, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, True),
        (grpc.StatusCode.INTERNAL, 502, True),
        (grpc.StatusCode.UNKNOWN, 502, True),
        (grpc.StatusCode.UNIMPLEMENTED, 502, True),
    ],
)
def test_grpc_failures_map_to_http(code: grpc.StatusCode, status: int, retry: bool) -> None:
    exc = grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), "at 10.0.0.7:50052: boom\nmore"
    )
    err = from_grpc(exc, "lookup")
    assert err.status == status and (err.retry_after is not None) == retry
    assert "\n" not in err.reason
    if status != 400:
        assert "10.0.0.7" not in err.reason and err.reason.startswith("lookup: ")


def test_volume_rates_per_minute_and_counter_resets() -> None:
    sampler = VolumeSampler()
    sampler.add_probe(_never_called, [Series("updates", "channel_update", "messages/min")])
    sampler.record({"updates": 1000.0}, at=100.0)
    sampler.record({"updates": 1300.0}, at=130.0)  # 300 in 30 s
    sampler.record({"updates": 50.0}, at=190.0)  # the source restarted: no point
    sampler.record({"updates": 110.0}, at=250.0)
    sampler.record({"unknown": 5.0}, at=260.0)  # a total nobody registered is ignored
    assert list(sampler.series["updates"].points) == [(130, 600.0), (250, 60.0)]
    assert sampler.as_json()[0]["points"] == [(130, 600.0), (250, 60.0)]


async def _never_called() -> dict[str, float]:
    raise AssertionError


class _Snapshotter:
    """ListSnapshots of a snapshotter with no generation yet: one that honours the long poll
    (waits ``wait_seconds``), or an older one that answers at once."""

    def __init__(self, waits: bool) -> None:
        self.waits = waits
        self.asked: list[tuple[float, int, int]] = []  # (when, unless_generation, wait_seconds)

    async def ListSnapshots(self, request: snapshots_pb2.ListSnapshotsRequest, timeout: float) -> object:
        self.asked.append((time.monotonic(), request.unless_generation, request.wait_seconds))
        assert timeout > request.wait_seconds
        if self.waits:
            await asyncio.sleep(request.wait_seconds)
        return snapshots_pb2.ListSnapshotsResponse(interval=86400)


@pytest.mark.parametrize("waits", [True, False])
async def test_the_gateway_long_polls_and_polls_a_snapshotter_that_answers_at_once(waits: bool) -> None:
    stub = _Snapshotter(waits)
    cache = SnapshotCache(stub, bytes(32), "public", poll=0.4, long_poll=1)  # type: ignore[arg-type]
    task = asyncio.ensure_future(cache.run())
    while len(stub.asked) < 4:  # noqa: ASYNC110 - the fake stub has no event to offer
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert {(unless, wait) for _, unless, wait in stub.asked} == {(0, 1)}
    gaps = [b[0] - a[0] for a, b in zip(stub.asked, stub.asked[1:], strict=False)]
    if waits:  # asked again as soon as the long poll ends, not a poll interval later
        assert all(0.95 <= g < 1.3 for g in gaps), gaps
    else:  # an older snapshotter, which answers at once, is asked every poll interval
        assert all(0.38 <= g < 0.7 for g in gaps), gaps
    assert cache.reachable


class _Replacing:
    """A snapshotter that publishes generation 2 while the gateway fetches generation 1: the
    gateway's first fetches get blobs of generation 2."""

    def __init__(self) -> None:
        self.generation = 1
        self.lists = 0

    def _infos(self, generation: int) -> list[snapshots_pb2.SnapshotInfo]:
        out = []
        for version in policy.VERSIONS:
            for scope in (86400, ladder.FULL, ladder.NOTHING_NEW):
                blob = f"v{version} {scope} g{generation}".encode()
                out.append(
                    snapshots_pb2.SnapshotInfo(
                        generation=generation, reference_time=R_TEST, version=version,
                        kind=snapshot_kinds.kind_of(scope), scope_seconds=max(scope, 0),
                        size=len(blob), sha256=hashlib.sha256(blob).digest(),
                    )
                )  # fmt: skip
        return out

    async def ListSnapshots(self, request: snapshots_pb2.ListSnapshotsRequest, timeout: float) -> object:
        self.lists += 1
        return snapshots_pb2.ListSnapshotsResponse(
            generation=self.generation,
            reference_time=R_TEST,
            interval=86400,
            snapshots=self._infos(self.generation),
        )

    def GetSnapshot(self, request: snapshots_pb2.GetSnapshotRequest, timeout: float) -> object:
        self.generation = 2  # published meanwhile
        scope = snapshot_kinds.scope_of(request.kind, request.scope_seconds, request.timestamp, R_TEST)
        blob = f"v{request.version} {scope} g2".encode()
        (info,) = [i for i in self._infos(2) if i.version == request.version and i.kind == request.kind
                   and i.scope_seconds == request.scope_seconds]  # fmt: skip

        async def chunks() -> AsyncIterator[snapshots_pb2.SnapshotChunk]:
            yield snapshots_pb2.SnapshotChunk(data=blob, info=info)

        return chunks()


R_TEST = 1_750_000_000


async def test_a_generation_replaced_during_the_fetch_is_followed_at_once() -> None:
    """A worker starting while the snapshotter published a new generation listened without one
    and answered 503 for a poll interval (seen in a fault test); now one refresh ends holding the
    new generation."""
    stub = _Replacing()
    cache = SnapshotCache(stub, bytes(32), "public")  # type: ignore[arg-type]
    assert await cache.refresh()
    assert cache.generation is not None and cache.generation.id == 2
    assert stub.lists == 2
    assert cache.unloaded is None
