"""The ingest pipeline's in-memory parts: per-stream acknowledgement state and the bounded queue.

A stream handler checks each request's messages, cuts them into :class:`Job` s (one request, or a
slice of a huge one) and puts them on the one :class:`IngestQueue` of the process. The queue is
bounded in messages, so a handler waits for room (and, because it stops reading its stream, gRPC
flow control slows the sender): nothing is buffered without limit. The writer takes jobs in
order, commits them, and reports back through each job's :class:`StreamState`, which turns
commits into cumulative acknowledgements.
"""

from __future__ import annotations

import asyncio
import collections
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from lnsync.gossip import messages as m
from lnsync.v1 import persistence_pb2

# Rejections listed (with their seq) in one acknowledgement; the rest are only counted by reason.
MAX_LISTED_REJECTIONS = 16


class Entry(NamedTuple):
    """A message that passed persistence's checks, waiting to be written.

    ``seen_us`` is the producer's receive time; the writer clamps it (live streams) when it
    writes. The first three fields are those of :class:`services.persistence.store.Incoming`.
    """

    message: m.GossipMessage
    seen_us: int
    funding_sats: int | None
    seq: int


@dataclass(slots=True, eq=False)
class Job:
    """Consecutive messages of one stream: those to write and those already rejected.

    ``last_seq`` is the highest seq it covers; once it commits, everything up to it is final.
    """

    stream: StreamState
    entries: list[Entry] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (seq, reason)
    last_seq: int = 0

    @property
    def size(self) -> int:
        return len(self.entries) + len(self.rejected)


class StreamState:
    """One Ingest stream: who sends, what is committed, and the counters of the next ack."""

    def __init__(self, peer_id: str, peer_num: int, live: bool) -> None:
        self.peer_id = peer_id
        self.peer_num = peer_num
        self.live = live
        self.last_seq = 0  # highest seq received
        self.enqueued_seq = 0  # highest seq handed to the writer
        self.acked_seq = 0  # highest seq committed (everything up to it is final)
        self.input_done = False
        self.changed = asyncio.Event()
        self._stored = 0
        self._duplicates = 0
        self._rejected = 0
        self._by_reason: Counter[str] = Counter()
        self._listed: list[tuple[int, str]] = []
        self._sent_seq = 0

    def committed(self, job: Job, stored: int, duplicates: int, rejections: list[tuple[int, str]]) -> None:
        """Called by the writer once ``job`` is committed (rejections include store errors)."""
        self.acked_seq = max(self.acked_seq, job.last_seq)
        self._stored += stored
        self._duplicates += duplicates
        self._rejected += len(rejections)
        for seq, reason in rejections:
            self._by_reason[reason] += 1
            if len(self._listed) < MAX_LISTED_REJECTIONS:
                self._listed.append((seq, reason))
        self.changed.set()

    def input_finished(self) -> None:
        """No more requests will be read (the stream ended or failed)."""
        self.input_done = True
        self.changed.set()

    @property
    def all_committed(self) -> bool:
        return self.acked_seq >= self.enqueued_seq

    def take_ack(self) -> persistence_pb2.IngestAck | None:
        """The acknowledgement for everything committed since the previous one (None if nothing)."""
        if self.acked_seq == self._sent_seq and not self._rejected:
            return None
        ack = persistence_pb2.IngestAck(
            acked_seq=self.acked_seq,
            stored=self._stored,
            duplicates=self._duplicates,
            rejected=self._rejected,
            rejections=[persistence_pb2.Rejection(seq=s, reason=r) for s, r in self._listed],
            rejected_by_reason=dict(self._by_reason),
        )
        self._sent_seq = self.acked_seq
        self._stored = self._duplicates = self._rejected = 0
        self._by_reason.clear()
        self._listed.clear()
        return ack


class IngestQueue:
    """FIFO of jobs bounded by the number of messages they hold until they are committed.

    A job larger than the whole capacity is still admitted when the queue is empty, so no request
    can wedge the pipeline; stream handlers cut requests into jobs of at most ``max_batch``.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._jobs: collections.deque[Job] = collections.deque()
        self._used = 0  # messages queued or being written
        self._queued = 0  # messages queued (not yet taken)
        self._cond = asyncio.Condition()

    @property
    def used(self) -> int:
        return self._used

    @property
    def queued(self) -> int:
        return self._queued

    async def put(self, job: Job) -> None:
        """Append ``job``, waiting while the queue is full (back-pressure)."""
        size = job.size
        async with self._cond:
            await self._cond.wait_for(lambda: self._used == 0 or self._used + size <= self.capacity)
            self._jobs.append(job)
            self._used += size
            self._queued += size
            self._cond.notify_all()

    async def take(self, target: int, linger: float) -> list[Job]:
        """Jobs holding about ``target`` messages: wait for the first, then up to ``linger`` seconds
        for more while fewer than ``target`` are available."""
        loop = asyncio.get_running_loop()
        taken: list[Job] = []
        count = 0
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._jobs))
            deadline = loop.time() + linger
            while True:
                while self._jobs and (count == 0 or count + self._jobs[0].size <= target):
                    job = self._jobs.popleft()
                    taken.append(job)
                    count += job.size
                    self._queued -= job.size
                remaining = deadline - loop.time()
                if count >= target or remaining <= 0 or (self._jobs and count + self._jobs[0].size > target):
                    return taken
                try:
                    async with asyncio.timeout(remaining):  # not wait_for: see lnsync.rpc.Remote.ready
                        await self._cond.wait_for(lambda: bool(self._jobs))
                except TimeoutError:
                    return taken

    async def release(self, jobs: list[Job]) -> None:
        """Give back the room of committed ``jobs``."""
        async with self._cond:
            self._used -= sum(j.size for j in jobs)
            self._cond.notify_all()
