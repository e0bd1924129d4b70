"""From raw gossip to verified messages on their way to persistence.

Every gossip message is size-checked, parsed and signature-checked by the gossip core before it
is forwarded; invalid ones are counted by reason and dropped, and so are updates dated more than a
day after their receipt (:func:`lnsync.rgs.rules.too_far_ahead`). The pipeline outlives connections,
so what it learnt stays: the channels' node ids (to verify updates), updates waiting for their
announcement, and a cache of recently seen messages, so the dump a peer replays after a reconnect
is neither verified nor forwarded again (forwarded messages are already in the sink's window or
stored; invalid ones stay invalid).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import NamedTuple

from lnsync.chain.funding import Judgement, Verdict
from lnsync.chain.sources import ChainUnavailable
from lnsync.chain.verifier import FundingVerifier
from lnsync.gossip import messages as m
from lnsync.gossip.errors import GossipError, UnknownChannel
from lnsync.gossip.validate import GossipValidator
from lnsync.retry import Backoff
from lnsync.rgs import rules
from services.downloader.pending import PendingUpdates
from services.downloader.sink import GossipSink, SyncCounts
from services.downloader.stats import PeerStats

log = logging.getLogger(__name__)

# LDK does not relay gossip with more than 1024 bytes it does not understand; messages beyond
# these sizes are dropped as "oversized" (a peer controls them, and RGS needs none of the extra).
MAX_EXCESS = 1024
MAX_SIZE = {
    m.CHANNEL_UPDATE: m.CHANNEL_UPDATE_SIZE + MAX_EXCESS,
    m.CHANNEL_ANNOUNCEMENT: m.CHANNEL_ANNOUNCEMENT_MIN_SIZE + 2 * MAX_EXCESS,  # features + excess
    m.NODE_ANNOUNCEMENT: m.NODE_ANNOUNCEMENT_MIN_SIZE + 3 * MAX_EXCESS,  # features + addresses + excess
}
KIND_NAMES = {
    m.CHANNEL_ANNOUNCEMENT: "channel_announcement",
    m.CHANNEL_UPDATE: "channel_update",
    m.NODE_ANNOUNCEMENT: "node_announcement",
}


def _too_far_ahead(timestamp: int, received_at_us: int) -> bool:
    return rules.too_far_ahead(timestamp, received_at_us // 1_000_000)


# Announcements whose funding output has too few confirmations are asked about again this often,
# this many times, then dropped (counted as funding_too_few_confirmations).
CONFIRMATION_RETRY = 600.0
CONFIRMATION_ATTEMPTS = 12


@dataclass(slots=True)
class CheckingAnnouncement:
    """A verified announcement waiting for its funding check."""

    msg: m.ChannelAnnouncement
    received_at_us: int
    digest: bytes
    attempts: int = 0
    judged: bool = False  # has had a verdict


class Outcome(enum.Enum):
    NEW = "new"  # verified and forwarded
    DUPLICATE = "duplicate"  # seen before: nothing to do
    PENDING = "pending"  # an update waiting for its channel's announcement
    INVALID = "invalid"  # counted and dropped


class Result(NamedTuple):
    # A named tuple, not a frozen dataclass: one is built per message, and a frozen dataclass's
    # __init__ (object.__setattr__ per field) cost ~1 µs of the downloader's per-message budget.
    outcome: Outcome
    reason: str = ""  # for INVALID
    scid: int | None = None  # the channel of an announcement or update
    repeated: bool = False  # DUPLICATE/INVALID seen earlier on this same connection


_NEW = Result(Outcome.NEW)


class RecentMessages:
    """Digests of recently handled messages, with what became of them; at most ``capacity``.

    Two generations: when the young one holds half the capacity it becomes the old one and the
    previous old one is dropped, so forgetting is O(1) and the newest half is always kept.
    Keys are a keyed BLAKE2b of the message, so a peer cannot craft collisions; a hit only ever
    means "skip", so a collision could at worst drop one message, never let one through unchecked.
    A forwarded message maps to the (small, shared) int of its connection, an invalid one to
    (connection, reason): under 100 bytes an entry, ~14 MB for a mainnet graph.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._key = os.urandom(16)
        self._young: dict[bytes, int | tuple[int, str]] = {}
        self._old: dict[bytes, int | tuple[int, str]] = {}

    def digest(self, raw: bytes) -> bytes:
        return hashlib.blake2b(raw, digest_size=16, key=self._key).digest()

    def get(self, digest: bytes) -> tuple[int, str] | None:
        """(connection, "") for a forwarded message, (connection, reason) for an invalid one."""
        seen = self._young.get(digest)
        if seen is None:
            seen = self._old.get(digest)
        if seen is None or isinstance(seen, tuple):
            return seen
        return seen, ""

    def put(self, digest: bytes, connection: int, reason: str = "") -> None:
        if len(self._young) >= max(self.capacity // 2, 1):
            self._old, self._young = self._young, {}
        self._young[digest] = (connection, reason) if reason else connection

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


class GossipPipeline:
    """Verify, count and forward the gossip of one peer (one instance per downloader)."""

    def __init__(
        self,
        chain_hash: bytes,
        sink: GossipSink,
        stats: PeerStats,
        *,
        pending_max: int = 20_000,
        pending_ttl: float = 600.0,
        cache_size: int = 400_000,
        verifier: FundingVerifier | None = None,
        workers: int = 8,
    ) -> None:
        # LDK stores updates with htlc_minimum_msat above htlc_maximum_msat; our clients run LDK,
        # so the downloader forwards them too (persistence and RGS treat them like any update).
        self.validator = GossipValidator(chain_hash, reject_htlc_min_above_max=False)
        self.sink = sink
        self.stats = stats
        self.pending = PendingUpdates(pending_max, pending_ttl)
        self.recent = RecentMessages(cache_size)
        self.connection = 0  # set by each new session, to tell replays from repeats
        # Funding checks (chain.source set): announcements held until the chain source answers.
        self.verifier = verifier
        self.checking: dict[int, CheckingAnnouncement] = {}
        self._check_queue: asyncio.Queue[int] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._worker_count = workers
        self._retry = Backoff(1.0, 60.0)
        self._verdicts = asyncio.Condition()  # notified when no held announcement lacks a verdict
        self._unjudged = 0

    def counts(self) -> SyncCounts:
        f = self.stats.forwarded
        return SyncCounts(f["channel_announcement"], f["channel_update"], f["node_announcement"])

    def remember_channel(self, scid: int, node_id_1: bytes, node_id_2: bytes) -> None:
        """Learn a channel's node ids from the store (a resuming downloader's peer does not send
        the announcements again), so that its updates verify instead of waiting in pending."""
        self.validator.remember_channel(scid, node_id_1, node_id_2)

    def knows_channel(self, scid: int) -> bool:
        return self.validator.node_ids(scid) is not None

    async def handle(self, raw: bytes, received_at_us: int, now: float) -> Result:
        """One gossip message (type 256-258) as received; never raises on bad input."""
        # Once per message: attributes in locals, the type and the usual forward inline.
        msg_type = raw[0] << 8 | raw[1]
        stats, recent = self.stats, self.recent
        if len(raw) > MAX_SIZE[msg_type]:
            stats.invalid["oversized"] += 1
            return Result(Outcome.INVALID, "oversized")
        digest = recent.digest(raw)
        seen = recent.get(digest)
        if seen is not None:
            connection, reason = seen
            repeated = connection == self.connection
            if reason:
                stats.invalid[reason] += 1
                return Result(Outcome.INVALID, reason, repeated=repeated)
            stats.duplicates += 1
            return Result(Outcome.DUPLICATE, repeated=repeated)
        try:
            msg = self.validator.validate(raw)
        except UnknownChannel as e:
            dropped = self.pending.add(e.short_channel_id, raw, received_at_us, now)
            stats.pending["held"] += 1
            if dropped:
                stats.pending["overflow"] += dropped
            return Result(Outcome.PENDING, scid=e.short_channel_id)
        except GossipError as e:
            recent.put(digest, self.connection, e.reason)
            stats.invalid[e.reason] += 1
            log.debug("invalid %s: %s", KIND_NAMES[msg_type], e)
            return Result(Outcome.INVALID, e.reason)
        if isinstance(msg, m.ChannelAnnouncement):
            scid = msg.short_channel_id
            if self.verifier is not None:
                self._hold_for_check(msg, received_at_us, digest)
                if scid in self.pending:
                    await self._release(scid)
                return Result(Outcome.PENDING, scid=scid)
            await self._forward(msg_type, raw, received_at_us, digest)
            if scid in self.pending:
                await self._release(scid)
            return Result(Outcome.NEW, scid=scid)
        if rules.too_far_ahead(msg.timestamp, received_at_us // 1_000_000):
            # Not remembered as invalid: the same message may be acceptable in a day.
            stats.invalid[rules.FUTURE_REASON] += 1
            return Result(Outcome.INVALID, rules.FUTURE_REASON)
        # _forward, inline
        await self.sink.send(raw, received_at_us)
        recent.put(digest, self.connection)
        stats.forwarded[KIND_NAMES[msg_type]] += 1
        if isinstance(msg, m.ChannelUpdate):
            return Result(Outcome.NEW, "", msg.short_channel_id)
        return _NEW

    async def _forward(
        self, msg_type: int, raw: bytes, received_at_us: int, digest: bytes, funding_sats: int | None = None
    ) -> None:
        # Recorded only once the sink has it: a send cancelled while the window is full leaves the
        # message unrecorded, so the peer's next dump delivers it again.
        await self.sink.send(raw, received_at_us, funding_sats)
        self.recent.put(digest, self.connection)
        self.stats.forwarded[KIND_NAMES[msg_type]] += 1

    async def _release(self, scid: int) -> None:
        """Verify the updates that waited for this announcement."""
        held = self.pending.take(scid)
        for i, update in enumerate(held):
            digest = self.recent.digest(update.raw)
            if self.recent.get(digest) is not None:
                continue
            try:
                msg = self.validator.channel_update(update.raw)
            except GossipError as e:
                self.recent.put(digest, self.connection, e.reason)
                self.stats.invalid[e.reason] += 1
                continue
            if _too_far_ahead(msg.timestamp, update.received_at_us):
                self.stats.invalid[rules.FUTURE_REASON] += 1
                continue
            try:
                await self._forward(m.CHANNEL_UPDATE, update.raw, update.received_at_us, digest)
            except BaseException:  # cancelled while the window was full: keep the rest
                self.pending.restore(scid, held[i:])
                raise
            self.stats.pending["released"] += 1

    async def release_known(self) -> None:
        """Forward held updates whose channel became known meanwhile (after an interrupted
        release); called when a connection starts."""
        for scid in self.pending.scids():
            if self.knows_channel(scid):
                await self._release(scid)

    def expire_pending(self, now: float) -> int:
        dropped = self.pending.expire(now)
        if dropped:
            self.stats.pending["expired"] += dropped
        return dropped

    # -- funding checks ---------------------------------------------------------------------------

    def _hold_for_check(self, msg: m.ChannelAnnouncement, received_at_us: int, digest: bytes) -> None:
        """Queue a signature-checked announcement for its funding check. Its updates verify (the
        validator knows the channel) and are forwarded; persistence keeps them unserved until the
        announcement comes. A replay meanwhile is a duplicate."""
        scid = msg.short_channel_id
        self.recent.put(digest, self.connection)
        if scid in self.checking:
            return
        self.checking[scid] = CheckingAnnouncement(msg, received_at_us, digest)
        self._unjudged += 1
        self.stats.pending["funding_held"] += 1
        self._check_queue.put_nowait(scid)
        while len(self._workers) < self._worker_count:
            self._workers.append(asyncio.create_task(self._check_worker(), name="funding-check"))

    def awaiting_verdict(self) -> int:
        """Held announcements that have had no verdict yet (not those waiting for confirmations)."""
        return self._unjudged

    async def wait_for_verdicts(self) -> None:
        """Return once every held announcement has had a verdict (or waits for confirmations)."""
        async with self._verdicts:
            await self._verdicts.wait_for(lambda: not self.awaiting_verdict())

    def oldest_checking_us(self) -> int | None:
        """Receipt time of the oldest announcement still waiting for its check (a caught-up report
        must not claim it is stored)."""
        return min((c.received_at_us for c in self.checking.values()), default=None)

    async def _check_worker(self) -> None:
        assert self.verifier is not None
        loop = asyncio.get_running_loop()
        while True:
            scid = await self._check_queue.get()
            held = self.checking.get(scid)
            if held is None:
                continue
            try:
                judgement = await self.verifier.check(scid, held.msg.bitcoin_key_1, held.msg.bitcoin_key_2)
            except ChainUnavailable as exc:
                # Held, asked again after a pause that grows while the source stays down.
                self.stats.pending["funding_retried"] += 1
                delay = self._retry.next_delay()
                log.warning("chain source unavailable (%s); %d announcements held", exc, len(self.checking))
                self._check_queue.put_nowait(scid)
                await asyncio.sleep(delay)
                continue
            self._retry.reset()
            if not held.judged:
                held.judged = True
                self._unjudged -= 1
            await self._settle(scid, held, judgement, loop)
            if not self._unjudged:
                async with self._verdicts:
                    self._verdicts.notify_all()

    async def _settle(
        self, scid: int, held: CheckingAnnouncement, judgement: Judgement, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Forward a verified announcement, hold one with too few confirmations, reject the rest."""
        verdict = judgement.verdict
        if verdict is Verdict.VERIFIED:
            raw, received = held.msg.raw, held.received_at_us
            await self._forward(m.CHANNEL_ANNOUNCEMENT, raw, received, held.digest, judgement.funding_sats)
            del self.checking[scid]
            return
        held.attempts += 1
        if not verdict.final and held.attempts < CONFIRMATION_ATTEMPTS:
            loop.call_later(CONFIRMATION_RETRY, self._check_queue.put_nowait, scid)
            return
        reason = f"funding_{verdict.value}"
        del self.checking[scid]
        self.recent.put(held.digest, self.connection, reason)
        self.validator.forget_channel(scid)
        self.stats.invalid[reason] += 1
        log.debug("channel %d rejected: %s", scid, reason)

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
