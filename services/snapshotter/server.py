"""Snapshotter: precomputes RGS snapshots for a ladder of scopes and serves them.

Once the first full graph sync is done, every ``snapshotter.interval`` seconds (aligned to the
epoch) it computes a new *generation* for reference time R: for each scope S of the ladder
(:mod:`lnsync.rgs.ladder`) the delta against R - S, plus the full snapshot and the "nothing new"
blob, each in v1 and v2, gzip-compressed once. The deltas come from the lookup service with R as
reference time and the interval as apply lag (a client may fetch a snapshot up to an interval after
R), so the blobs are exactly what lookup's engine decides. A generation is written to PostgreSQL and
published atomically (``snapshot_current``); only one replica generates at a time (advisory lock);
every replica serves the current generation from memory and picks up new ones within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import time
from collections.abc import Awaitable
from typing import Any

import grpc

from lnsync import db, rpc, truth
from lnsync.clients import snapshots as snapshot_kinds
from lnsync.clients.syncgate import SyncGate
from lnsync.config import Settings
from lnsync.memory import release_free_memory
from lnsync.rgs import columnar, ladder, policy, proof
from lnsync.rgs.model import DeltaInput
from lnsync.service import ReadySignal, run_service
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc
from services.snapshotter import storage
from services.snapshotter.metrics import (
    CURRENT_REFERENCE,
    GENERATION_PROGRESS,
    GENERATION_SCOPES,
    GENERATION_SECONDS,
    INTERVAL,
    PROOF_FAILING,
    PROOF_FAILURES,
    PROOF_SECONDS,
    REJECTED,
    SERVED,
    TAKEOVERS,
)
from services.snapshotter.storage import Generation, StoredBlob

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 300.0
# A lookup call that lost its connection (every lookup pod replaced in a rollout) waits this long
# for one to be reachable and is made once more, rather than failing the generation.
LOOKUP_READY_WAIT = 30.0
RELOAD_EVERY = 2.0
# The longest a ListSnapshots long poll waits for a new generation.
MAX_LONG_POLL = 60
# How often the sync state is checked before the first full sync (a cheap cached call): the first
# generation should follow the sync within seconds.
SYNC_POLL = 2.0
# The earliest reference time a generation may have (2017-07-14, before any Lightning gossip): every
# scope of the ladder (at most ~42 days) then starts after the epoch, so R - scope is a valid uint32.
MIN_REFERENCE_TIME = 1_500_000_000
# What lookup's deltas read (ANALYZEd before the first generation).
GRAPH_TABLES = (
    "channel_announcements",
    "channel_updates",
    "channel_directions",
    "node_announcements",
    "nodes",
)
# After a generation failed its proof, the next attempt (the same store gives the same verdict; an
# operator's Regenerate tries at once).
PROOF_RETRY = 3600.0


# A chain to prove: (base R, version, scope, base blob, what the client holds after it if kept).
Chain = tuple[int, int, int, bytes, columnar.State | None]


class ProofFailed(Exception):
    """A generation failed its proof and was not published."""

    def __init__(self, generation: int, reference_time: int, failure: proof.Failure) -> None:
        super().__init__(f"generation {generation} for R={reference_time} failed its proof: {failure}")
        self.reference_time = reference_time
        self.failure = failure


def reference_time_problem(
    R: int, now: float, ingest_lag: int, current: int | None, replace_newer: bool
) -> tuple[str, str] | None:
    """Why ``R`` may not be a new generation's reference time, as (metric reason, sentence), or None.

    ``current`` is the reference time of the generation being served (None before the first).
    """
    if now - ingest_lag < R:
        return "recent_reference_time", (
            f"reference_time {R} is too recent: gossip seen before it may still be committing"
        )
    if R < MIN_REFERENCE_TIME:
        return "old_reference_time", f"reference_time {R} is before {MIN_REFERENCE_TIME} (2017-07-14)"
    if current is not None and current > R and not replace_newer:
        return "older_than_current", (
            f"reference_time {R} is older than the current generation's ({current}); "
            "set replace_newer to serve an older generation"
        )
    return None


class SnapshotterService(db.StoreService, snapshots_pb2_grpc.SnapshotsServicer):
    service_names = ("lnsync.v1.Snapshots",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.interval = settings.snapshotter.interval
        INTERVAL.set(self.interval)
        self.ladder = ladder.scopes(self.interval)
        self.gate = SyncGate(settings.persistence.target)
        self._lookup = rpc.Remote(settings.lookup.target)
        self.lookup = self._lookup.stub(lookup_pb2_grpc.LookupStub)
        self.generation: Generation | None = None
        # The newest generation made that failed its proof: (R, first difference), until one passes.
        self.proof_failure: tuple[int, str] | None = None
        # The client states (per version, columnar) the last passing proof left, by generation: the
        # base of the next generation's chain, instead of applying its full blob again (~10 MB
        # per version at mainnet scale).
        self._proven: dict[int, dict[int, columnar.State]] = {}
        self._checked_at = 0.0
        self._reload = asyncio.Lock()
        self._generate = asyncio.Lock()
        # Set (and replaced) whenever the generation held changes: the long polls wait on it.
        self._changed = asyncio.Event()

    def register(self, server: grpc.aio.Server) -> None:
        snapshots_pb2_grpc.add_SnapshotsServicer_to_server(self, server)

    async def close(self) -> None:
        await self.gate.close()
        await self._lookup.close()
        if self.pool is not None:
            await self.pool.close()

    # -- generating ---------------------------------------------------------------------------------

    def aligned_reference_time(self, now: float) -> int:
        return policy.reference_time(now, self.settings.ingest_lag, self.interval)

    async def run(self, ready: ReadySignal) -> None:
        # No database watch: a snapshotter serves the generation it holds while the store is away.
        self.pool = await db.open_store(self.url, max_size=4)
        await self._refresh(force=True)
        await ready.set(True)
        said = None
        while True:
            reason = await self.gate.why_not_ready()
            if reason is not None:
                if reason != said:
                    log.info("waiting before the first generation: %s", reason)
                    said = reason
                await asyncio.sleep(SYNC_POLL)
                continue
            aligned = R = self.aligned_reference_time(time.time())
            current = self.generation
            if current is None:
                await self._analyze()
            if self.settings.snapshotter.first_after_sync:
                R = await self._after_first_sync(R)
            if current is None or current.reference_time < R:
                try:
                    await self.regenerate(R)
                except ProofFailed:
                    await asyncio.sleep(PROOF_RETRY)  # logged and counted where it failed
                    continue
                except (grpc.aio.AioRpcError, *db.TRANSIENT_ERRORS) as exc:
                    log.warning("generation for %d failed (%s); retrying in 30 s", R, exc)
                    await asyncio.sleep(30)
                    continue
            # Sleep until the next reference time is past the ingest lag.
            wake = aligned + self.interval + self.settings.ingest_lag + 5
            await asyncio.sleep(max(5.0, wake - time.time()))

    async def _analyze(self) -> None:
        """Refresh the planner's statistics of the graph tables before the first generation.

        A first sync fills empty tables with the whole graph within a minute or two; until
        autovacuum's next round (``autovacuum_naptime``, a minute by default) notices, PostgreSQL
        plans lookup's queries for the near-empty tables it last saw (in bench_coldstart the first
        scope of the first generation took 22.8 s, the last 1.1 s). Runs while the ingest lag is
        waited out anyway; a failure only costs that speed."""
        started = time.perf_counter()
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(f"ANALYZE {', '.join(GRAPH_TABLES)}")
        except db.TRANSIENT_ERRORS as exc:
            log.warning("ANALYZE before the first generation failed (%s)", exc)
            return
        log.info("graph tables analyzed in %.1f s", time.perf_counter() - started)

    async def _after_first_sync(self, R: int) -> int:
        """``R``, unless it precedes the first full sync and no generation is at least that recent:
        gossip seen after R is not in R's generation, so one made now for R would hold a fraction of
        the graph until the next aligned time (up to an interval away). Then: the earliest time at
        which the whole first sync is in, once the ingest lag lets us use it (off the grid; the
        ladder serves any reference time)."""
        synced_at = (await self.gate.status()).fully_synced_at
        current = self.generation
        if synced_at < R or (current is not None and current.reference_time > synced_at):
            return R
        ready_at = synced_at + 1 + self.settings.ingest_lag
        await asyncio.sleep(max(0.0, ready_at - time.time()))
        log.info("first full sync at %d is after the aligned reference time %d: generating now", synced_at, R)
        return int(time.time()) - self.settings.ingest_lag

    async def regenerate(self, reference_time: int) -> tuple[int, float]:
        """Compute, store and publish a generation for ``reference_time``; return (id, seconds).

        Only one replica generates at a time: a replica that finds the lock taken waits for the
        other's generation to be published and serves it. If the other ends without publishing
        (killed mid-generation: its session, and so the lock, dies with it), the waiting replica
        holds the lock by then and generates itself: a takeover bounded by one generation's time.
        """
        async with self._generate, self.pool.acquire() as lock_conn:
            if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", storage.SNAPSHOT_LOCK):
                log.info("another snapshotter is generating; waiting for its generation")
                await self._refresh(force=True)
                before = self.generation.id if self.generation else None
                await lock_conn.execute("SELECT pg_advisory_lock($1)", storage.SNAPSHOT_LOCK)
                await self._refresh(force=True)
                gen = self.generation
                if gen is not None and (gen.id != before or gen.reference_time >= reference_time):
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", storage.SNAPSHOT_LOCK)
                    return gen.id, 0.0
                TAKEOVERS.inc()
                log.warning("the other snapshotter ended without publishing; generating R=%d", reference_time)
            try:
                return await self._generate_locked(reference_time)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", storage.SNAPSHOT_LOCK)

    async def _generate_locked(self, R: int) -> tuple[int, float]:
        started = time.perf_counter()
        work = [(scope, max(R - scope, 0)) for scope in self.ladder] + [(ladder.FULL, 0)]
        GENERATION_SCOPES.set(len(work) + 1)
        GENERATION_PROGRESS.set(0)
        async with self.pool.acquire() as conn:
            gen_id = await storage.create_generation(conn, R, self.interval)
        log.info("generation %d for R=%d: %d scopes x v1+v2", gen_id, R, len(work) + 1)
        made: dict[tuple[int, int], StoredBlob] = {}
        for i, (scope, last_sync) in enumerate(work, start=1):
            for version in policy.VERSIONS:
                blob = made[(version, scope)] = await self._compute(last_sync, R, version, scope)
                async with self.pool.acquire() as conn:
                    await storage.add_blob(conn, gen_id, blob)
            GENERATION_PROGRESS.set(i)
            log.info(
                "generation %d: scope %d of %d (%s) done, v2 %d bytes",
                gen_id, i, len(work) + 1, "full" if scope == ladder.FULL else f"{scope}s", len(blob.blob),
            )  # fmt: skip
        for version in policy.VERSIONS:
            empty = _nothing_new(self.chain_hash, R, R, version)
            async with self.pool.acquire() as conn:
                await storage.add_blob(conn, gen_id, empty)
        GENERATION_PROGRESS.set(len(work) + 1)
        try:
            if self.settings.snapshotter.prove:
                await self._prove(gen_id, R, made)
        finally:
            # The blobs are stored; the generation served is loaded back from the store below,
            # next to the previous one until it replaces it: not a third copy of them besides.
            # The proof's transient arrays (~50 MB at mainnet scale) were freed in the worker
            # thread's malloc arena, which the event loop's thread does not reuse: trimmed, the
            # generation loaded next is not allocated on top of them (docs/benchmarks.md).
            made.clear()
            release_free_memory()
        seconds = time.perf_counter() - started
        async with self.pool.acquire() as conn:
            await storage.publish(conn, gen_id, seconds, self.settings.snapshotter.keep_generations)
        GENERATION_SECONDS.observe(seconds)
        log.info("generation %d for R=%d published in %.1f s", gen_id, R, seconds)
        await self._refresh(force=True)
        release_free_memory()  # the previous generation's blobs (tens of MB at mainnet scale)
        return gen_id, seconds

    async def _prove(self, gen_id: int, R: int, made: dict[tuple[int, int], StoredBlob]) -> None:
        """Prove generation ``gen_id`` (lnsync/rgs/proof.py) or raise ProofFailed: its full blobs
        against the store's live graph at R, the scope served to the previous generation's clients
        after its full blob, and ``proof_samples`` scopes after a full snapshot at their start."""
        started = time.perf_counter()
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            graph = await truth.live_graph(conn, self.chain_hash, R)
        release_free_memory()  # what the truth read and making the ladder left freed (COPY, gRPC, gzip)
        chains: list[Chain] = []
        previous = self.generation
        if previous is not None and previous.reference_time < R:
            scope = policy.choose_snapshot(previous.reference_time, R, self.ladder).scope
            if scope > 0:
                for version in policy.VERSIONS:
                    base = previous.blobs.get((version, ladder.FULL))
                    if base is not None:
                        kept = self._proven.get(previous.id, {}).get(version)
                        chains.append((previous.reference_time, version, scope, base.blob, kept))
        for scope in random.sample(
            self.ladder, min(self.settings.snapshotter.proof_samples, len(self.ladder))
        ):
            if R - scope >= MIN_REFERENCE_TIME:
                base_blob = await self._compute(0, R - scope, 2, ladder.FULL, compress=False)
                chains.append((R - scope, 2, scope, base_blob.blob, None))

        proven: dict[int, columnar.State] = {}

        def check(graph: DeltaInput, chains: list[Chain]) -> proof.Failure | None:
            for v in policy.VERSIONS:
                expected = proof.expect(graph, v)
                failure = proof.prove_full(
                    made[(v, ladder.FULL)].blob, expected, self.chain_hash, R, v, proven
                )
                for base_R, _, scope, base, kept in (c for c in chains if c[1] == v):
                    if failure is None:
                        scoped = made[(v, scope)].blob
                        failure = proof.prove_chain(
                            base, base_R, scoped, expected, self.chain_hash, R, v, base_state=kept
                        )
                if failure is not None:
                    return failure
            return None

        failure = await asyncio.to_thread(check, graph, chains)
        channels, chain_count = len(graph.channels), len(chains)
        del graph, chains  # before the caller trims the heap
        seconds = time.perf_counter() - started
        PROOF_SECONDS.observe(seconds)
        if failure is None:
            PROOF_FAILING.set(0)
            if self.proof_failure is not None:
                self.proof_failure = None
                self._wake_long_polls()
            # What a client holds after this generation's full blobs: the next chain's base.
            self._proven = {gen_id: proven}
            log.info(
                "generation %d proven in %.1f s: full v1+v2 and %d chains over %d channels",
                gen_id, seconds, chain_count, channels,
            )  # fmt: skip
            return
        PROOF_FAILURES.labels(failure.check).inc()
        PROOF_FAILING.set(1)
        self.proof_failure = (R, str(failure))
        self._wake_long_polls()  # the gateways show it (status page, /readyz) at once
        error = ProofFailed(gen_id, R, failure)
        log.error("%s; not published, the previous generation keeps serving", error)
        raise error

    async def _compute(
        self, last_sync: int, R: int, version: int, scope: int, compress: bool = True
    ) -> StoredBlob:
        """Lookup's blob for (T, R) as a stored snapshot; ``compress=False`` for one only proven
        against (no gzip form: ~0.2 s and a few MB at mainnet scale saved)."""
        request = lookup_pb2.ComputeDeltaRequest(
            last_sync_timestamp=last_sync,
            version=version,
            reference_time=R,
            apply_lag=ladder.apply_lag(
                self.interval, self.settings.ingest_lag, self.settings.gateway.cache_lifetime
            ),
        )

        def ask() -> Awaitable[tuple[Any, bytes]]:
            return rpc.join_chunks(self.lookup.ComputeDelta(request, timeout=LOOKUP_TIMEOUT))

        info, data = await self._lookup.call(ask, LOOKUP_READY_WAIT)
        compressed = await asyncio.to_thread(gzip.compress, data, 6) if compress else b""
        return StoredBlob(
            version=version,
            scope=scope,
            last_sync=last_sync,
            timestamp=info.timestamp,
            node_count=info.node_count,
            announcement_count=info.announcement_count,
            update_count=info.update_count,
            sha256=storage.sha256(data),
            blob=data,
            gzip=compressed,
        )

    async def _refresh(self, force: bool = False) -> None:
        """Follow snapshot_current (another replica may have published a newer generation)."""
        now = time.monotonic()
        if not force and now - self._checked_at < RELOAD_EVERY:
            return
        async with self._reload:
            if not force and time.monotonic() - self._checked_at < RELOAD_EVERY:
                return
            async with self.pool.acquire() as conn:
                gen_id = await storage.current_generation_id(conn)
                if gen_id is not None and (self.generation is None or self.generation.id != gen_id):
                    loaded = await storage.load_generation(conn, gen_id)
                    if loaded is not None:
                        self.generation = loaded
                        self._wake_long_polls()
                        CURRENT_REFERENCE.set(loaded.reference_time)
                        log.info("serving generation %d (R=%d)", loaded.id, loaded.reference_time)
            self._checked_at = time.monotonic()

    # -- serving ------------------------------------------------------------------------------------

    async def GetSnapshot(
        self, request: snapshots_pb2.GetSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        problem = policy.version_problem(request.version)
        if problem is not None:
            REJECTED.labels("GetSnapshot", "version").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if policy.in_future(request.timestamp, time.time()):
            REJECTED.labels("GetSnapshot", "future_timestamp").inc()
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"timestamp {request.timestamp} is in the future"
            )
        try:
            await self._refresh()
        except db.TRANSIENT_ERRORS as exc:
            log.warning("cannot check for a newer generation (%s); serving the one in memory", exc)
        gen = self.generation
        if gen is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, "no snapshot generation yet (waiting for the first full sync)"
            )
        assert gen is not None
        if request.kind != snapshots_pb2.SNAPSHOT_KIND_UNSPECIFIED:  # the one a listing named
            scope = snapshot_kinds.scope_of(request.kind, request.scope_seconds, 0, gen.reference_time)
            stored = gen.blobs.get((request.version, scope))
            if stored is None or request.kind not in snapshots_pb2.SnapshotKind.values():
                REJECTED.labels("GetSnapshot", "no_such_snapshot").inc()
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"generation {gen.id} has no snapshot of kind {request.kind}, "
                    f"scope {request.scope_seconds}",
                )
        else:
            scope = policy.choose_snapshot(request.timestamp, gen.reference_time, self.ladder).scope
            stored = gen.blobs.get((request.version, scope))
            if stored is None:
                await context.abort(grpc.StatusCode.INTERNAL, f"generation {gen.id} lacks scope {scope}")
        assert stored is not None
        if request.kind == snapshots_pb2.SNAPSHOT_KIND_UNSPECIFIED and policy.ahead_of_generation(
            request.timestamp, gen.reference_time
        ):
            stored = _nothing_new(self.chain_hash, request.timestamp, gen.reference_time, request.version)
        SERVED.labels(str(request.version), ladder.Choice(stored.scope).kind).inc()
        payload = stored.gzip if request.gzip else stored.blob
        info = snapshots_pb2.SnapshotInfo(
            generation=gen.id,
            reference_time=gen.reference_time,
            scope_seconds=max(stored.scope, 0),
            kind=snapshot_kinds.kind_of(stored.scope),
            last_sync_timestamp=stored.last_sync,
            version=stored.version,
            size=len(stored.blob),
            sha256=stored.sha256,
            gzip_size=len(stored.gzip),
            gzip=request.gzip,
            blob=lookup_pb2.BlobInfo(
                version=stored.version,
                timestamp=stored.timestamp,
                last_sync_timestamp=stored.last_sync,
                reference_time=gen.reference_time,
                size=len(stored.blob),
                node_count=stored.node_count,
                announcement_count=stored.announcement_count,
                update_count=stored.update_count,
            ),
        )
        first = True
        for chunk in rpc.chunks(payload):
            yield snapshots_pb2.SnapshotChunk(data=chunk, info=info if first else None)
            first = False

    async def ListSnapshots(
        self, request: snapshots_pb2.ListSnapshotsRequest, context: grpc.aio.ServicerContext
    ) -> snapshots_pb2.ListSnapshotsResponse:
        with contextlib.suppress(*db.TRANSIENT_ERRORS):
            await self._refresh()
        if request.wait_seconds:
            await self._wait_for_change(request.unless_generation, min(request.wait_seconds, MAX_LONG_POLL))
        gen = self.generation
        resp = snapshots_pb2.ListSnapshotsResponse(interval=self.interval)
        if self.proof_failure is not None:
            resp.proof_failure.reference_time, resp.proof_failure.problem = self.proof_failure
        if gen is None:
            return resp
        resp.generation, resp.reference_time, resp.generated_at = (
            gen.id,
            gen.reference_time,
            int(gen.published_at),
        )
        for (version, scope), b in sorted(gen.blobs.items()):
            resp.snapshots.append(
                snapshots_pb2.SnapshotInfo(
                    generation=gen.id,
                    reference_time=gen.reference_time,
                    scope_seconds=max(scope, 0),
                    kind=snapshot_kinds.kind_of(scope),
                    last_sync_timestamp=b.last_sync,
                    version=version,
                    size=len(b.blob),
                    sha256=b.sha256,
                    gzip_size=len(b.gzip),
                )
            )
        return resp

    def _wake_long_polls(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_for_change(self, unless: int, seconds: float) -> None:
        """Return once the generation held is not ``unless`` (0: none) or this replica's proof
        verdict changed, or after ``seconds``. One this replica publishes wakes the waiters at
        once; another replica's is seen within RELOAD_EVERY (the store is looked at again that
        often while waiting)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        failing = self.proof_failure
        while (self.generation.id if self.generation else 0) == unless and self.proof_failure == failing:
            left = deadline - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, RELOAD_EVERY)):  # see lnsync.rpc.Remote.ready
                    await self._changed.wait()
            with contextlib.suppress(*db.TRANSIENT_ERRORS):
                await self._refresh()

    async def Regenerate(
        self, request: snapshots_pb2.RegenerateRequest, context: grpc.aio.ServicerContext
    ) -> snapshots_pb2.RegenerateResponse:
        reason = await self.gate.why_not_ready()
        if reason is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, reason)
        R = (
            request.reference_time
            if request.HasField("reference_time")
            else self.aligned_reference_time(time.time())
        )
        with contextlib.suppress(*db.TRANSIENT_ERRORS):
            await self._refresh(force=True)  # another replica may have published a newer one
        current = self.generation.reference_time if self.generation is not None else None
        problem = reference_time_problem(
            R, time.time(), self.settings.ingest_lag, current, request.replace_newer
        )
        if problem is not None:
            REJECTED.labels("Regenerate", problem[0]).inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem[1])
        try:
            gen_id, seconds = await self.regenerate(R)
        except ProofFailed as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except grpc.aio.AioRpcError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"lookup failed: {exc.details()}")
        return snapshots_pb2.RegenerateResponse(generation=gen_id, reference_time=R, seconds=seconds)


def _nothing_new(chain_hash: bytes, last_sync: int, reference_time: int, version: int) -> StoredBlob:
    """The "nothing new" blob (:func:`lnsync.rgs.policy.nothing_new`) as a stored snapshot."""
    timestamp, data = policy.nothing_new(chain_hash, last_sync, reference_time, version)
    return StoredBlob(
        version, ladder.NOTHING_NEW, timestamp, timestamp, 0, 0, 0,
        storage.sha256(data), data, gzip.compress(data, 6),
    )  # fmt: skip


async def main(settings: Settings) -> int:
    s = settings.snapshotter
    return await run_service("snapshotter", s.listen, SnapshotterService(settings), s.metrics_listen)
