"""Lookup: computes RGS deltas from the store on request (``Lookup.ComputeDelta``).

For a reference time R the answer depends only on gossip seen before R, and persistence never
records a message as seen more than ``ingest_lag`` before it commits it; so once R + ingest_lag has
passed, the answer for (T, R) can never change. Dynamic requests use R = now - ingest_lag rounded
down to ``lookup.timestamp_granularity``, which makes concurrent and repeated requests share R,
and two small caches answer them without repeating work: the live graph at R (most of a delta's
database reads, shared by every T) and the last computed delta set, keyed by (T, R, apply lag) (the
snapshotter asks for v1 and v2 of each scope back to back). A full delta set is ~30 MB at mainnet
scale, so that cache holds one; the gateway keeps the encoded answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from lnsync import db, rpc, schema
from lnsync.chain import chain_hash
from lnsync.commands._common import require_database_url
from lnsync.config import Settings
from lnsync.memo import Memo
from lnsync.memory import release_free_memory
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode, encode_empty
from lnsync.rgs.model import DeltaParams, DeltaSet
from lnsync.service import ReadySignal, run_service
from lnsync.syncgate import SyncGate
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc
from services.lookup.store import GraphAt, load_delta_input, load_graph

log = logging.getLogger(__name__)

COMPUTE_SECONDS = Histogram(
    "lnsync_lookup_compute_seconds",
    "Time to compute a delta set",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
REQUESTS = Counter("lnsync_lookup_requests_total", "ComputeDelta requests", ["version", "outcome"])
# Delta sets and graphs kept (see the module docstring).
DELTA_CACHE_SIZE = 1
GRAPH_CACHE_SIZE = 2
# After a delta this large, freed heap memory is handed back to the system (lnsync/memory.py).
TRIM_AFTER_RECORDS = 20_000
# A client whose last sync is this old has pruned everything it had (LDK forgets data 7 days after
# the blob that wrote it), and retention may have pruned the rows its delta would read: it gets
# the full graph, computed as for T = 0 (the header stays R).
FULL_SYNC_AFTER = 14 * 86400
# A dynamic delta is applied as soon as it is fetched.
DYNAMIC_APPLY_LAG = 600


class LookupService(lookup_pb2_grpc.LookupServicer):
    service_names = ("lnsync.v1.Lookup",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = require_database_url(settings)
        self.chain_hash = chain_hash(settings.network)
        self.pool: Any = None
        self.gate = SyncGate(settings.persistence.target)
        self._limit = asyncio.Semaphore(settings.lookup.max_concurrent)
        self._deltas: Memo[tuple[int, int, int], DeltaSet] = Memo(DELTA_CACHE_SIZE)
        self._graphs: Memo[int, GraphAt] = Memo(GRAPH_CACHE_SIZE)

    def register(self, server: grpc.aio.Server) -> None:
        lookup_pb2_grpc.add_LookupServicer_to_server(self, server)

    async def run(self, ready: ReadySignal) -> None:
        self.pool = await db.create_pool(self.url, max_size=self.settings.lookup.max_concurrent + 2)
        async with self.pool.acquire() as conn:
            await schema.migrate(conn)
        await ready.set(True)
        await asyncio.Event().wait()

    async def close(self) -> None:
        await self.gate.close()
        if self.pool is not None:
            await self.pool.close()

    # -- ComputeDelta -----------------------------------------------------------------------------

    def _reference_time(self, request: lookup_pb2.ComputeDeltaRequest, now: float) -> int:
        if request.HasField("reference_time"):
            return request.reference_time
        gran = self.settings.lookup.timestamp_granularity
        r = int(now) - self.settings.ingest_lag
        return r - r % gran

    async def ComputeDelta(
        self, request: lookup_pb2.ComputeDeltaRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        version = request.version
        if version not in (1, 2):
            REQUESTS.labels(str(version), "invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"version must be 1 or 2, not {version}")
        now = time.time()
        T = request.last_sync_timestamp
        if now + 60 < T:
            REQUESTS.labels(str(version), "invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"last_sync_timestamp {T} is in the future")
        R = self._reference_time(request, now)
        if now < R:
            REQUESTS.labels(str(version), "invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"reference_time {R} is in the future")
        reason = await self.gate.why_not_ready()
        if reason is not None:
            REQUESTS.labels(str(version), "not_synced").inc()
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, reason)
        apply_lag = request.apply_lag if request.HasField("apply_lag") else DYNAMIC_APPLY_LAG
        gran = self.settings.lookup.timestamp_granularity if not request.HasField("reference_time") else 1

        if T > 0 and R - T >= FULL_SYNC_AFTER:
            T = 0
        if T >= R:
            # The client is already at (or past) R: a well-formed "nothing new" blob at its own time.
            blob = encode_empty(self.chain_hash, max(T, R), version)
            info = lookup_pb2.BlobInfo(
                version=version, timestamp=max(T, R), last_sync_timestamp=T, reference_time=R
            )
        else:
            try:
                delta = await self._delta_set(T, R, apply_lag, gran)
            except db.TRANSIENT_ERRORS as exc:
                REQUESTS.labels(str(version), "unavailable").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
            blob = await asyncio.to_thread(encode, delta, version)
            if T == 0 or len(delta.updates) > TRIM_AFTER_RECORDS:
                release_free_memory()  # the delta's transient records were tens of MB
            info = lookup_pb2.BlobInfo(
                version=version,
                timestamp=delta.timestamp,
                last_sync_timestamp=T,
                reference_time=R,
                node_count=len(delta.node_ids),
                announcement_count=len(delta.announcements),
                update_count=len(delta.updates),
            )
        info.size = len(blob)
        info.data_generation = R
        REQUESTS.labels(str(version), "ok").inc()
        first = True
        for chunk in rpc.chunks(blob):
            yield lookup_pb2.BlobChunk(data=chunk, info=info if first else None)
            first = False

    async def _delta_set(self, T: int, R: int, apply_lag: int, granularity: int) -> DeltaSet:
        """Compute (or reuse) the delta set; identical concurrent requests share one computation."""

        async def compute() -> DeltaSet:
            graph = await self._graphs.get(R, lambda: self._load_graph(R))
            async with self._limit:
                started = time.perf_counter()
                async with (
                    self.pool.acquire() as conn,
                    conn.transaction(isolation="repeatable_read", readonly=True),
                ):
                    inp = await load_delta_input(conn, self.chain_hash, T, R, graph)
                params = DeltaParams(timestamp_granularity=granularity, apply_lag=apply_lag)
                delta = await asyncio.to_thread(compute_delta, inp, params)
                COMPUTE_SECONDS.labels("full" if T == 0 else "delta").observe(time.perf_counter() - started)
            return delta

        return await self._deltas.get((T, R, apply_lag), compute)

    async def _load_graph(self, R: int) -> GraphAt:
        async with self._limit:
            started = time.perf_counter()
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                graph = await load_graph(conn, R)
            COMPUTE_SECONDS.labels("graph").observe(time.perf_counter() - started)
        return graph

    # -- GraphSummary ---------------------------------------------------------------------------

    async def GraphSummary(
        self, request: lookup_pb2.GraphSummaryRequest, context: grpc.aio.ServicerContext
    ) -> lookup_pb2.GraphSummaryResponse:
        try:
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(SUMMARY_SQL, int(time.time()) - 14 * 86400)
        except db.TRANSIENT_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        return lookup_pb2.GraphSummaryResponse(
            channels=row["channels"],
            nodes=row["nodes"],
            directions=row["directions"],
            last_gossip_at=row["last_seen"] or 0,
            channel_updates_stored=row["updates"],
            data_generation=row["generation"],
        )


SUMMARY_SQL = """
SELECT
  (SELECT count(*) FROM channel_announcements a
    WHERE (SELECT count(*) FROM channel_directions d
           WHERE d.scid = a.scid AND d.timestamp >= $1) = 2)::int4 AS channels,
  (SELECT count(*) FROM nodes)::int4 AS nodes,
  (SELECT count(*) FROM channel_directions WHERE timestamp >= $1)::int4 AS directions,
  (SELECT floor(extract(epoch FROM max(seen)))::int8 FROM channel_directions) AS last_seen,
  -- Large tables: the planner's estimate (a count would scan millions of rows); small ones, or one
  -- never analysed yet (-1), are counted.
  (SELECT CASE WHEN reltuples >= 100000 THEN reltuples::int8 ELSE (SELECT count(*) FROM channel_updates) END
     FROM pg_class WHERE relname = 'channel_updates') AS updates,
  (SELECT coalesce(max(id), 0) FROM channel_updates) AS generation
"""


async def main(settings: Settings) -> int:
    lk = settings.lookup
    return await run_service("lookup", lk.listen, LookupService(settings), lk.metrics_listen)
