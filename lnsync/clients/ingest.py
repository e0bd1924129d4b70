"""The producer side of ``Persistence.Ingest``: at-least-once delivery for downloaders and importers.

Usage::

    async with IngestClient("127.0.0.1:50051", peer_id=node_id_hex) as client:
        for raw, received_us in messages:
            await client.send(raw, received_us)   # waits while the window is full
        await client.flush()                      # everything sent is now committed or rejected
    print(client.counters)

API (all coroutines run on one event loop; the client is not thread-safe):

* ``IngestClient(target, peer_id, *, source="downloader", historical=False, window=20_000,
  max_request_messages=1000, max_request_bytes=1 << 20, backoff_min=0.2, backoff_max=30.0,
  on_rejection=None)`` — ``target`` is ``host:port``; ``peer_id`` the peer's node id in hex, or
  ``import:<name>``; ``historical`` asks persistence to keep received times unclamped (imports).
  ``on_rejection(seq, reason)`` is called for the rejections persistence lists (the first few of
  each acknowledgement; every rejection is counted by reason in ``counters.rejections``).
* ``async with client`` starts it; leaving the block flushes (unless an exception is propagating)
  and closes. ``await client.start()`` / ``await client.close()`` do the same by hand.
* ``await client.send(raw, received_at_us=None, *, funding_sats=None) -> int`` queues one whole
  BOLT 7 message (type first) and returns its seq. ``received_at_us`` defaults to now. It only
  waits when ``window`` messages are unacknowledged: that is the back-pressure the caller feels.
* ``await client.flush(timeout=None)`` waits until every message sent so far is acknowledged
  (raises ``TimeoutError`` after ``timeout`` seconds; the messages stay queued).
* ``client.counters`` (:class:`IngestCounters`): ``sent``, ``acked``, ``unacked``, ``stored``,
  ``duplicates``, ``rejected``, ``rejections`` (reason -> count), ``resent``, ``streams``.
* ``client.connected``: True while a stream is open.
* ``IngestRejected`` is raised by ``send``/``flush`` (and kept in ``client.error``) if persistence
  refuses the stream itself (INVALID_ARGUMENT, UNIMPLEMENTED: a bad peer id, a protocol bug),
  which no retry can cure. Every other failure is retried for ever.

Delivery: every message stays in the window until persistence acknowledges it (cumulatively, by
seq, only after commit). After any stream failure (persistence restarted or killed, network
error, database trouble on the server) the client reconnects with exponential backoff and full
jitter and re-sends everything unacknowledged on a new stream, in order. Persistence stores
idempotently, so a message re-sent after a lost acknowledgement is stored once (and counted as a
duplicate the second time). Messages still unacknowledged when the client is closed without a
flush are lost to this client; the caller decides (a downloader re-fetches them from its peer).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import grpc

from lnsync import rpc
from lnsync.retry import Backoff
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class IngestCounters:
    """What happened to the messages given to :meth:`IngestClient.send`.

    ``stored``/``duplicates``/``rejected`` are as persistence reported them per acknowledgement;
    a message re-sent after a lost acknowledgement is counted again (usually as a duplicate).
    """

    sent: int = 0
    acked: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: collections.Counter[str] = field(default_factory=collections.Counter)
    resent: int = 0  # messages sent again on a new stream
    streams: int = 0  # streams opened (the first and every reconnect)

    @property
    def unacked(self) -> int:
        return self.sent - self.acked


# (seq, raw, received_at_us, funding_sats)
_Pending = tuple[int, bytes, int, int | None]


class IngestRejected(Exception):
    """Persistence refused the stream itself (a bad header or a broken protocol): retrying cannot
    help. Raised by ``send`` and ``flush`` once it happened; the message says why."""


# Stream failures that a retry cannot cure.
# Retrying cannot help: a broken stream, an old server, a certificate whose role may not store gossip.
_FATAL_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED}
)


class _StreamEnded(Exception):
    """Persistence closed the stream while messages were unacknowledged."""


# A stream that finished between two writes makes the next write raise InvalidStateError ("RPC
# already finished") rather than the stream's own error: one more failed stream, like the others.
_STREAM_FAILURES = (grpc.aio.AioRpcError, _StreamEnded, grpc.aio.UsageError, asyncio.InvalidStateError)


class IngestClient:
    """At-least-once sender of gossip messages to ``Persistence.Ingest`` (see the module doc)."""

    def __init__(
        self,
        target: str,
        peer_id: str,
        *,
        source: str = "downloader",
        historical: bool = False,
        window: int = 20_000,
        max_request_messages: int = 1000,
        max_request_bytes: int = 1 << 20,
        backoff_min: float = 0.2,
        backoff_max: float = 30.0,
        on_rejection: Callable[[int, str], None] | None = None,
    ) -> None:
        if window < 1 or max_request_messages < 1:
            raise ValueError("window and max_request_messages must be positive")
        self.target = target
        self.header = persistence_pb2.StreamHeader(peer_id=peer_id, source=source, historical=historical)
        self.window = window
        self.max_request_messages = max_request_messages
        self.max_request_bytes = max_request_bytes
        self.on_rejection = on_rejection
        self.counters = IngestCounters()
        self.connected = False
        self.error: IngestRejected | None = None
        self._backoff = Backoff(backoff_min, backoff_max)
        self._pending: collections.deque[_Pending] = collections.deque()
        self._next_seq = 1
        self._acked_seq = 0
        self._sent_seq = 0  # highest seq written on the current stream
        self._changed = asyncio.Event()  # new messages, acknowledgements or a stream failure
        self._acked = asyncio.Condition()
        self._remote: rpc.Remote | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- public API -------------------------------------------------------------------------------

    async def __aenter__(self) -> IngestClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            await self.close()

    async def start(self) -> None:
        if self._task is None:
            # gRPC's own reconnect backoff (up to 120 s by default) must not outlast ours.
            limit = int(self._backoff.maximum * 1000)
            self._remote = rpc.Remote(
                self.target,
                [
                    ("grpc.initial_reconnect_backoff_ms", min(1000, limit)),
                    ("grpc.max_reconnect_backoff_ms", limit),
                ],
            )
            self._task = asyncio.create_task(self._run(), name=f"ingest-{self.header.peer_id[:16]}")

    async def send(
        self, raw: bytes, received_at_us: int | None = None, *, funding_sats: int | None = None
    ) -> int:
        """Queue one message; returns its seq. Waits while ``window`` messages are unacknowledged."""
        if self._task is None:
            raise RuntimeError("IngestClient is not started (use 'async with' or start())")
        if self.error is not None:
            raise self.error
        pending = self._pending
        if len(pending) >= self.window:
            async with self._acked:
                await self._acked.wait_for(lambda: len(pending) < self.window or self.error is not None)
            self._raise_if_rejected()
        seq = self._next_seq
        self._next_seq = seq + 1
        if received_at_us is None:
            received_at_us = time.time_ns() // 1000
        pending.append((seq, raw, received_at_us, funding_sats))
        self.counters.sent += 1
        self._changed.set()
        return seq

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every message sent so far is acknowledged."""
        target = self._next_seq - 1
        async with asyncio.timeout(timeout), self._acked:
            await self._acked.wait_for(lambda: self._acked_seq >= target or self.error is not None)
        self._raise_if_rejected()

    def _raise_if_rejected(self) -> None:
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Stop sending; unacknowledged messages are dropped (flush first to keep them)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._remote is not None:
            await self._remote.close()
            self._remote = None

    # -- the stream -------------------------------------------------------------------------------

    async def _run(self) -> None:
        remote = self._remote
        assert remote is not None
        stub = remote.stub(persistence_pb2_grpc.PersistenceStub)
        while not self._closing:
            # Wait for a connection, dialling again if gRPC's name resolution has backed off (a
            # persistence that was away for a while is streamed to as soon as it is back).
            await remote.ready(math.inf)
            if self._closing:
                return
            call = stub.Ingest(wait_for_ready=True)
            try:
                await self._stream(call)
            except _STREAM_FAILURES as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "ENDED"
                if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _FATAL_CODES:
                    self.error = IngestRejected(
                        f"persistence at {self.target} refused the stream ({code}: {detail})"
                    )
                    log.error("%s", self.error)
                    async with self._acked:
                        self._acked.notify_all()
                    return
                log.warning(
                    "ingest stream to %s failed (%s: %s); %d unacknowledged, reconnecting",
                    self.target, code, detail, len(self._pending),
                )  # fmt: skip
            except Exception:  # a bug must not silently end delivery: log it, retry on a new stream
                log.exception("ingest stream to %s broke; %d unacknowledged, reconnecting", self.target,
                              len(self._pending))  # fmt: skip
            finally:
                self.connected = False
                call.cancel()
            await self._backoff.sleep()

    async def _stream(self, call: grpc.aio.StreamStreamCall) -> None:
        await call.write(persistence_pb2.IngestRequest(header=self.header))
        self.connected = True
        self.counters.streams += 1
        self.counters.resent += max(0, self._sent_seq - self._acked_seq)
        self._sent_seq = self._acked_seq  # re-send everything unacknowledged
        reader = asyncio.create_task(self._read_acks(call))
        reader.add_done_callback(lambda _: self._changed.set())
        try:
            while True:
                if reader.done():
                    reader.result()  # raises the stream's failure
                    raise _StreamEnded("persistence ended the stream")
                request = self._next_request()
                if request is None:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                await call.write(request)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader

    def _next_request(self) -> persistence_pb2.IngestRequest | None:
        """The next unsent messages (after ``_sent_seq``), or None if all are sent."""
        pending = self._pending
        if not pending or pending[-1][0] <= self._sent_seq:
            return None
        start = self._sent_seq + 1 - pending[0][0]
        request = persistence_pb2.IngestRequest()
        add = request.messages.add
        size = 0
        end = min(len(pending), start + self.max_request_messages)
        for i in range(start, end):
            seq, raw, received, funding = pending[i]
            if size and size + len(raw) > self.max_request_bytes:
                break
            if funding is None:
                add(seq=seq, raw=raw, received_at_us=received)
            else:
                add(seq=seq, raw=raw, received_at_us=received, funding_sats=funding)
            size += len(raw) + 24
            self._sent_seq = seq
        return request

    async def _read_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                return
            await self._on_ack(ack)
            self._backoff.reset()

    async def _on_ack(self, ack: persistence_pb2.IngestAck) -> None:
        c = self.counters
        acked = min(ack.acked_seq, self._sent_seq)
        if acked > self._acked_seq:
            pending = self._pending
            while pending and pending[0][0] <= acked:
                pending.popleft()
            c.acked += acked - self._acked_seq
            self._acked_seq = acked
        c.stored += ack.stored
        c.duplicates += ack.duplicates
        c.rejected += ack.rejected
        by_reason = dict(ack.rejected_by_reason)
        if not by_reason and ack.rejected:  # a server that predates rejected_by_reason
            for r in ack.rejections:
                by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
            listed = sum(by_reason.values())
            if ack.rejected > listed:
                by_reason["unlisted"] = ack.rejected - listed
        c.rejections.update(by_reason)
        if self.on_rejection is not None:
            for r in ack.rejections:
                self.on_rejection(r.seq, r.reason)
        async with self._acked:
            self._acked.notify_all()
