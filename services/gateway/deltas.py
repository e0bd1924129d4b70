"""Dynamic deltas (``/delta/...``): coalesced, cached and bounded calls to ``Lookup.ComputeDelta``.

The gateway fixes the reference time R itself, exactly as lookup would: by the rule lookup states
in ``Lookup.GetServingPolicy`` (now minus the ingest lag, rounded down to its granularity; asked
again every few minutes), and passes it along. The answer for (T, version,
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
from services.gateway.blobs import Blob, cache_control
from services.gateway.errors import HttpError, from_grpc
from services.gateway.shared import GATE_CLOSED_AT, SharedFacts

log = logging.getLogger(__name__)

COMPUTE_TIMEOUT = 120.0
# After UNAVAILABLE or CANCELLED (which the channel already retried on every lookup it knows): how
# long one more attempt may wait for a lookup to be reachable (lnsync.rpc.Remote.call). In a rollout
# the channel can lose every pod it knows before it re-resolves the name; a lookup that is really
# down still answers 503 within this bound.
READY_WAIT = 6.0
# How long lookup's serving policy is used before it is asked again.
POLICY_TTL = 300.0
POLICY_TIMEOUT = 5.0
CACHE_BYTES = 64 << 20
# Answers smaller than this are not worth compressing.
GZIP_MIN_SIZE = 1024

Key = tuple[int, int, int]  # (last_sync_timestamp, version, reference time)


class DynamicDeltas:
    def __init__(
        self,
        lookup: rpc.Remote,
        *,
        max_concurrent: int,
        cache: tuple[int, int, int, int],
        cache_bytes: int = CACHE_BYTES,
        shared: SharedFacts | None = None,
    ) -> None:
        """``cache``: the gateway's Cache-Control seconds (max-age, s-maxage, stale-while-revalidate,
        stale-if-error); a delta's max-age and s-maxage are capped at one granularity step.
        ``shared``: where the workers keep what lookup's sync gate last said."""
        self._lookup = lookup
        self._stub = lookup.stub(lookup_pb2_grpc.LookupStub)
        self._policy: lookup_pb2.ServingPolicy | None = None
        self._policy_at = -POLICY_TTL
        self._policy_lock = asyncio.Lock()
        self.max_concurrent = max_concurrent
        self._cache = cache
        self._cache_control = ""
        self._memo: Memo[Key, Blob] = Memo(cache_bytes, weight=_size, admit=self._admit)
        self._latest_reference = 0
        self._shared = shared or SharedFacts()

    async def reference_time(self, now: float) -> int:
        """R for a request at ``now``, by lookup's serving policy."""
        served = await self._serving_policy()
        return policy.reference_time(now, served.ingest_lag, served.timestamp_granularity)

    async def _serving_policy(self) -> lookup_pb2.ServingPolicy:
        if self._policy is not None and time.monotonic() - self._policy_at < POLICY_TTL:
            return self._policy
        async with self._policy_lock:
            if self._policy is not None and time.monotonic() - self._policy_at < POLICY_TTL:
                return self._policy
            request = lookup_pb2.GetServingPolicyRequest()
            try:
                answer: lookup_pb2.ServingPolicy = await self._lookup.call(
                    lambda: self._stub.GetServingPolicy(request, timeout=POLICY_TIMEOUT), READY_WAIT
                )
            except grpc.aio.AioRpcError as exc:
                metrics.UPSTREAM_ERRORS.labels("lookup", exc.code().name).inc()
                if self._policy is None:
                    raise from_grpc(exc, "lookup") from None
                log.info("lookup's serving policy not refreshed (%s); keeping it", exc.code().name)
                self._policy_at = time.monotonic()
                return self._policy
            if answer.timestamp_granularity == 0:
                raise HttpError(502, "lookup: invalid serving policy", retry_after=5)
            step = answer.timestamp_granularity
            max_age, s_maxage, *stale = self._cache
            self._cache_control = cache_control(min(step, max_age), min(step, s_maxage), *stale)
            self._policy, self._policy_at = answer, time.monotonic()
            return answer

    def gate_closed_at(self) -> float | None:
        """When lookup last refused a delta because its sync gate was closed, by any worker (wall
        clock; None once a delta was answered since)."""
        return self._shared.get(GATE_CLOSED_AT)

    @property
    def inflight(self) -> int:
        return self._memo.computing

    @property
    def cached(self) -> tuple[int, int]:
        """(entries, bytes) held."""
        return len(self._memo), self._memo.weight

    async def get(self, last_sync: int, version: int, now: float | None = None) -> Blob:
        key = (last_sync, version, await self.reference_time(time.time() if now is None else now))
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

        async def attempt() -> tuple[lookup_pb2.BlobInfo | None, bytes]:
            return await rpc.join_chunks(self._stub.ComputeDelta(request, timeout=COMPUTE_TIMEOUT))

        def retrying(first: grpc.aio.AioRpcError) -> None:
            metrics.UPSTREAM_ERRORS.labels("lookup", first.code().name).inc()

        try:
            info, data = await self._lookup.call(attempt, READY_WAIT, on_retry=retrying)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self._shared.set(GATE_CLOSED_AT, time.time())
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
        self._shared.clear(GATE_CLOSED_AT)
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
