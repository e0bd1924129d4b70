"""The real sink: persistence's ``Ingest`` stream (at-least-once, windowed) and ``ReportSyncComplete``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping

import grpc

from lnsync import rpc
from lnsync.clients.ingest import IngestClient
from lnsync.retry import Backoff, retry
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc
from services.downloader.sink import SyncCounts

log = logging.getLogger(__name__)

REPORT_TIMEOUT = 10.0
# How long to wait for persistence to answer where to resume from. It serves before its database
# pool is up ("database not connected yet", UNAVAILABLE); giving up at once meant a full sync of
# the whole graph again whenever the downloader started first (seen under load in CI).
RESUME_WAIT = 60.0
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Beyond this age a peer's last delivery is too old to resume from: channels closed and gossip
# pruned meanwhile are easier to get right with a fresh full sync (it stores nothing twice).
RESUME_MAX_AGE = 7 * 86400
# Reading the stored channels: a mainnet graph (~50k) takes about a second.
KNOWN_CHANNELS_TIMEOUT = 120.0


class _NotYet(Exception):
    """Persistence did not answer yet (starting, or its database is); worth asking again."""


class PersistenceSink:
    """Verified gossip to persistence. The :class:`IngestClient` keeps every message until it is
    committed, re-sends after any failure, and makes ``send`` wait while ``window`` messages are
    unacknowledged, which is what stops the downloader reading its peer."""

    def __init__(self, target: str, peer_id: str, *, window: int) -> None:
        self.target = target
        self.client = IngestClient(target, peer_id, source="downloader", window=window)
        self._remote: rpc.Remote | None = None

    async def start(self) -> None:
        await self.client.start()
        self._remote = rpc.Remote(self.target)

    def send(self, raw: bytes, received_at_us: int, funding_sats: int | None = None) -> Awaitable[object]:
        # The client's coroutine itself, not one wrapping it: one coroutine less a message.
        return self.client.send(raw, received_at_us, funding_sats=funding_sats)

    @property
    def unacked(self) -> int:
        return self.client.counters.unacked

    @property
    def rejections(self) -> Mapping[str, int]:
        return self.client.counters.rejections

    async def flush(self) -> None:
        await self.client.flush()

    async def report_sync_complete(self, peer_id: str, counts: SyncCounts, caught_up_to: int) -> None:
        remote = self._remote
        assert remote is not None, "start() first"
        request = persistence_pb2.ReportSyncCompleteRequest(
            peer_id=peer_id,
            channel_announcements=counts.channel_announcements,
            channel_updates=counts.channel_updates,
            node_announcements=counts.node_announcements,
            caught_up_to=caught_up_to,
        )
        stub = remote.stub(persistence_pb2_grpc.PersistenceStub)
        await remote.ready(REPORT_TIMEOUT)  # (dials again if name resolution backed off)
        await stub.ReportSyncComplete(request, timeout=REPORT_TIMEOUT, wait_for_ready=True)

    async def resume_point(self, peer_id: str) -> int | None:
        remote = self._remote
        assert remote is not None, "start() first"
        stub = remote.stub(persistence_pb2_grpc.PersistenceStub)

        async def ask() -> persistence_pb2.SyncStatus:
            await remote.ready(REPORT_TIMEOUT)
            try:
                answer: persistence_pb2.SyncStatus = await stub.GetSyncStatus(
                    persistence_pb2.GetSyncStatusRequest(peer_id=peer_id),
                    timeout=REPORT_TIMEOUT,
                    wait_for_ready=True,
                )
                return answer
            except grpc.aio.AioRpcError as e:
                if e.code() in TRANSIENT_CODES:
                    raise _NotYet(e.details() or e.code().name) from e
                raise

        try:
            status = await retry(
                ask,
                f"asking persistence where {peer_id[:16]} resumes",
                retry_on=(_NotYet,),
                backoff=Backoff(0.25, 5.0),
                give_up_after=RESUME_WAIT,
            )
        except (_NotYet, grpc.aio.AioRpcError) as e:
            details = str(e) if isinstance(e, _NotYet) else e.details()
            log.warning("no resume point for %s (%s); syncing from scratch", peer_id[:16], details)
            return None
        now = time.time()
        for p in status.peers:
            if p.peer_id != peer_id or not p.initial_sync_complete:
                continue
            # How far the peer was caught up; a store from before caught_up_to was kept has only
            # the last delivery (too late a point if the downloader died while catching up).
            point = p.caught_up_to or p.last_message_at
            return point if point > 0 and now - point <= RESUME_MAX_AGE else None
        return None

    async def known_channels(self, max_channels: int) -> AsyncIterator[tuple[int, bytes, bytes]]:
        assert self._remote is not None, "start() first"
        stub = self._remote.stub(persistence_pb2_grpc.PersistenceStub)
        request = persistence_pb2.KnownChannelsRequest(max_channels=max_channels)
        async for chunk in stub.KnownChannels(request, timeout=KNOWN_CHANNELS_TIMEOUT):
            for ch in chunk.channels:
                yield ch.short_channel_id, ch.node_id_1, ch.node_id_2

    async def close(self) -> None:
        await self.client.close()
        if self._remote is not None:
            await self._remote.close()
            self._remote = None
