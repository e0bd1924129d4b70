"""The one writer task of a persistence process: batches from the ingest queue into PostgreSQL.

Batching adapts to load: the writer takes what is queued up to a target size, waiting a short
time budget (``LINGER``) for more when little is there; the target doubles while the queue stays
deeper than it and halves when the queue runs dry, between ``MIN_BATCH`` and
``persistence.max_batch``. Each batch is one transaction holding the messages, the per-peer
counters and the delivery rows; only after commit are the jobs acknowledged.

``seen`` is decided at write time: for live streams the producer's receive time clamped into
``[t0 - ingest_lag + margin, t0]`` where ``t0`` is taken just before the transaction, and the
transaction is rolled back and retried (smaller) if it would commit later than ``t0 + margin``.
So every stored ``seen`` lies in ``[commit - ingest_lag, commit]``, as readers rely on
(docs/architecture.md, "The store"). Historical streams keep their times, capped at ``t0``.

Failures never lose a message: when the database is unreachable the batch is retried with
backoff (health goes NOT_SERVING, and the bounded queue stops the streams); a batch that fails
for any other database error is split until the one message that cannot be stored is found, and
that message alone is rejected (reason ``store_error``).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from lnsync.db import TRANSIENT_ERRORS
from lnsync.retry import Backoff
from lnsync.rgs.rules import Outcome
from services.persistence import peers
from services.persistence.ingest import Entry, IngestQueue, Job
from services.persistence.store import Incoming, StateCache, to_timestamp, write_batch

log = logging.getLogger(__name__)

MIN_BATCH = 64
LINGER = 0.02  # seconds to wait for more messages when a batch is below target
STORE_ERROR = "store_error"

# Errors after which the same batch may well succeed later: retried with backoff, never split.
RETRYABLE: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    asyncpg.exceptions.TransactionRollbackError,  # serialization failures, deadlocks
    asyncpg.exceptions.OperatorInterventionError,  # cancelled statements, shutdowns
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a fail-over in progress
)

MESSAGES = Counter("lnsync_persistence_messages_total", "Messages handled by the writer", ["outcome"])
REJECTIONS = Counter("lnsync_persistence_rejections_total", "Messages rejected", ["reason"])
BATCH_SIZE = Histogram(
    "lnsync_persistence_batch_messages",
    "Messages per committed batch",
    buckets=(1, 16, 64, 256, 1024, 4096, 16384),
)
BATCH_SECONDS = Histogram("lnsync_persistence_batch_seconds", "Time to write one batch")
QUEUED = Gauge("lnsync_persistence_queued_messages", "Messages queued or being written")


class _TooSlow(Exception):
    """The transaction would commit too late for the clamped seen times it carries."""


class _Flush:
    """The messages of one flush, flattened into parallel lists (one position per message)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.owner: list[Job] = []
        self.seqs: list[int] = []
        self.entries: list[Entry | None] = []  # None: rejected
        self.reasons: list[str | None] = []
        for job in jobs:
            n = len(job.entries)
            self.owner += [job] * n
            self.seqs += [e.seq for e in job.entries]
            self.entries += job.entries
            self.reasons += [None] * n
            n = len(job.rejected)
            self.owner += [job] * n
            self.seqs += [seq for seq, _ in job.rejected]
            self.entries += [None] * n
            self.reasons += [reason for _, reason in job.rejected]
        self.outcomes: list[Outcome | None] = [None] * len(self.seqs)

    def __len__(self) -> int:
        return len(self.seqs)


class Writer:
    def __init__(
        self,
        pool: Any,
        queue: IngestQueue,
        *,
        ingest_lag: int,
        max_batch: int,
        on_db_state: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.pool = pool
        self.queue = queue
        self.lag_us = ingest_lag * 1_000_000
        self.margin = max(1.0, min(10.0, ingest_lag / 4))
        self.max_batch = max_batch
        self.on_db_state = on_db_state
        self.target = min(MIN_BATCH, max_batch)
        self.batches = 0
        self.cache = StateCache()

    async def run(self) -> None:
        while True:
            jobs = await self.queue.take(self.target, LINGER)
            await self.flush(jobs)
            await self.queue.release(jobs)
            QUEUED.set(self.queue.used)
            if self.queue.queued >= self.target:
                self.target = min(self.max_batch, self.target * 2)
            elif self.queue.queued < self.target // 4:
                self.target = max(min(MIN_BATCH, self.max_batch), self.target // 2)

    async def flush(self, jobs: list[Job]) -> None:
        """Commit ``jobs`` (retrying as long as it takes) and acknowledge them."""
        batch = _Flush(jobs)
        parts: collections.deque[tuple[int, int]] = collections.deque([(0, len(batch))])
        backoff = Backoff(0.2, 10.0)
        started = time.monotonic()
        while parts:
            lo, hi = parts[0]
            try:
                await self._write(batch, lo, hi)
            except RETRYABLE as exc:
                await self.on_db_state(False)
                if backoff.attempts % 10 == 0:
                    log.warning("writing %d messages failed (%s); retrying with backoff", hi - lo, exc)
                await backoff.sleep()
                continue
            except _TooSlow:
                log.warning("a batch of %d took over %.0f s; retrying it in halves", hi - lo, self.margin)
                if hi - lo > 1:
                    parts.popleft()
                    mid = (lo + hi) // 2
                    parts.extendleft([(mid, hi), (lo, mid)])
                continue
            except asyncpg.PostgresError as exc:
                if hi - lo > 1:
                    parts.popleft()
                    mid = (lo + hi) // 2
                    parts.extendleft([(mid, hi), (lo, mid)])
                    continue
                if batch.entries[lo] is None:
                    raise  # only counters left to write: a bug, not bad input
                peer = batch.owner[lo].stream.peer_id
                log.error("cannot store message seq %d from %s: %s", batch.seqs[lo], peer, exc)
                batch.entries[lo], batch.reasons[lo] = None, STORE_ERROR
                continue
            parts.popleft()
            if backoff.attempts:
                backoff.reset()
            await self.on_db_state(True)
        BATCH_SECONDS.observe(time.monotonic() - started)
        BATCH_SIZE.observe(len(batch))
        self.batches += 1
        self._acknowledge(batch)

    async def _write(self, batch: _Flush, lo: int, hi: int) -> None:
        """One transaction: the messages, the counters and the deliveries of positions [lo, hi)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.margin
        t0 = time.time_ns() // 1000
        floor = t0 - self.lag_us + int(self.margin * 1_000_000)
        entries, owner = batch.entries, batch.owner
        incoming: list[Incoming] = []
        positions: list[int] = []
        any_live = False
        for k in range(lo, hi):
            e = entries[k]
            if e is None:
                continue
            r = e.received_us
            if owner[k].stream.live:
                any_live = True
                seen = floor if r < floor else t0 if r > t0 else r
            else:
                seen = t0 if r > t0 else r
            incoming.append(Incoming(e.message, seen, e.funding_sats))
            positions.append(k)
        async with self.pool.acquire() as conn, conn.transaction():
            outs = await write_batch(conn, incoming, self.cache) if incoming else []
            tallies, observations = _tally(batch, lo, hi, positions, outs, t0)
            await peers.record(conn, tallies, observations, to_timestamp(t0))
            if any_live and loop.time() > deadline:
                raise _TooSlow
        self.cache.committed()
        for k, out in zip(positions, outs, strict=True):
            batch.outcomes[k] = out

    def _acknowledge(self, batch: _Flush) -> None:
        per_job: dict[int, tuple[Job, list[int], list[tuple[int, str]]]] = {}
        totals: collections.Counter[str] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        duplicate = Outcome.DUPLICATE
        for job, seq, out, reason in zip(batch.owner, batch.seqs, batch.outcomes, batch.reasons, strict=True):
            rec = per_job.get(id(job))
            if rec is None:
                rec = per_job[id(job)] = (job, [0, 0], [])
            if out is None:
                why = reason or "invalid"
                rec[2].append((seq, why))
                reasons[why] += 1
            elif out is duplicate:
                rec[1][1] += 1
            else:
                rec[1][0] += 1
            totals["rejected" if out is None else out.value] += 1
        for outcome, n in totals.items():
            MESSAGES.labels(outcome).inc(n)
        for reason, n in reasons.items():
            REJECTIONS.labels(reason).inc(n)
        for job, (stored, duplicates), rejections in per_job.values():
            job.stream.committed(job, stored, duplicates, rejections)


Observation = tuple[int, int, int, dt.datetime, bool]


def _tally(
    batch: _Flush, lo: int, hi: int, positions: list[int], outs: list[Outcome], t0: int
) -> tuple[dict[int, peers.PeerTally], list[Observation]]:
    """Per-peer counters and (for live streams) delivery rows of positions [lo, hi)."""
    tallies: dict[int, peers.PeerTally] = {}
    observations: list[Observation] = []
    duplicate = Outcome.DUPLICATE
    entries, owner = batch.entries, batch.owner
    for k, out in zip(positions, outs, strict=True):
        e = entries[k]
        assert e is not None
        stream = owner[k].stream
        tally = tallies.get(stream.peer_num)
        if tally is None:
            tally = tallies[stream.peer_num] = peers.PeerTally()
        kind = peers.kind_of(e.message)
        tally.delivered(kind)
        received = t0 if e.received_us > t0 else e.received_us
        if received > tally.last_received_us:
            tally.last_received_us = received
        if out is duplicate:
            tally.duplicates += 1
        else:
            tally.stored += 1
        if stream.live:
            hashed = peers.message_hash(e.message)
            observations.append((stream.peer_num, hashed, kind, to_timestamp(received), out is not duplicate))
    for k in range(lo, hi):
        if entries[k] is None:
            num = owner[k].stream.peer_num
            tally = tallies.get(num)
            if tally is None:
                tally = tallies[num] = peers.PeerTally()
            tally.reject(batch.reasons[k] or "invalid")
    return tallies, observations
