"""One connection to a peer, after the BOLT 8 handshake: BOLT 1 and the BOLT 7 gossip exchange.

Two tasks share the connection. The reader takes one message at a time and finishes with it
(gossip goes through the pipeline into the sink, which waits when its window is full, so the
socket is simply not read meanwhile: back-pressure). The watchdog keeps time: stalls, pings,
range and scid query timeouts, pending updates ageing out, and initial-sync decisions.

Whatever the peer does ends, at worst, in :class:`PeerFailure` with a short ``reason``; the
downloader then backs off and reconnects.

Quiet: observing must not change what is observed, so a session sends its peer no gossip at all,
neither relayed nor its own (it has none), whatever ``gossip_timestamp_filter`` the peer sends;
BOLT 7 says the filter's receiver SHOULD send matching gossip, and this SHOULD is knowingly not
followed. Queries are answered as BOLT 7 requires of a node that keeps no graph:
``query_channel_range`` gets one final reply covering the range with no channels
(``sync_complete`` set), ``query_short_channel_ids`` gets ``reply_short_channel_ids_end`` with
``full_information`` 0 ("does not maintain up-to-date channel information"). BOLT 9 assigns no
feature bit for "does not relay", and an unassigned bit could collide with a future one, so
``init`` offers only ``gossip_queries`` (optional).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from lnsync.gossip import control as c
from lnsync.gossip import features as feat
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.dispatch import IgnoredMessage, decode_message
from lnsync.gossip.errors import GossipError, UnknownMessageType
from lnsync.peer.transport import NoiseTransport, TransportError
from services.downloader.limits import EventWindow, TokenBucket
from services.downloader.options import OUR_FEATURES, PeerOptions
from services.downloader.pipeline import GossipPipeline, Outcome
from services.downloader.stats import MESSAGE_NAMES, PeerStats, message_name
from services.downloader.sync import Action, RateWindow, SyncTracker

log = logging.getLogger(__name__)

ALL_BLOCKS = 0xFFFFFFFF
ALL_TIMESTAMPS = 0xFFFFFFFF
# What a pong costs beyond its ignored bytes: type, length, the BOLT 8 length prefix and two MACs.
PONG_OVERHEAD = 4 + 2 + 16 + 16


class PeerFailure(Exception):
    """The connection must end. ``reason`` labels the disconnect counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PeerSession:
    """Speak to one connected peer until it fails (``run`` never returns normally)."""

    def __init__(
        self,
        transport: NoiseTransport,
        chain_hash: bytes,
        pipeline: GossipPipeline,
        stats: PeerStats,
        options: PeerOptions,
        *,
        track_sync: bool,
        # The gossip_timestamp_filter's first_timestamp: 0 for the whole graph, later to resume.
        first_timestamp: int = 0,
        # Called once when the initial sync completes; it must return quickly (start a task).
        on_sync_complete: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.transport = transport
        self.chain_hash = chain_hash
        self.pipeline = pipeline
        self.stats = stats
        self.options = options
        self.on_sync_complete = on_sync_complete
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._loop = loop
        self.started = now
        self.tracker: SyncTracker | None = SyncTracker(options.sync, now) if track_sync else None
        self.first_timestamp = first_timestamp
        # When the peer's backfill for our filter was over (unix time): from then on it relays
        # live gossip, so a later reconnect only needs what came after this connection's end.
        self.caught_up_at: float | None = None
        self._gossip_rate = RateWindow(options.sync.settle_seconds)
        self.their_init: c.Init | None = None
        self.gossip_queries = False
        self.new_messages = 0
        self._bucket = TokenBucket(options.rate_limit, options.rate_burst, now)
        self._invalid = EventWindow(options.max_invalid, options.invalid_window)
        self._junk = EventWindow(options.max_junk, options.junk_window)
        self._pong_bytes = TokenBucket(options.pong_bytes_rate, options.pong_bytes_burst, now)
        self._reading_since: float | None = None  # a read is waiting on the socket since then
        self._pings: dict[int, tuple[float, bool]] = {}  # num_pong_bytes -> (sent at, is probe)
        self._next_pong_len = 0
        self._last_expiry = now
        self._bytes_seen = (transport.bytes_read, transport.bytes_written)

    # -- life cycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        await self._exchange_init()
        await self._start_gossip()
        reader = asyncio.create_task(self._read_loop(), name="peer-reader")
        watchdog = asyncio.create_task(self._watchdog(), name="peer-watchdog")
        try:
            done, _ = await asyncio.wait({reader, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the failure
            raise PeerFailure("internal", "session task ended without an error")
        finally:
            for task in (reader, watchdog):
                task.cancel()
            await asyncio.gather(reader, watchdog, return_exceptions=True)

    async def _send(self, msg: bytes) -> None:
        self.transport.write_message(msg)
        try:
            await asyncio.wait_for(self.transport.drain(), self.options.write_timeout)
        except TimeoutError:
            raise PeerFailure(
                "stall", f"the peer read nothing we sent for {self.options.write_timeout:g} s"
            ) from None
        self._count_bytes()

    async def _read(self, timeout: float | None = None) -> bytes:
        self._reading_since = self._loop.time()
        try:
            if timeout is None:
                raw = await self.transport.read_message()
            else:
                async with asyncio.timeout(timeout):  # not wait_for: see lnsync.rpc.Remote.ready
                    raw = await self.transport.read_message()
        finally:
            self._reading_since = None
        self._count_bytes()
        return raw

    def _count_bytes(self) -> None:
        t, s = self.transport, self.stats
        s.bytes_in += t.bytes_read - self._bytes_seen[0]
        s.bytes_out += t.bytes_written - self._bytes_seen[1]
        self._bytes_seen = (t.bytes_read, t.bytes_written)

    # -- BOLT 1 set-up --------------------------------------------------------------------------

    async def _exchange_init(self) -> None:
        ours = c.Init(features=OUR_FEATURES, networks=(self.chain_hash,))
        await self._send(ours.encode())
        try:
            raw = await self._read(self.options.init_timeout)
        except TimeoutError:
            raise PeerFailure("stall", f"no init within {self.options.init_timeout:g} s") from None
        self.stats.message_received(m.message_type(raw) if len(raw) >= 2 else -1)
        if len(raw) < 2 or m.message_type(raw) != c.INIT:
            raise PeerFailure("protocol", f"expected init first, got message type {raw[:2].hex()}")
        try:
            init = c.decode_init(raw)
        except GossipError as e:
            self.stats.invalid[e.reason] += 1
            raise PeerFailure("protocol", f"unreadable init: {e}") from None
        self.their_init = init
        if not init.wants_chain(self.chain_hash):
            chains = ", ".join(x.hex() for x in init.networks or ())
            raise PeerFailure(
                "wrong_chain",
                f"the peer serves other chains ({chains}), not ours ({self.chain_hash.hex()})",
            )
        try:
            feat.check_init_features(init.combined_features)
        except GossipError as e:
            raise PeerFailure(e.reason, f"incompatible features: {e}") from None
        self.gossip_queries = feat.supports(init.combined_features, feat.GOSSIP_QUERIES)
        if not self.gossip_queries:
            raise PeerFailure(
                "no_gossip_queries", "the peer does not offer gossip_queries, so it would send us no gossip"
            )

    async def _start_gossip(self) -> None:
        """Learn the peer's channel set (initial sync only) and ask for its gossip from
        ``first_timestamp`` on (0: the whole graph) and everything new after it."""
        if self.tracker is not None:
            query = q.QueryChannelRange(self.chain_hash, 0, ALL_BLOCKS)
            self.tracker.range_sent(query, self._loop.time())
            await self._send(query.encode())
        flt = q.GossipTimestampFilter(self.chain_hash, self.first_timestamp, ALL_TIMESTAMPS)
        await self._send(flt.encode())
        await self.pipeline.release_known()

    # -- reading --------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        # The per-message path: the transport hands over every message of a socket read at once;
        # what is the same for all of them (the clock, the rate limit, bytes) is done once a read,
        # counting and the gossip outcome are inlined (each coroutine or method call avoided is a
        # fraction of a µs on every message).
        loop, transport, stats, pipeline = self._loop, self.transport, self.stats, self.pipeline
        gossip_rate, tracker, bucket = self._gossip_rate, self.tracker, self._bucket
        gossip_types, new, pending, invalid = m.GOSSIP_TYPES, Outcome.NEW, Outcome.PENDING, Outcome.INVALID
        received, names = stats.received, MESSAGE_NAMES
        while True:
            self._reading_since = loop.time()
            try:
                raws = await transport.read_messages()
            except TransportError as e:
                raise PeerFailure(e.reason, str(e)) from None
            finally:
                self._reading_since = None
            received_ns = time.time_ns()
            received_us = received_ns // 1000  # the same socket read, the same receipt time
            stats.last_message_at = received_ns / 1e9
            self._count_bytes()
            # The read limit, for the whole read at once (messages of fewer than 2 bytes are
            # not counted, as before): the same total wait, before the messages are handled.
            wait = bucket.take(loop.time(), sum(len(raw) >= 2 for raw in raws))
            if wait > 0:
                stats.throttled_seconds += wait
                await asyncio.sleep(wait)
            for raw in raws:
                now = loop.time()
                if len(raw) < 2:
                    stats.invalid["malformed"] += 1
                    self._count_invalid(now)
                    continue
                msg_type = raw[0] << 8 | raw[1]
                received[names.get(msg_type) or message_name(msg_type)] += 1
                if msg_type not in gossip_types:
                    await self._control(raw, msg_type, now)
                    continue
                result = await pipeline.handle(raw, received_us, now)
                gossip_rate.add(now)
                outcome = result.outcome
                if outcome is new or outcome is pending:
                    self.new_messages += 1
                    if tracker is not None:
                        tracker.new_message(now)
                elif outcome is invalid:
                    self._count_invalid(now)
                elif result.repeated:
                    self._count_junk(now, "the same gossip again")

    def _count_invalid(self, now: float) -> None:
        if self._invalid.add(now):
            o = self.options
            raise PeerFailure(
                "too_many_invalid",
                f"more than {o.max_invalid} invalid messages within {o.invalid_window:g} s",
            )

    def _count_junk(self, now: float, what: str) -> None:
        if self._junk.add(now):
            o = self.options
            raise PeerFailure(
                "flood", f"more than {o.max_junk} useless messages within {o.junk_window:g} s ({what})"
            )

    async def _control(self, raw: bytes, msg_type: int, now: float) -> None:
        try:
            msg = decode_message(raw)
        except UnknownMessageType as e:
            self.stats.invalid[e.reason] += 1
            raise PeerFailure(e.reason, f"the peer sent {e} (BOLT 1: fail the connection)") from None
        except GossipError as e:
            self.stats.invalid[e.reason] += 1
            log.info("peer %s: unreadable %s: %s", self.stats.peer_id[:16], msg_type, e)
            self._count_invalid(now)
            return
        if isinstance(msg, c.Ping):
            pong = msg.pong()
            if pong is not None and not self._pong_bytes.allow(now, len(pong.ignored) + PONG_OVERHEAD):
                self.stats.peer_messages["ping_unanswered"] += 1
                self._count_junk(now, "pings faster than we answer them")
            elif pong is not None:
                await self._send(pong.encode())
        elif isinstance(msg, c.Pong):
            self._on_pong(msg, now)
        elif isinstance(msg, c.ErrorMessage):
            await self._on_error(msg)
        elif isinstance(msg, q.ReplyChannelRange):
            self._on_range_reply(msg, now)
        elif isinstance(msg, q.ReplyShortChannelIdsEnd):
            answered = (
                msg.chain_hash == self.chain_hash
                and self.tracker is not None
                and self.tracker.scid_reply_end(now)
            )
            if not answered:
                self._count_junk(now, "unsolicited reply_short_channel_ids_end")
        elif isinstance(msg, q.QueryChannelRange):
            await self._send(q.empty_range_reply(msg).encode())
        elif isinstance(msg, q.QueryShortChannelIds):
            await self._send(q.ReplyShortChannelIdsEnd(msg.chain_hash, full_information=False).encode())
        elif isinstance(msg, IgnoredMessage):
            self._count_junk(now, f"unknown odd message type {msg.msg_type}")
        elif isinstance(msg, c.Init):
            self._count_junk(now, "a second init")
        elif isinstance(msg, q.GossipTimestampFilter):
            # We relay nothing, so there is nothing to filter; a peer sends one or two, a flood is junk.
            self._count_junk(now, "gossip_timestamp_filter")

    async def _on_error(self, msg: c.ErrorMessage) -> None:
        kind = "warning" if msg.warning else "error"
        self.stats.peer_messages[kind] += 1
        if msg.warning:
            log.warning("peer %s warns: %s", self.stats.peer_id[:16], msg.text[:300])
            return
        raise PeerFailure("peer_error", f"the peer sent an error: {msg.text[:300]}")

    def _on_range_reply(self, reply: q.ReplyChannelRange, now: float) -> None:
        r = self.tracker.range if self.tracker is not None else None
        if r is None or not r.open:
            self._count_junk(now, "unsolicited reply_channel_range")
            return
        try:
            r.on_reply(reply, now, self.options.sync.range_timeout)
        except ValueError as e:
            self.stats.invalid["bad_range_reply"] += 1
            r.gave_up = str(e)
            log.warning("peer %s: %s; syncing without its channel list", self.stats.peer_id[:16], e)
            return
        if r.done:
            log.info(
                "peer %s has %d channels (%d range replies)%s",
                self.stats.peer_id[:16],
                len(r.scids),
                r.replies,
                " (list truncated)" if r.truncated else "",
            )

    # -- pings ----------------------------------------------------------------------------------

    async def _ping(self, now: float, probe: bool) -> None:
        # Each ping asks for a different pong length, so a pong tells which ping it answers.
        self._next_pong_len = self._next_pong_len % 255 + 1
        self._pings[self._next_pong_len] = (now, probe)
        await self._send(c.Ping(self._next_pong_len).encode())

    def _on_pong(self, pong: c.Pong, now: float) -> None:
        sent = self._pings.pop(len(pong.ignored), None)
        if sent is None:
            self._count_junk(now, "unsolicited pong")
            return
        if sent[1] and self.tracker is not None:
            self.tracker.pong(now)

    # -- the watchdog ---------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        o = self.options
        while True:
            await asyncio.sleep(o.tick)
            now = self._loop.time()
            waiting = self._reading_since
            if waiting is not None:
                # Time only counts while we wait on the socket, not while we hold the peer back.
                if now - waiting > o.stall_timeout:
                    raise PeerFailure("stall", f"nothing from the peer for {o.stall_timeout:g} s")
                for sent, _ in self._pings.values():
                    if now - max(sent, waiting) > o.ping_timeout:
                        raise PeerFailure("stall", f"no pong within {o.ping_timeout:g} s")
                if now - waiting > o.ping_interval and not self._pings:
                    await self._ping(now, probe=False)
            if now - self._last_expiry >= 1.0:
                self._last_expiry = now
                self.pipeline.expire_pending(now)
            if self.tracker is not None and not self.tracker.complete:
                await self._advance_sync(now)
            elif self.caught_up_at is None:
                self._check_caught_up(now)

    def _check_caught_up(self, now: float) -> None:
        """The backfill is over once the gossip rate, over a whole settle window, fell to what
        live relaying brings (the same test the initial sync uses)."""
        s = self.options.sync
        if now - self.started < s.settle_seconds:
            return
        if self._gossip_rate.count(now) <= s.settled_rate * s.settle_seconds:
            self.caught_up_at = time.time()

    async def _advance_sync(self, now: float) -> None:
        assert self.tracker is not None
        action = self.tracker.poll(now, self.pipeline.knows_channel, self.gossip_queries)
        if action is Action.SEND_PROBE:
            await self._ping(now, probe=True)
        elif action is Action.QUERY_SCIDS:
            scids = self.tracker.scids_to_query(self.pipeline.knows_channel)
            log.info(
                "peer %s: asking for %d channels its dump did not bring", self.stats.peer_id[:16], len(scids)
            )
            await self._send(q.QueryShortChannelIds(self.chain_hash, tuple(scids)).encode())
        elif action is Action.GIVE_UP:
            missing = len(self.tracker.missing(self.pipeline.knows_channel))
            raise PeerFailure("sync_incomplete", f"{missing} channels the peer listed never arrived")
        elif action is Action.COMPLETE:
            self.caught_up_at = time.time()
            t = self.tracker
            missing = t.missing_at_completion
            log.info(
                "peer %s: initial sync complete after %.1f s (%d channels listed, %d never arrived%s)",
                self.stats.peer_id[:16],
                now - self.started,
                len(t.range.scids) if t.range else 0,
                missing,
                "; the peer does not answer scid queries" if t.peer_answers_scid_queries is False else "",
            )
            if self.on_sync_complete is not None:
                await self.on_sync_complete()
