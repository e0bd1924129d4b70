"""When is the initial sync complete? Decided without I/O, from what the session reports.

Firing early is the failure that matters (upstream rapid-gossip-sync-server issue #28): a
snapshot built from half a graph is served to wallets as if it were whole. So completion needs
all of these, in order:

1. The channel range is known: the replies to our ``query_channel_range`` cover the whole query
   (or none came within ``range_timeout``, or the peer does not do gossip queries at all).
2. The dump has drained: over the last ``settle_seconds`` the rate of *new* gossip (verified or
   held, not replays) is at most ``settled_rate`` per second. Live gossip on mainnet is a few
   messages a second; a dump is thousands.
3. A ping round trip after that, and ``grace`` seconds with little new since the ping was sent.
   A pong proves that everything the peer sent before it has arrived, and the ping itself wakes
   an LDK peer whose dump is stuck waiting for an event (its node announcements come late).
4. Every channel of the range has its announcement, or we asked for the missing ones with
   ``query_short_channel_ids`` and the answer came or ``scid_query_timeout`` passed (LDK never
   answers those; a peer that did not answer once is not asked again).
5. What is still missing then is within a small tolerance (channels close while we sync). A
   peer that lists channels and never delivers them is not "synced": after ``stuck_timeout`` of
   waiting the session gives up on the connection and a new one starts over.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lnsync.gossip import queries as q


@dataclass(frozen=True)
class SyncSettings:
    settle_seconds: float = 10.0
    settled_rate: float = 10.0
    grace: float = 1.0
    range_timeout: float = 60.0
    # However the replies keep coming, the range is given up this long after the query was sent.
    range_max_seconds: float = 600.0
    scid_query_timeout: float = 30.0
    max_range_scids: int = 1_000_000
    max_scids_per_query: int = 8000  # what fits one BOLT 8 frame uncompressed
    missing_tolerance: float = 0.01  # of the range's channels ...
    missing_tolerance_min: int = 10  # ... but at least this many
    stuck_timeout: float = 600.0


class Action(enum.Enum):
    SEND_PROBE = "send_probe"  # send a ping and report its pong
    QUERY_SCIDS = "query_scids"  # send query_short_channel_ids for :meth:`SyncTracker.scids_to_query`
    COMPLETE = "complete"
    GIVE_UP = "give_up"  # too much of the range never arrived: start over on a new connection


class RateWindow:
    """New messages over the last ``seconds``, in quarter-second buckets (bounded memory)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._buckets: deque[list[int]] = deque()  # [bucket index, count]
        self._total = 0

    def add(self, now: float, n: int = 1) -> None:
        index = math.floor(now * 4)
        if self._buckets and self._buckets[-1][0] == index:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([index, n])
        self._total += n

    def count(self, now: float) -> int:
        oldest = math.floor((now - self.seconds) * 4)
        while self._buckets and self._buckets[0][0] <= oldest:
            self._total -= self._buckets.popleft()[1]
        return self._total


class RangeQuery:
    """The channels a peer reports for one ``query_channel_range``, over any number of replies."""

    def __init__(
        self, query: q.QueryChannelRange, deadline: float, max_scids: int, final_deadline: float = math.inf
    ) -> None:
        self.query = query
        self.deadline = min(deadline, final_deadline)
        self.final_deadline = final_deadline
        self.max_scids = max_scids
        self.scids: set[int] = set()
        self.replies = 0
        self.done = False
        self.gave_up = ""  # why we stopped waiting, if we did
        self.truncated = False

    @property
    def open(self) -> bool:
        return not self.done and not self.gave_up

    def on_reply(self, reply: q.ReplyChannelRange, now: float, timeout: float) -> None:
        """Take one reply; raises ValueError for a reply that does not belong to our query."""
        if reply.chain_hash != self.query.chain_hash:
            raise ValueError("reply_channel_range for another chain")
        if reply.first_blocknum + reply.number_of_blocks < self.query.first_blocknum or (
            reply.first_blocknum > self.query.end_blocknum
        ):
            raise ValueError(
                f"reply_channel_range for blocks {reply.first_blocknum}+{reply.number_of_blocks} "
                f"outside the query {self.query.first_blocknum}+{self.query.number_of_blocks}"
            )
        self.replies += 1
        room = self.max_scids - len(self.scids)
        if len(reply.short_channel_ids) > room:
            self.truncated = True
        self.scids.update(reply.short_channel_ids[: max(room, 0)])
        self.deadline = min(now + timeout, self.final_deadline)  # each reply extends it, not for ever
        if reply.end_blocknum >= min(self.query.end_blocknum, 0xFFFFFFFF):
            self.done = True


class SyncTracker:
    """One connection's progress towards a complete initial sync (see the module docstring)."""

    def __init__(self, settings: SyncSettings, now: float) -> None:
        self.settings = settings
        self.started = now
        self.rate = RateWindow(settings.settle_seconds)
        self.range: RangeQuery | None = None
        self.range_expected = False  # a query was sent; until it is answered or abandoned, wait
        self.probe_sent: float | None = None
        self.probes = 0
        self.pong_at: float | None = None
        self.new_since_probe = 0
        self.scid_query_deadline: float | None = None
        self.scid_query_answered = False
        self.peer_answers_scid_queries: bool | None = None  # None: not asked yet
        self.asked: set[int] = set()
        self.complete = False
        self.missing_at_completion = 0
        self.stuck_since: float | None = None

    # -- inputs ---------------------------------------------------------------------------------

    def range_sent(self, query: q.QueryChannelRange, now: float) -> None:
        s = self.settings
        self.range = RangeQuery(query, now + s.range_timeout, s.max_range_scids, now + s.range_max_seconds)
        self.range_expected = True

    def new_message(self, now: float) -> None:
        self.rate.add(now)
        if self.probe_sent is not None:
            self.new_since_probe += 1

    def pong(self, now: float) -> None:
        if self.probe_sent is not None and self.pong_at is None:
            self.pong_at = now

    def scid_reply_end(self, now: float) -> bool:
        """Take a reply_short_channel_ids_end; False if no query of ours was waiting for it."""
        if self.scid_query_deadline is None:
            return False
        self.scid_query_deadline = None
        self.scid_query_answered = True
        self.peer_answers_scid_queries = True
        return True

    # -- decisions ------------------------------------------------------------------------------

    def settled(self, now: float) -> bool:
        s = self.settings
        return (
            now - self.started >= s.settle_seconds
            and self.rate.count(now) <= s.settled_rate * s.settle_seconds
        )

    def missing(self, known: Callable[[int], bool]) -> list[int]:
        if self.range is None:
            return []
        return sorted(s for s in self.range.scids if not known(s))

    def scids_to_query(self, known: Callable[[int], bool]) -> list[int]:
        batch = [s for s in self.missing(known) if s not in self.asked][: self.settings.max_scids_per_query]
        self.asked.update(batch)
        return batch

    def poll(self, now: float, known: Callable[[int], bool], can_query: bool) -> Action | None:
        """What to do next, if anything. ``known(scid)``: its announcement has been verified."""
        if self.complete:
            return None
        s = self.settings
        r = self.range
        if r is not None and r.open:
            if now < r.deadline:
                return None
            r.gave_up = "timeout"
        if not self.settled(now):
            self.probe_sent = None
            return None
        if self.probe_sent is None:
            self.probe_sent, self.pong_at, self.new_since_probe = now, None, 0
            self.probes += 1
            return Action.SEND_PROBE
        if self.pong_at is None or now - self.pong_at < s.grace:
            return None
        if self.new_since_probe > s.settled_rate * max(now - self.probe_sent, 1.0):
            self.probe_sent = None  # the ping woke a stalled dump: wait for it to drain again
            return None
        # The dump is over. Ask for channels of the range it did not bring, if the peer answers.
        if self.scid_query_deadline is not None:
            if now < self.scid_query_deadline:
                return None
            self.scid_query_deadline = None
            if not self.scid_query_answered:
                self.peer_answers_scid_queries = False
        if can_query and self.peer_answers_scid_queries is not False:
            pending = [x for x in self.missing(known) if x not in self.asked]
            if pending:
                self.scid_query_deadline = now + s.scid_query_timeout
                self.scid_query_answered = False
                return Action.QUERY_SCIDS
            if self.scid_query_answered and self.new_since_probe:
                # the answer brought channels: let them drain like the dump did
                self.probe_sent = None
                self.scid_query_answered = False
                return None
        missing = len(self.missing(known))
        listed = len(self.range.scids) if self.range is not None else 0
        if missing > max(s.missing_tolerance_min, s.missing_tolerance * listed):
            if self.stuck_since is None:
                self.stuck_since = now
            return Action.GIVE_UP if now - self.stuck_since >= s.stuck_timeout else None
        self.complete = True
        self.missing_at_completion = missing
        return Action.COMPLETE
