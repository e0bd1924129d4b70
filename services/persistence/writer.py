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
(docs/architecture.md, "The store"). Historical streams keep their times, capped at ``t0``, but
only until the graph is first fully synced: from then on deltas are served, and an old seen would
make a channel or update look older to clients than they are (an announcement it carried would be
treated as already known by clients that synced after that seen, so they would never get it), so
their times are clamped like a live stream's.

The writer is a two-stage pipeline: while one batch is being written, the next is taken and its
channel_updates decided ahead of the lock (:func:`services.persistence.store.plan_updates`, on a
connection of its own), so Python's decision overlaps PostgreSQL's writing. Once decided, the next
batch's transaction is opened and its new channel_updates COPYed before it asks for the lock, while
the batch before still applies its direction changes and commits: PostgreSQL works on both at once.
A decision made ahead that no longer holds when its batch takes the lock is made again there (after
an early COPY, in a new transaction); batches still commit and are acknowledged one after another,
in order.

Failures never lose a message: when the database is unreachable the batch is retried with
backoff (health goes NOT_SERVING, and the bounded queue stops the streams); a batch that fails
for any other database error is split until the one message that cannot be stored is found, and
that message alone is rejected (reason ``store_error``).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from lnsync.db import RETRYABLE
from lnsync.gossip.messages import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnsync.retry import Backoff
from lnsync.rgs.rules import Outcome
from services.persistence import peers
from services.persistence.ingest import Entry, IngestQueue, Job
from services.persistence.metrics import AHEAD, BATCH_SECONDS, BATCH_SIZE, EARLY, MESSAGES, QUEUED, REJECTIONS
from services.persistence.store import (
    EarlyCopyStale,
    PlannedUpdates,
    StateCache,
    copy_early,
    plan_updates,
    to_timestamp,
    write_batch,
)

log = logging.getLogger(__name__)

MIN_BATCH = 64
LINGER = 0.02  # seconds to wait for more messages when a batch is below target
STORE_ERROR = "store_error"

SERVED_SQL = "SELECT fully_synced_at IS NOT NULL FROM sync_state"


class _TooSlow(Exception):
    """The transaction would commit too late for the clamped seen times it carries."""


class _Flush:
    """The messages of one flush: every job's entries back to back, by position."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        self.entries: list[Entry] = []
        self.starts: list[int] = []  # where each job's entries start
        for job in jobs:
            self.starts.append(len(self.entries))
            self.entries += job.entries
        self.outcomes: list[Outcome | None] = [None] * len(self.entries)
        self.errors: dict[int, str] = {}  # positions the store refused, with the reason

    def spans(self, lo: int, hi: int) -> Iterator[tuple[Job, int, int]]:
        """(job, start, end) of each job's entries within positions [lo, hi)."""
        first = max(0, bisect.bisect_right(self.starts, lo) - 1)
        for j in range(first, len(self.jobs)):
            start = self.starts[j]
            if start >= hi:
                break
            end = start + len(self.jobs[j].entries)
            if end > lo:
                yield self.jobs[j], max(start, lo), min(end, hi)

    def job_of(self, position: int) -> Job:
        return self.jobs[bisect.bisect_right(self.starts, position) - 1]


@dataclass(slots=True)
class _Early:
    """A batch's transaction opened before the writer lock, its channel_updates COPYed in it while
    the batch before still holds the lock (``store.copy_early``): PostgreSQL's two cores overlap
    them. Used only if the decision still holds under the lock."""

    conn: Any
    transaction: Any

    async def end(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Commit, or roll back if the body raised (as ``async with conn.transaction()`` does)."""
        if exc_type is None:
            await self.transaction.commit()
        else:
            await self.transaction.rollback()


@dataclass(slots=True)
class _Prepared:
    """Positions [lo, hi) of a batch as one transaction will write them: ``seen`` clamped against
    ``t0``, by ``deadline`` (loop time) at the latest, with the updates' decision if made ahead."""

    t0: int
    deadline: float
    incoming: list[Entry]
    positions: list[int]
    any_live: bool
    planned: PlannedUpdates | None = None


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
        self.failing = False  # the last write attempt could not reach the database
        self.served = False  # the graph has been fully synced (never reset): see the module doc

    async def run(self) -> None:
        writing: asyncio.Task[None] | None = None
        previous: PlannedUpdates | None = None  # the decision of the batch being written
        underway = asyncio.Event()  # the batch being written is in PostgreSQL's hands
        try:
            while True:
                jobs = await self.queue.take(self.target, LINGER)
                batch = _Flush(jobs)
                if writing is not None and writing.done():
                    await writing  # (its exception, if any)
                    writing = previous = None
                if writing is not None:
                    await underway.wait()
                ahead = await self._plan_ahead(batch, previous)
                early = await self._copy_early(ahead)
                if writing is not None:
                    try:
                        await writing
                    except BaseException:
                        if early is not None:
                            await self._close_early(early)
                        raise
                underway = asyncio.Event()
                writing = asyncio.create_task(self._commit(batch, ahead, underway, early))
                previous = None if ahead is None else ahead.planned
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing

    async def _commit(
        self, batch: _Flush, ahead: _Prepared | None, underway: asyncio.Event, early: _Early | None
    ) -> None:
        try:
            await self.flush(batch, ahead, underway.set, early)
        finally:
            underway.set()
        await self.queue.release(batch.jobs)
        QUEUED.set(self.queue.used)
        if self.queue.queued >= self.target:
            self.target = min(self.max_batch, self.target * 2)
        elif self.queue.queued < self.target // 4:
            self.target = max(min(MIN_BATCH, self.max_batch), self.target // 2)

    async def _plan_ahead(self, batch: _Flush, previous: PlannedUpdates | None) -> _Prepared | None:
        """The whole batch prepared, its updates decided ahead on top of ``previous`` (None: the
        database cannot be asked now; the batch is then prepared when it is written)."""
        if not any(type(e.message) is ChannelUpdate for e in batch.entries):
            return None
        try:
            prepared = await self._prepare(batch, 0, len(batch.entries))
            async with self.pool.acquire() as conn:
                prepared.planned = await plan_updates(conn, prepared.incoming, self.cache, previous)
        except (*RETRYABLE, asyncpg.PostgresError):
            return None
        return prepared

    async def _copy_early(self, ahead: _Prepared | None) -> _Early | None:
        """A transaction opened with ``ahead``'s channel_updates COPYed in it, before the writer
        lock (None: nothing to copy, or it failed; the batch is then written the usual way)."""
        if ahead is None or ahead.planned is None or not ahead.planned.rows:
            return None
        try:
            conn = await self.pool.acquire()
        except (*RETRYABLE, asyncpg.PostgresError):
            EARLY.labels("failed").inc()
            return None
        early = _Early(conn, conn.transaction())
        try:
            await early.transaction.start()
            await copy_early(conn, ahead.planned)
        except BaseException as exc:
            ahead.planned.copied = False
            await self._close_early(early)
            if isinstance(exc, (*RETRYABLE, asyncpg.PostgresError)):
                EARLY.labels("failed").inc()
                return None
            raise
        EARLY.labels("copied").inc()
        return early

    async def _close_early(self, early: _Early) -> None:
        """Roll an early transaction back (whatever state it is in) and give its connection back."""
        with contextlib.suppress(Exception):
            await early.transaction.rollback()
        await self.pool.release(early.conn)

    async def flush(
        self,
        batch: _Flush,
        ahead: _Prepared | None = None,
        underway: Callable[[], None] | None = None,
        early: _Early | None = None,
    ) -> None:
        """Commit ``batch`` (retrying as long as it takes) and acknowledge its jobs.

        The batch is written in parts, normally one; a part the database refuses for a reason
        other than unavailability is split until the offending message is alone, and that message
        is rejected. The last part also records the rejections. ``ahead``: the whole batch
        prepared beforehand, ``early``: its transaction opened with the updates COPYed (both used by
        the first attempt only). ``underway``: see ``write_batch``.
        """
        parts: collections.deque[tuple[int, int]] = collections.deque([(0, len(batch.entries))])
        backoff = Backoff(0.2, 10.0)
        started = time.monotonic()
        while parts:
            lo, hi = parts[0]
            prepared, ahead = ahead, None
            opened, early = early, None
            try:
                await self._write(
                    batch, lo, hi, with_rejections=len(parts) == 1, prepared=prepared, underway=underway,
                    early=opened,
                )  # fmt: skip
            except EarlyCopyStale:
                AHEAD.labels("remade").inc()
                continue  # rolled back: written again at once, decided under the lock
            except RETRYABLE as exc:
                self.failing = True
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
                if hi == lo or lo in batch.errors:
                    raise  # only counters left to write: a bug, not bad input
                peer = batch.job_of(lo).stream.peer_id
                log.error("cannot store message seq %d from %s: %s", batch.entries[lo].seq, peer, exc)
                batch.errors[lo] = STORE_ERROR
                continue
            parts.popleft()
            if backoff.attempts:
                backoff.reset()
            self.failing = False
            await self.on_db_state(True)
        BATCH_SECONDS.observe(time.monotonic() - started)
        BATCH_SIZE.observe(len(batch.entries))
        self.batches += 1
        self._acknowledge(batch)

    async def _prepare(self, batch: _Flush, lo: int, hi: int) -> _Prepared:
        """Positions [lo, hi) with their seen clamped for a transaction starting now."""
        deadline = asyncio.get_running_loop().time() + self.margin
        t0 = time.time_ns() // 1000
        floor = t0 - self.lag_us + int(self.margin * 1_000_000)
        entries, errors = batch.entries, batch.errors
        incoming: list[Entry] = []
        positions: list[int] = []
        any_live = False
        spans = list(batch.spans(lo, hi))
        if not self.served and not all(job.stream.live for job, _, _ in spans):
            async with self.pool.acquire() as conn:
                self.served = bool(await conn.fetchval(SERVED_SQL))
        for job, start, end in spans:
            live = job.stream.live or self.served
            any_live |= live
            for k in range(start, end):
                if k in errors:
                    continue
                e = entries[k]
                r = e.seen_us  # the producer's receive time
                seen = (floor if r < floor else t0 if r > t0 else r) if live else (t0 if r > t0 else r)
                incoming.append(e if seen == r else e._replace(seen_us=seen))
                positions.append(k)
        return _Prepared(t0, deadline, incoming, positions, any_live)

    async def _write(
        self,
        batch: _Flush,
        lo: int,
        hi: int,
        *,
        with_rejections: bool,
        prepared: _Prepared | None = None,
        underway: Callable[[], None] | None = None,
        early: _Early | None = None,
    ) -> None:
        """One transaction: the messages at positions [lo, hi), their counters and deliveries
        (in ``early``'s transaction if given: the one ``prepared``'s updates were COPYed in)."""
        loop = asyncio.get_running_loop()
        # A batch prepared ahead keeps its times only while it can still commit well in time.
        if prepared is not None and loop.time() > prepared.deadline - self.margin / 2:
            AHEAD.labels("remade").inc()
            prepared = None
        if early is not None and prepared is None:
            await self._close_early(early)
            early = None
        if prepared is None:
            prepared = await self._prepare(batch, lo, hi)
        planned = prepared.planned
        async with contextlib.AsyncExitStack() as stack:
            if early is None:
                conn = await stack.enter_async_context(self.pool.acquire())
                await stack.enter_async_context(conn.transaction())
            else:
                conn = early.conn
                stack.push_async_callback(self.pool.release, conn)
                stack.push_async_exit(early.end)
            outs = []
            if prepared.incoming:
                outs = await write_batch(conn, prepared.incoming, self.cache, planned, underway)
            outcomes = batch.outcomes
            for k, out in zip(prepared.positions, outs, strict=True):
                outcomes[k] = out
            tallies, observations = _tally(batch, lo, hi, prepared.t0, with_rejections)
            await peers.record(conn, tallies, observations, to_timestamp(prepared.t0))
            if prepared.any_live and loop.time() > prepared.deadline:
                raise _TooSlow
        self.cache.committed()
        if planned is not None:
            planned.kept = planned.used
            AHEAD.labels("kept" if planned.used else "remade").inc()

    def _acknowledge(self, batch: _Flush) -> None:
        totals: collections.Counter[str] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        outcomes = batch.outcomes
        for job, start in zip(batch.jobs, batch.starts, strict=True):
            end = start + len(job.entries)
            rejections = list(job.rejected)
            rejections += [(batch.entries[k].seq, r) for k, r in batch.errors.items() if start <= k < end]
            window = outcomes[start:end]
            duplicates = window.count(Outcome.DUPLICATE)
            stale = window.count(Outcome.STALE)
            stored = len(window) - duplicates - len(rejections) + len(job.rejected)
            job.stream.committed(job, stored, duplicates, rejections)
            totals["stored"] += stored - stale
            totals["stale"] += stale
            totals["duplicate"] += duplicates
            totals["rejected"] += len(rejections)
            for _, reason in rejections:
                reasons[reason] += 1
        for outcome, n in totals.items():
            MESSAGES.labels(outcome).inc(n)
        for reason, n in reasons.items():
            REJECTIONS.labels(reason).inc(n)


Observation = tuple[int, int, int, dt.datetime, bool, int]  # peers.OBSERVATION_COLUMNS


def _tally(
    batch: _Flush, lo: int, hi: int, t0: int, with_rejections: bool
) -> tuple[dict[int, peers.PeerTally], list[Observation]]:
    """Per-peer counters and (for live streams) delivery rows of positions [lo, hi), plus every
    rejection of the batch when ``with_rejections``."""
    tallies: dict[int, peers.PeerTally] = {}
    observations: list[Observation] = []
    duplicate = Outcome.DUPLICATE
    entries, outcomes, errors = batch.entries, batch.outcomes, batch.errors
    for job, start, end in batch.spans(lo, hi):
        stream = job.stream
        tally = tallies.get(stream.peer_num)
        if tally is None:
            tally = tallies[stream.peer_num] = peers.PeerTally()
        ok = [k for k in range(start, end) if k not in errors] if errors else range(start, end)
        kinds = collections.Counter(type(entries[k].message) for k in ok)
        tally.channel_updates += kinds[ChannelUpdate]
        tally.channel_announcements += kinds[ChannelAnnouncement]
        tally.node_announcements += kinds[NodeAnnouncement]
        window = [outcomes[k] for k in ok]
        dups = window.count(duplicate)
        tally.duplicates += dups
        tally.stored += len(window) - dups
        received = max((entries[k].seen_us for k in ok), default=0)
        tally.last_received_us = max(tally.last_received_us, min(received, t0))
        if stream.live:
            for k in ok:
                e = entries[k]
                r = min(e.seen_us, t0)
                first = outcomes[k] is not duplicate
                observations.append((stream.peer_num, peers.message_hash(e.message), peers.kind_of(e.message),
                                     to_timestamp(r), first, len(e.message.raw)))  # fmt: skip
    if with_rejections:
        for job, start in zip(batch.jobs, batch.starts, strict=True):
            refused = [r for k, r in errors.items() if start <= k < start + len(job.entries)]
            if not job.rejected and not refused:
                continue
            num = job.stream.peer_num
            tally = tallies.get(num)
            if tally is None:
                tally = tallies[num] = peers.PeerTally()
            for _, reason in job.rejected:
                tally.reject(reason)
            for reason in refused:
                tally.reject(reason)
    return tallies, observations
