"""Persistence: receives gossip over gRPC (``Persistence.Ingest``) and stores it in PostgreSQL.

Per Ingest stream, a reader task checks every message (:mod:`services.persistence.checks`) and
puts jobs on the process's one bounded queue (waiting when it is full, which stops reading the
stream: gRPC flow control then slows the sender); the handler itself sends cumulative
acknowledgements as the one writer task (:mod:`services.persistence.writer`) commits. Retention
runs beside it (:mod:`services.persistence.retention`). Health is SERVING while the database
answers; when it does not, nothing crashes: writes wait and retry, and streams stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import operator
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from lnsync import db
from lnsync.chain.sources import ChainUnavailable
from lnsync.chain.verifier import FundingVerifier
from lnsync.chain.verifier import from_settings as verifier_from_settings
from lnsync.config import Settings
from lnsync.db import RETRYABLE
from lnsync.gossip import messages as m
from lnsync.gossip.errors import GossipError
from lnsync.rgs import rules
from lnsync.schema.columns import INT8_MIN, to_u64
from lnsync.service import ReadySignal, run_service
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc
from services.observer import job as observer
from services.observer.queries import summarised_until
from services.persistence import peers, retention, spent
from services.persistence.checks import check_message, check_updates
from services.persistence.ingest import Entry, IngestQueue, Job, StreamState
from services.persistence.metrics import DATABASE_UP, REFUSED
from services.persistence.store import to_timestamp
from services.persistence.writer import Writer

log = logging.getLogger(__name__)

MAX_SOURCE = 64
MAX_CACHED_PEERS = 10_000
MAX_FUNDING_SATS = 21_000_000 * 100_000_000
_ACCEPT_SLICE = 250  # messages of a request checked between two yields to the event loop
QUEUE_BATCHES = 4  # the queue holds this many maximal batches
DB_CHECK_INTERVAL = 2.0
GC_THRESHOLDS = (50_000, 20, 100)
FIRST_PRUNE_DELAY = 60.0
# KnownChannels: at most this many channels per call (a downloader's validator holds 400k), read
# and sent this many at a time so neither side holds the whole list in one message.
MAX_KNOWN_CHANNELS = 400_000
KNOWN_CHANNELS_CHUNK = 5_000
# The database is down or not connected yet: the caller may retry later.
UNAVAILABLE: tuple[type[BaseException], ...] = (*RETRYABLE, ConnectionError)


# A spent-output recheck that failed for these reasons is tried again at the next interval.
SPENT_RETRY: tuple[type[BaseException], ...] = (ChainUnavailable, *RETRYABLE)


class StreamError(Exception):
    """A producer broke the stream protocol (or the request cannot be served now); the call ends
    with ``code`` and is counted under ``reason``."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.reason = reason


async def _refuse(context: grpc.aio.ServicerContext, rpc_name: str, exc: StreamError) -> None:
    REFUSED.labels(rpc_name, exc.reason).inc()
    await context.abort(exc.code, exc.details)


def _check_peer_id(peer_id: str) -> None:
    problem = peers.peer_id_problem(peer_id)
    if problem is not None:
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, problem, "invalid_peer_id")


def _too_many(exc: peers.TooManyPeers) -> StreamError:
    return StreamError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), "too_many_peers")


class PersistenceService(db.StoreService, persistence_pb2_grpc.PersistenceServicer):
    service_names = ("lnsync.v1.Persistence",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        p = settings.persistence
        self.max_batch = p.max_batch
        self.queue = IngestQueue(QUEUE_BATCHES * p.max_batch)
        self.writer: Writer | None = None
        self._ready: ReadySignal | None = None
        self._peer_nums: dict[str, int] = {}

    def register(self, server: grpc.aio.Server) -> None:
        persistence_pb2_grpc.add_PersistenceServicer_to_server(self, server)

    # -- life cycle -------------------------------------------------------------------------------

    async def run(self, ready: ReadySignal) -> None:
        self._ready = ready
        p = self.settings.persistence
        # Ingest allocates several container objects per message; with the default thresholds the
        # cyclic collector runs every few hundred messages and re-scans everything queued and
        # cached, which doubled the writer's CPU time (bench/bench_ingest.py). Collect less often
        # and leave what exists at start-up out of it.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        pool = await db.open_store(self.url, min_size=2, max_size=8)
        self.pool = pool
        self.writer = Writer(
            pool,
            self.queue,
            ingest_lag=self.settings.ingest_lag,
            max_batch=p.max_batch,
            on_db_state=self._db_state,
        )
        await self._db_state(True)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.writer.run(), name="persistence-writer")
            # Reachable is not enough while the writer still fails (e.g. a full disk).
            healthy = lambda: self.writer is None or not self.writer.failing  # noqa: E731
            watch = db.watch(pool, self._db_state, interval=DB_CHECK_INTERVAL, healthy=healthy)
            tasks.create_task(watch, name="persistence-db-watch")
            if p.prune_interval:
                tasks.create_task(self._retention(p.prune_interval), name="persistence-retention")
            verifier = verifier_from_settings(self.settings)
            if verifier is not None and self.settings.chain.recheck_interval:
                tasks.create_task(self._recheck_spent(verifier), name="persistence-spent")
            if p.observation_interval:
                job = observer.run(
                    pool,
                    interval=p.observation_interval,
                    max_delay=p.observation_max_delay,
                    ingest_lag=self.settings.ingest_lag,
                    summary_retention=p.observation_summary_retention,
                )
                tasks.create_task(job, name="persistence-observer")

    async def close(self) -> None:
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 5)
            except TimeoutError:
                self.pool.terminate()

    async def _db_state(self, ok: bool) -> None:
        DATABASE_UP.set(ok)
        if self._ready is not None and self._ready.is_ready != ok:
            await self._ready.set(ok)

    async def _retention(self, interval: int) -> None:
        p = self.settings.persistence
        await asyncio.sleep(min(FIRST_PRUNE_DELAY, interval))
        while True:
            started = time.monotonic()
            try:
                now = time.time()
                keep = p.observation_retention
                if p.observation_interval:  # spare the raw rows the observer has not summarised yet
                    async with self.pool.acquire() as conn:
                        done = await summarised_until(conn)
                    keep = observer.raw_retention(keep, done, now=now, max_delay=p.observation_max_delay)
                stats = await retention.prune(
                    self.pool,
                    now=now,
                    superseded_retention=p.superseded_retention,
                    pending_update_ttl=p.pending_update_ttl,
                    observation_retention=keep,
                )
                async with self.pool.acquire() as conn:
                    empty = await peers.prune_empty_peers(conn)
            except RETRYABLE as exc:
                log.warning("retention pass failed (%s); next try in %d s", exc, interval)
            except Exception:  # a bug must not end retention for the life of the process
                log.exception("retention pass failed; next try in %d s", interval)
            else:
                log.info(
                    "retention pass in %.1f s: %s, %d empty peers", time.monotonic() - started, stats, empty
                )
            await asyncio.sleep(interval)

    async def _recheck_spent(self, verifier: FundingVerifier) -> None:
        interval = self.settings.chain.recheck_interval
        while True:
            await asyncio.sleep(interval)
            started = time.monotonic()
            try:
                result = await spent.recheck(self.pool, verifier)
            except SPENT_RETRY as exc:
                log.warning("spent-output recheck abandoned (%s); next in %d s", exc, interval)
            except Exception:  # a bug must not end the rechecks for the life of the process
                log.exception("spent-output recheck failed; next in %d s", interval)
            else:
                if result is not None:
                    log.info(
                        "spent-output recheck in %.1f s: %d checked, %d spent",
                        time.monotonic() - started,
                        *result,
                    )

    # -- Ingest -----------------------------------------------------------------------------------

    async def Ingest(
        self,
        request_iterator: AsyncIterator[persistence_pb2.IngestRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[persistence_pb2.IngestAck]:
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        header = first.header
        try:
            if not first.HasField("header"):
                raise StreamError(
                    grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry the header", "no_header"
                )
            _check_peer_id(header.peer_id)
            num = await self._peer_num(header.peer_id, header.source[:MAX_SOURCE] or "unknown")
        except StreamError as exc:
            await _refuse(context, "Ingest", exc)
        state = StreamState(header.peer_id, num, live=not header.historical)
        reader = asyncio.create_task(self._read_stream(first, request_iterator, state))
        try:
            while True:
                await state.changed.wait()
                state.changed.clear()
                ack = state.take_ack()
                if ack is not None:
                    yield ack
                if not reader.done():
                    continue
                failure = reader.exception()
                if isinstance(failure, StreamError):
                    await _refuse(context, "Ingest", failure)
                if failure is not None:
                    raise failure
                if state.all_committed:
                    ack = state.take_ack()
                    if ack is not None:
                        yield ack
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _peer_num(self, peer_id: str, source: str) -> int:
        num = self._peer_nums.get(peer_id)
        if num is not None:
            return num
        if self.pool is None:
            raise StreamError(
                grpc.StatusCode.UNAVAILABLE,
                "persistence is starting (database not ready)",
                "database_unavailable",
            )
        try:
            async with self.pool.acquire(timeout=5) as conn:
                num = await peers.register_peer(conn, peer_id, source, self.settings.persistence.max_peers)
        except peers.TooManyPeers as exc:
            raise _too_many(exc) from None
        except RETRYABLE as exc:
            raise StreamError(
                grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}", "database_unavailable"
            ) from None
        if len(self._peer_nums) >= MAX_CACHED_PEERS:
            self._peer_nums.clear()
        self._peer_nums[peer_id] = num
        return num

    async def _read_stream(
        self,
        first: persistence_pb2.IngestRequest,
        requests: AsyncIterator[persistence_pb2.IngestRequest],
        state: StreamState,
    ) -> None:
        idle = self.settings.persistence.ingest_idle_timeout
        try:
            await self._accept(first, state)
            while True:
                try:
                    async with asyncio.timeout(idle):  # not wait_for: see lnsync.rpc.Remote.ready
                        request = await anext(requests)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise StreamError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"nothing received for {idle:g} s (persistence.ingest_idle_timeout)",
                        "idle",
                    ) from None
                if request.HasField("header"):
                    raise StreamError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "only the first request has a header",
                        "second_header",
                    )
                await self._accept(request, state)
        finally:
            state.input_finished()  # also wakes the handler when reading failed

    async def _accept(self, request: persistence_pb2.IngestRequest, state: StreamState) -> None:
        """Check one request's messages and queue them as jobs of at most ``max_batch``.

        The common case, channel_updates that pass, is checked column-wise first (``check_updates``)
        when the request's seqs are in order; everything else message by message."""
        messages = request.messages
        if not messages:
            return
        now_us = time.time_ns() // 1000
        too_far_ahead = rules.too_far_ahead
        jobs: list[Job] = []
        job = Job(state)
        entries, rejected = job.entries, job.rejected
        chain = self.chain_hash
        max_batch = self.max_batch
        last_seq = state.last_seq
        announcement = m.ChannelAnnouncement
        seqs = [x.seq for x in messages]
        raws = [x.raw for x in messages]
        receipts = [x.received_at_us for x in messages]
        in_order = seqs[0] > last_seq and all(map(operator.lt, seqs, itertools.islice(seqs, 1, None)))
        checked = check_updates(raws, chain, receipts, now_us) if in_order else [None] * len(seqs)
        try:
            for i, update in enumerate(checked):
                if i % _ACCEPT_SLICE == _ACCEPT_SLICE - 1:
                    await asyncio.sleep(0)  # let the writer's statements go on between slices
                seq = seqs[i]
                received = rules.received_or_now(receipts[i], now_us)
                if update is None:
                    if seq <= last_seq:
                        raise StreamError(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"seq {seq} is not above the previous seq {last_seq} of this stream",
                            "seq_not_increasing",
                        )
                    last_seq = seq
                    try:
                        parsed = check_message(raws[i], chain)
                    except GossipError as exc:
                        rejected.append((seq, exc.reason))
                        continue
                    funding = None
                    if isinstance(parsed, announcement):
                        msg = messages[i]
                        if msg.HasField("funding_sats"):
                            funding = msg.funding_sats
                            if funding > MAX_FUNDING_SATS:
                                rejected.append((seq, "invalid_funding_sats"))
                                continue
                    elif too_far_ahead(parsed.timestamp, rules.judged_at(received, now_us)):
                        rejected.append((seq, rules.FUTURE_REASON))
                        continue
                    entries.append(Entry(parsed, received, funding, seq))
                else:
                    last_seq = seq
                    entries.append(Entry(update, received, None, seq))
                if len(entries) >= max_batch:
                    job.last_seq = seq
                    jobs.append(job)
                    job = Job(state)
                    entries, rejected = job.entries, job.rejected
        finally:
            state.last_seq = job.last_seq = last_seq
        if job.size:
            jobs.append(job)
        for j in jobs:
            state.enqueued_seq = j.last_seq
            await self.queue.put(j)

    # -- sync state -------------------------------------------------------------------------------

    async def ReportSyncComplete(
        self, request: persistence_pb2.ReportSyncCompleteRequest, context: grpc.aio.ServicerContext
    ) -> persistence_pb2.ReportSyncCompleteResponse:
        try:
            _check_peer_id(request.peer_id)
        except StreamError as exc:
            await _refuse(context, "ReportSyncComplete", exc)
        counts = (request.channel_announcements, request.channel_updates, request.node_announcements)
        # Never in the future (a peer cannot be caught up to a time that has not come).
        reported = min(request.caught_up_to, int(time.time()))
        caught_up_to = to_timestamp(reported * 1_000_000) if reported > 0 else None
        p = self.settings.persistence
        try:
            async with self._acquire() as conn:
                await peers.ensure_room(conn, request.peer_id, p.max_peers)
                synced, first = await peers.report_sync_complete(
                    conn, request.peer_id, counts, p.sync_quorum, caught_up_to
                )
        except peers.TooManyPeers as exc:
            await _refuse(context, "ReportSyncComplete", _too_many(exc))
        except RETRYABLE as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        if first:
            log.info("peer %s reported its initial sync complete (fully synced: %s)", request.peer_id, synced)
        else:
            log.debug("peer %s is caught up to %s", request.peer_id, caught_up_to)
        return persistence_pb2.ReportSyncCompleteResponse(fully_synced=synced)

    async def GetSyncStatus(
        self, request: persistence_pb2.GetSyncStatusRequest, context: grpc.aio.ServicerContext
    ) -> persistence_pb2.SyncStatus:
        try:
            async with self._acquire() as conn:
                status = await peers.sync_status(conn, request.peer_id)
        except RETRYABLE as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")

        def seconds(t: Any) -> int:
            return int(t.timestamp()) if t is not None else 0

        return persistence_pb2.SyncStatus(
            fully_synced=status.fully_synced_at is not None,
            fully_synced_at=seconds(status.fully_synced_at),
            quorum=self.settings.persistence.sync_quorum,
            peers=[
                persistence_pb2.PeerSyncState(
                    peer_id=p.peer_id,
                    initial_sync_complete=p.sync_completed_at is not None,
                    completed_at=seconds(p.sync_completed_at),
                    channel_announcements=p.channel_announcements,
                    channel_updates=p.channel_updates,
                    node_announcements=p.node_announcements,
                    last_message_at=seconds(p.last_message_at),
                    stored=p.stored,
                    duplicates=p.duplicates,
                    caught_up_to=seconds(p.caught_up_to),
                )
                for p in status.peers
            ],
        )

    async def GetSyncGate(
        self, request: persistence_pb2.GetSyncGateRequest, context: grpc.aio.ServicerContext
    ) -> persistence_pb2.SyncGate:
        try:
            async with self._acquire() as conn:
                gate = await peers.gate_state(conn)
        except RETRYABLE as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        return persistence_pb2.SyncGate(
            fully_synced=gate.fully_synced_at is not None,
            fully_synced_at=int(gate.fully_synced_at.timestamp()) if gate.fully_synced_at else 0,
            quorum=self.settings.persistence.sync_quorum,
            peers_complete=gate.peers_complete,
            syncing=gate.syncing,
        )

    async def KnownChannels(
        self, request: persistence_pb2.KnownChannelsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[persistence_pb2.KnownChannelsChunk]:
        limit = min(request.max_channels or MAX_KNOWN_CHANNELS, MAX_KNOWN_CHANNELS)
        try:
            async for rows in self._known_channels(limit):
                yield persistence_pb2.KnownChannelsChunk(
                    channels=[
                        persistence_pb2.KnownChannel(
                            short_channel_id=to_u64(scid), node_id_1=bytes(n1), node_id_2=bytes(n2)
                        )
                        for scid, n1, n2 in rows
                    ]
                )
        except UNAVAILABLE as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")

    async def _known_channels(self, limit: int) -> AsyncIterator[list[Any]]:
        """Up to ``limit`` stored channels, the newest by scid, in ascending scid order and in
        keyset-paged chunks (scids are stored as signed bigints with the u64's bits, so the order
        is by the signed value; real scids are below 2**63 and sort the same either way)."""
        async with self._acquire() as conn:
            start = await conn.fetchval(
                "SELECT scid FROM channel_announcements ORDER BY scid DESC OFFSET $1 LIMIT 1", limit - 1
            )
        after: int | None = None if start is None or start == INT8_MIN else start - 1
        sent = 0
        while sent < limit:
            async with self._acquire() as conn:
                rows = await conn.fetch(
                    "SELECT scid, node_id_1, node_id_2 FROM channel_announcements"
                    " WHERE $1::int8 IS NULL OR scid > $1 ORDER BY scid LIMIT $2",
                    after,
                    min(KNOWN_CHANNELS_CHUNK, limit - sent),
                )
            if not rows:
                return
            sent += len(rows)
            after = rows[-1][0]
            yield [tuple(r) for r in rows]

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        if self.pool is None:
            raise ConnectionError("database not connected yet")
        async with self.pool.acquire(timeout=5) as conn:
            yield conn


async def main(settings: Settings) -> int:
    p = settings.persistence
    return await run_service("persistence", p.listen, PersistenceService(settings), p.metrics_listen)
