"""Lookup: computes RGS deltas from the store on request (``Lookup.ComputeDelta``).

For a reference time R the answer depends only on gossip seen before R, and persistence never
records a message as seen more than ``ingest_lag`` before it commits it; so once R + ingest_lag has
passed, the answer for (T, R) can never change. Dynamic requests use R = now - ingest_lag rounded
down to ``lookup.timestamp_granularity``, which makes concurrent and repeated requests share R,
and two small caches answer them without repeating work: the live graph at R (most of a delta's
database reads, shared by every T) and the last computed delta set, keyed by (T, R, apply lag) (the
snapshotter asks for v1 and v2 of each scope back to back). A full delta set is ~30 MB at mainnet
scale, so that cache holds one; the gateway keeps the encoded answers.

With ``lookup.database_url`` (a streaming replica) deltas and graphs are read there when the replica
has replayed every transaction committed before R + ingest_lag (all a blob for R may contain);
otherwise, and for a while after the replica failed, they are read from ``database_url``. So a
replica only ever moves work, never changes an answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import grpc

from lnsync import db, rpc, truth
from lnsync.clients.syncgate import SyncGate
from lnsync.config import Settings
from lnsync.memo import Memo
from lnsync.memory import release_free_memory
from lnsync.rgs import policy, proof
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.format import STALE_AFTER
from lnsync.rgs.model import DeltaParams, DeltaSet
from lnsync.service import ReadySignal, run_service
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc, persistence_pb2
from services.lookup.metrics import COMPUTE_SECONDS, PROOFS, READS, REQUESTS
from services.lookup.store import GraphAt, load_delta_input, load_graph

log = logging.getLogger(__name__)

# The replica must have replayed commits this much past R + ingest_lag (commit records reach the WAL
# in about, not exactly, the order of their timestamps).
REPLICA_MARGIN = 1.0
# After a replica error, read the primary this long before trying the replica again.
REPLICA_RETRY_AFTER = 30.0
REPLICA_TIMEOUT = 5.0
# What the replica has replayed: a server not in recovery (a primary) has everything committed.
REPLAY_SQL = (
    "SELECT pg_is_in_recovery() AS standby,"
    " extract(epoch FROM pg_last_xact_replay_timestamp())::float8 AS replayed"
)
# Errors after which the replica is left alone for a while: unreachable, or a query cancelled by a
# recovery conflict (class 40).
REPLICA_ERRORS = (*db.TRANSIENT_ERRORS, asyncpg.exceptions.TransactionRollbackError)
Result = TypeVar("Result")
# Delta sets and graphs kept (see the module docstring).
DELTA_CACHE_SIZE = 1
GRAPH_CACHE_SIZE = 2
# After a delta this large, freed heap memory is handed back to the system (lnsync/memory.py).
TRIM_AFTER_RECORDS = 20_000


class LookupService(db.StoreService, lookup_pb2_grpc.LookupServicer):
    service_names = ("lnsync.v1.Lookup",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.replica_url = settings.lookup.database_url
        self.replica: Any = None
        self._replica_failed_at = -REPLICA_RETRY_AFTER
        self.gate = SyncGate(settings.persistence.target)
        self._limit = asyncio.Semaphore(settings.lookup.max_concurrent)
        self._proving: asyncio.Task[None] | None = None  # one sampled proof at a time
        self._deltas: Memo[tuple[int, int, int], DeltaSet] = Memo(DELTA_CACHE_SIZE)
        self._graphs: Memo[int, GraphAt] = Memo(GRAPH_CACHE_SIZE)

    def register(self, server: grpc.aio.Server) -> None:
        lookup_pb2_grpc.add_LookupServicer_to_server(self, server)

    async def run(self, ready: ReadySignal) -> None:
        await self.connect()
        await ready.set(True)
        await db.watch(self.pool, ready.set)  # health follows the primary (docs/architecture.md)

    async def connect(self) -> None:
        """Open the pools (waiting for the primary) and apply migrations on the primary."""
        size = self.settings.lookup.max_concurrent + 2
        self.pool = await db.open_store(self.url, max_size=size)
        if self.replica_url:  # connects on first use: a replica that is down only costs a fallback
            self.replica = await db.create_pool(self.replica_url, min_size=0, max_size=size)

    async def close(self) -> None:
        await self.gate.close()
        for pool in (self.replica, self.pool):
            if pool is not None:
                await pool.close()

    # -- ComputeDelta -----------------------------------------------------------------------------

    def _reference_time(self, request: lookup_pb2.ComputeDeltaRequest, now: float) -> int:
        if request.HasField("reference_time"):
            return request.reference_time
        return policy.reference_time(
            now, self.settings.ingest_lag, self.settings.lookup.timestamp_granularity
        )

    async def GetServingPolicy(
        self, request: lookup_pb2.GetServingPolicyRequest, context: grpc.aio.ServicerContext
    ) -> lookup_pb2.ServingPolicy:
        return lookup_pb2.ServingPolicy(
            ingest_lag=self.settings.ingest_lag,
            timestamp_granularity=self.settings.lookup.timestamp_granularity,
            versions=policy.VERSIONS,
        )

    async def ComputeDelta(
        self, request: lookup_pb2.ComputeDeltaRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        version = request.version
        problem = policy.version_problem(version)
        if problem is not None:
            REQUESTS.labels(str(version), "invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        now = time.time()
        T = request.last_sync_timestamp
        if policy.in_future(T, now):
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
        apply_lag = request.apply_lag if request.HasField("apply_lag") else policy.DYNAMIC_APPLY_LAG
        gran = self.settings.lookup.timestamp_granularity if not request.HasField("reference_time") else 1

        T = policy.effective_last_sync(T, R)
        if policy.is_nothing_new(T, R):
            timestamp, blob = policy.nothing_new(self.chain_hash, T, R, version)
            info = lookup_pb2.BlobInfo(
                version=version, timestamp=timestamp, last_sync_timestamp=T, reference_time=R
            )
        else:
            try:
                delta = await self._delta_set(T, R, apply_lag, gran)
            except db.TRANSIENT_ERRORS as exc:
                REQUESTS.labels(str(version), "unavailable").inc()
                log.warning("ComputeDelta(%d, v%d): database unavailable: %s", T, version, exc)
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
        REQUESTS.labels(str(version), "ok").inc()
        sample = self.settings.lookup.proof_sample
        if (
            0 < T < R
            and not request.HasField("reference_time")  # dynamic: snapshots are proven by the snapshotter
            and sample
            and random.randrange(sample) == 0
            and (self._proving is None or self._proving.done())
        ):
            self._proving = asyncio.create_task(self._prove_dynamic(T, R, version, blob))
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
                inp = await self._read(R, lambda conn: load_delta_input(conn, self.chain_hash, T, R, graph))
                params = DeltaParams(timestamp_granularity=granularity, apply_lag=apply_lag)
                delta = await asyncio.to_thread(compute_delta, inp, params)
                COMPUTE_SECONDS.labels("full" if T == 0 else "delta").observe(time.perf_counter() - started)
            return delta

        return await self._deltas.get((T, R, apply_lag), compute)

    async def _prove_dynamic(self, T: int, R: int, version: int, blob: bytes) -> None:
        """Prove a dynamic delta (lnsync/rgs/proof.py): the full snapshot at T, then ``blob``, give
        the store's live graph at R. Logged and counted; the answer is long sent."""
        started = time.perf_counter()
        try:
            async with self._limit:
                graph = await self._read(R, lambda conn: truth.live_graph(conn, self.chain_hash, R))
                base_input = await self._read(T, lambda conn: load_delta_input(conn, self.chain_hash, 0, T))
        except db.TRANSIENT_ERRORS as exc:
            PROOFS.labels("error").inc()
            log.warning("cannot prove the dynamic delta (T=%d, R=%d): %s", T, R, exc)
            return

        def check() -> proof.Failure | None:
            base = encode(compute_delta(base_input, DeltaParams()), version)
            return proof.prove_chain(base, T, blob, proof.expect(graph, version), self.chain_hash, R, version)

        failure = await asyncio.to_thread(check)
        seconds = time.perf_counter() - started
        if failure is None:
            PROOFS.labels("passed").inc()
            log.info("dynamic delta (T=%d, R=%d, v%d) proven in %.1f s", T, R, version, seconds)
        else:
            PROOFS.labels("failed").inc()
            log.error("dynamic delta (T=%d, R=%d) failed its proof: %s", T, R, failure)

    async def _load_graph(self, R: int) -> GraphAt:
        async with self._limit:
            started = time.perf_counter()
            graph = await self._read(R, lambda conn: load_graph(conn, R))
            COMPUTE_SECONDS.labels("graph").observe(time.perf_counter() - started)
        return graph

    async def _read(self, R: int, read: Callable[[Any], Awaitable[Result]]) -> Result:
        """``read(conn)`` in one read-only snapshot: on the replica when it holds everything a blob
        for R may contain, else on the primary."""
        if self.replica is not None and time.monotonic() - self._replica_failed_at >= REPLICA_RETRY_AFTER:
            try:
                async with self.replica.acquire(timeout=REPLICA_TIMEOUT) as conn:
                    state = await conn.fetchrow(REPLAY_SQL, timeout=REPLICA_TIMEOUT)
                    if replica_is_current(state["standby"], state["replayed"], R, self.settings.ingest_lag):
                        async with conn.transaction(isolation="repeatable_read", readonly=True):
                            result = await read(conn)
                        READS.labels("replica").inc()
                        return result
            except REPLICA_ERRORS as exc:
                self._replica_failed_at = time.monotonic()
                log.warning(
                    "read replica failed (%s); reading the primary for %.0f s", exc, REPLICA_RETRY_AFTER
                )
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            result = await read(conn)
        READS.labels("primary").inc()
        return result

    # -- GraphSummary ---------------------------------------------------------------------------

    async def GraphSummary(
        self, request: lookup_pb2.GraphSummaryRequest, context: grpc.aio.ServicerContext
    ) -> lookup_pb2.GraphSummaryResponse:
        try:
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(SUMMARY_SQL, int(time.time()) - STALE_AFTER)
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

    async def GetSyncStatus(
        self, request: persistence_pb2.GetSyncStatusRequest, context: grpc.aio.ServicerContext
    ) -> persistence_pb2.SyncStatus:
        """Persistence's sync state, relayed (the gateway does not reach persistence)."""
        try:
            return await self.gate.sync_status()
        except grpc.aio.AioRpcError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"persistence: {exc.code().name}")
            raise  # abort raises; for the type checker


def replica_is_current(standby: bool, replayed: float | None, R: int, ingest_lag: int) -> bool:
    """Whether a server sees every row a blob for reference time R may contain: rows seen before R,
    which persistence commits before R + ingest_lag (docs/architecture.md, "seen")."""
    if not standby:
        return True
    return replayed is not None and replayed >= R + ingest_lag + REPLICA_MARGIN


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
