"""Dynamic deltas (``/delta/...``): coalesced, cached and bounded calls to ``Lookup.ComputeDelta``.

The gateway fixes the reference time R itself, exactly as lookup would (now minus the ingest lag,
rounded down to ``lookup.timestamp_granularity``), and passes it along. The answer for (T, version,
R) then never changes, so it is cached under that key and every request for it within the same
granularity step shares one computation. At most ``max_concurrent`` distinct computations run at
once per worker; a request that would start one more is refused with 429 and ``Retry-After``
instead of queueing without limit. A computation runs in its own task, so a client that hangs up
does not cancel it for the others waiting on it.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import time

import grpc

from lnsync import rpc
from lnsync.memo import Memo
from lnsync.rgs import policy
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc
from services.gateway import metrics
from services.gateway.blobs import Blob
from services.gateway.errors import HttpError, from_grpc

log = logging.getLogger(__name__)

COMPUTE_TIMEOUT = 120.0
CACHE_BYTES = 64 << 20
# Answers smaller than this are not worth compressing.
GZIP_MIN_SIZE = 1024

Key = tuple[int, int, int]  # (last_sync_timestamp, version, reference time)


class DynamicDeltas:
    def __init__(
        self,
        stub: lookup_pb2_grpc.LookupStub,
        *,
        ingest_lag: int,
        granularity: int,
        max_concurrent: int,
        cache_control: str,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self._stub = stub
        self._lag = ingest_lag
        self._granularity = granularity
        self.max_concurrent = max_concurrent
        self._cache_control = cache_control
        self._memo: Memo[Key, Blob] = Memo(cache_bytes, weight=_size, admit=self._admit)
        self._latest_reference = 0
        # When lookup last refused a delta because its sync gate was closed (None once it answers).
        self.gate_closed_at: float | None = None

    def reference_time(self, now: float) -> int:
        return policy.reference_time(now, self._lag, self._granularity)

    @property
    def inflight(self) -> int:
        return self._memo.computing

    @property
    def cached(self) -> tuple[int, int]:
        """(entries, bytes) held."""
        return len(self._memo), self._memo.weight

    async def get(self, last_sync: int, version: int, now: float | None = None) -> Blob:
        key = (last_sync, version, self.reference_time(time.time() if now is None else now))
        memo = self._memo
        if key in memo:
            metrics.DYNAMIC.labels("hit").inc()
        elif memo.is_computing(key):
            metrics.DYNAMIC.labels("coalesced").inc()
        elif memo.computing >= self.max_concurrent:
            metrics.DYNAMIC.labels("rejected").inc()
            raise HttpError(429, f"{self.max_concurrent} dynamic deltas are being computed; retry shortly", 2)
        try:
            return await memo.get(key, functools.partial(self._compute, key))
        finally:
            metrics.DYNAMIC_INFLIGHT.set(memo.computing)

    async def _compute(self, key: Key) -> Blob:
        last_sync, version, R = key
        request = lookup_pb2.ComputeDeltaRequest(
            last_sync_timestamp=last_sync, version=version, reference_time=R
        )
        try:
            info, data = await rpc.join_chunks(self._stub.ComputeDelta(request, timeout=COMPUTE_TIMEOUT))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self.gate_closed_at = time.monotonic()
            metrics.DYNAMIC.labels("failed").inc()
            metrics.UPSTREAM_ERRORS.labels("lookup", exc.code().name).inc()
            log.info("ComputeDelta(%d, v%d, R=%d) failed: %s %s", *key, exc.code().name, exc.details())
            raise from_grpc(exc, "lookup") from None
        if info is None or len(data) != info.size:
            metrics.DYNAMIC.labels("failed").inc()
            raise HttpError(502, "lookup: incomplete answer", retry_after=5)
        compressed = await asyncio.to_thread(gzip.compress, data, 6) if len(data) >= GZIP_MIN_SIZE else None
        # Last-Modified: the reference time, the same for this answer on every replica.
        blob = Blob.of(data, info.timestamp, self._cache_control, R, compressed)
        self.gate_closed_at = None
        metrics.DYNAMIC.labels("computed").inc()
        return blob

    def _admit(self, key: Key, blob: Blob) -> bool:
        if _size(blob) > self._memo.capacity // 4:
            return False  # one huge answer (a full graph) must not evict everything else
        if key[2] > self._latest_reference:
            # Requests never ask for an older reference time again: drop those answers at once.
            self._latest_reference = key[2]
            for old_key in self._memo:
                if old_key[2] < key[2]:
                    self._memo.forget(old_key)
        return key[2] >= self._latest_reference

    async def close(self) -> None:
        await self._memo.close()


def _size(blob: Blob) -> int:
    return len(blob.body) + len(blob.gzip or b"")
