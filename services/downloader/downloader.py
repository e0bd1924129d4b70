"""One peer, for the life of the process: connect, run a session, back off, reconnect.

The pipeline (verified channels, held updates, recently seen messages) and the counters belong
here, not to a connection, so a reconnect continues where the last connection stopped. The
initial sync is reported to persistence once per process, after everything delivered so far is
acknowledged (a report must never overtake the messages it vouches for).

While a connection is caught up with the peer, the downloader reports that to persistence every
``caught_up_interval`` (again after a flush: "everything the peer sent before T is stored"). A
downloader whose peer already completed an initial sync into the store (an earlier process)
resumes instead of syncing again: it learns the stored channels' node ids and asks the peer only
for gossip from shortly before the last caught-up point. That point, not the last delivery: a
process killed while catching up after downtime has recent deliveries but not all the older
gossip. After a reconnect it likewise asks only for what came after the last connection's end,
once that connection had caught up with the peer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from lnsync.chain.verifier import FundingVerifier
from lnsync.config import PeerAddress
from lnsync.peer.transport import NoiseTransport, TransportError, connect
from lnsync.retry import Backoff
from services.downloader import stats as st
from services.downloader.metrics import COLLECTOR
from services.downloader.options import PeerOptions
from services.downloader.pipeline import GossipPipeline
from services.downloader.session import PeerFailure, PeerSession
from services.downloader.sink import GossipSink

log = logging.getLogger(__name__)

# Asked-for gossip starts this long before the last moment we were in touch with the peer: peers
# batch their relays (LDK and CLN every ~60 s), gossip takes minutes to cross the network, and
# origins' clocks drift. Re-receiving an hour of gossip is cheap; a gap stays until the channel's
# next update (up to two weeks).
RESUME_MARGIN = 3600


class Downloader:
    def __init__(
        self,
        peer: PeerAddress,
        chain_hash: bytes,
        sink: GossipSink,
        options: PeerOptions | None = None,
        *,
        local_secret: bytes | None = None,
        verifier: FundingVerifier | None = None,
    ) -> None:
        self.peer = peer
        self.chain_hash = chain_hash
        self.sink = sink
        self.options = options or PeerOptions()
        # A gossip-only client needs no stable identity; a fresh key per process is enough.
        self.local_secret = local_secret or os.urandom(32)
        self.stats = st.PeerStats(
            peer.node_id, str(peer), unacked=lambda: sink.unacked, rejected=lambda: sink.rejections
        )
        o = self.options
        self.pipeline = GossipPipeline(
            chain_hash,
            sink,
            self.stats,
            pending_max=o.pending_max,
            pending_ttl=o.pending_ttl,
            cache_size=o.recent_cache,
            verifier=verifier,
        )
        self.stats.pending_now = lambda: len(self.pipeline.pending)
        COLLECTOR.track(self.stats)
        self.backoff = Backoff(o.backoff_min, o.backoff_max)
        self.session: PeerSession | None = None
        self.sync_reported = asyncio.Event()
        self._report_task: asyncio.Task[None] | None = None
        self._caught_up_task: asyncio.Task[None] | None = None
        # Unix time up to which we hold the peer's gossip (less RESUME_MARGIN); None: nothing yet.
        self.resume_from: float | None = None

    @property
    def label(self) -> str:
        return self.peer.node_id[:16]

    async def run(self) -> None:
        """Keep a connection to the peer until cancelled; nothing the peer does ends this."""
        await self._resume()
        if self._caught_up_task is None:
            self._caught_up_task = asyncio.create_task(self._report_caught_up(), name="report-caught-up")
        while True:
            started = asyncio.get_running_loop().time()
            new_messages = await self._connect_once()
            lasted = asyncio.get_running_loop().time() - started
            if new_messages or lasted >= self.options.healthy_after:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            self.stats.state = st.BACKOFF
            log.info("peer %s: reconnecting in %.1f s", self.label, delay)
            await asyncio.sleep(delay)

    async def _connect_once(self) -> int:
        """One connection attempt and session; returns how many new messages it brought."""
        stats = self.stats
        stats.attempts += 1
        stats.state = st.CONNECTING
        o = self.options
        transport: NoiseTransport | None = None
        reason = "internal"
        try:
            transport = await connect(
                self.peer.host,
                self.peer.port,
                self.peer.pubkey,
                self.local_secret,
                connect_timeout=o.connect_timeout,
                handshake_timeout=o.handshake_timeout,
            )
            stats.connections += 1
            stats.connected = True
            self.pipeline.connection = stats.connections
            complete = self.synced
            stats.state = st.SYNCED if complete else st.INITIAL_SYNC
            first_timestamp = self._first_timestamp() if complete else o.first_timestamp
            self.session = PeerSession(
                transport,
                self.chain_hash,
                self.pipeline,
                stats,
                o,
                track_sync=not complete,
                first_timestamp=first_timestamp,
                on_sync_complete=self._sync_complete,
            )
            log.info("peer %s: connected to %s (gossip from %d)", self.label, self.peer, first_timestamp)
            await self.session.run()
        except PeerFailure as e:
            reason = e.reason
            log.warning("peer %s: disconnecting: %s", self.label, e)
        except TransportError as e:
            reason = e.reason
            log.warning("peer %s: %s", self.label, e)
        except Exception:  # a bug must not end the process: log it, treat it as a disconnect
            log.exception("peer %s: unexpected error; reconnecting", self.label)
        finally:
            stats.connected = False
            if transport is not None:
                await transport.close()
        stats.disconnects[reason] += 1
        session, self.session = self.session, None
        if session is not None and session.caught_up_at is not None and self.synced:
            # Live until its last message: the next connection needs only what came after.
            self.resume_from = max(session.caught_up_at, stats.last_message_at)
        return session.new_messages if session is not None else 0

    @property
    def synced(self) -> bool:
        """The initial sync is done (reported, being reported, or by an earlier process)."""
        return self.sync_reported.is_set() or self._report_task is not None

    def _first_timestamp(self) -> int:
        if self.resume_from is None:
            return self.options.first_timestamp
        return max(self.options.first_timestamp, int(self.resume_from) - RESUME_MARGIN, 0)

    async def _resume(self) -> None:
        """Skip the initial sync when the store already holds this peer's graph: learn the stored
        channels (so updates for them verify), then ask only for recent gossip. Any failure means
        a full sync, which is always correct, only slower."""
        started = asyncio.get_running_loop().time()
        channels = 0
        try:
            point = await self.sink.resume_point(self.peer.node_id)
            if point is None:
                return
            async for scid, node_id_1, node_id_2 in self.sink.known_channels(
                self.pipeline.validator.max_channels
            ):
                self.pipeline.remember_channel(scid, node_id_1, node_id_2)
                channels += 1
        except Exception as e:  # the channels learnt so far do no harm to a full sync
            log.warning("peer %s: reading the stored channels failed (%s); full sync", self.label, e)
            return
        self.resume_from = point
        self.stats.initial_sync_complete = True
        self.sync_reported.set()
        log.info(
            "peer %s: resuming (initial sync already stored; %d channels known in %.1f s; gossip from %d)",
            self.label,
            channels,
            asyncio.get_running_loop().time() - started,
            self._first_timestamp(),
        )

    async def _sync_complete(self) -> None:
        if self._report_task is None:
            self.stats.state = st.SYNCED
            self._report_task = asyncio.create_task(self._report(int(time.time())), name="report-sync")

    async def _report(self, caught_up_to: int) -> None:
        """Wait until every announcement has had its funding check (chain.source) and persistence
        holds everything, then report (retrying until it works): a graph counts as synced only
        once its channels are checked."""
        await self.pipeline.wait_for_verdicts()
        while True:
            try:
                await self.sink.flush()
                counts = self.pipeline.counts()
                await self.sink.report_sync_complete(self.peer.node_id, counts, self._held_cap(caught_up_to))
            except Exception as e:
                log.warning("peer %s: reporting the initial sync failed (%s); retrying", self.label, e)
                await asyncio.sleep(2.0)
                continue
            self.stats.initial_sync_complete = True
            self.sync_reported.set()
            log.info(
                "peer %s: initial sync reported (%d channel announcements, %d updates, %d nodes)",
                self.label,
                counts.channel_announcements,
                counts.channel_updates,
                counts.node_announcements,
            )
            return

    async def _report_caught_up(self) -> None:
        """Every ``caught_up_interval`` while the current connection is caught up (and the initial
        sync is reported): flush, then tell persistence everything before the flush started is
        stored. A failure only skips a report; the next one carries a later time."""
        while True:
            await asyncio.sleep(self.options.caught_up_interval)
            session = self.session
            if not self.sync_reported.is_set() or session is None or session.caught_up_at is None:
                continue
            point = self._held_cap(int(time.time()))
            try:
                await self.sink.flush()
                await self.sink.report_sync_complete(self.peer.node_id, self.pipeline.counts(), point)
            except Exception as e:
                log.warning("peer %s: reporting how far it is caught up failed (%s)", self.label, e)
            else:
                log.debug("peer %s: caught up to %d", self.label, point)

    def _held_cap(self, point: int) -> int:
        """``point``, or earlier: before the oldest announcement still waiting for its funding
        check, which is not stored yet (a restart must ask the peer for it again)."""
        oldest = self.pipeline.oldest_checking_us()
        return point if oldest is None else min(point, oldest // 1_000_000)

    async def close(self) -> None:
        await self.pipeline.close()
        COLLECTOR.untrack(self.stats)
        for task in (self._report_task, self._caught_up_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
