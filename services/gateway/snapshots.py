"""The snapshotter's current generation, held in memory, and which blob answers a timestamp.

A background task long-polls ``Snapshots.ListSnapshots`` (the answer comes when the snapshotter
holds another generation than this gateway, or after LONG_POLL seconds; a snapshotter that answers
at once is polled every POLL_SECONDS); when it reports a generation this gateway does not hold,
every blob of it (v1 and v2, raw and the snapshotter's gzip bytes) is fetched, checked against its
SHA-256 and swapped in as a whole. Requests are then answered from memory with the same rules the
snapshotter uses (:mod:`lnsync.rgs.policy`), so a snapshot request costs no
gRPC call, and the gateway keeps serving the generation it has while the snapshotter restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

import grpc

from lnsync import rpc
from lnsync.clients import snapshots as snapshot_kinds
from lnsync.rgs import ladder, policy
from lnsync.v1 import snapshots_pb2, snapshots_pb2_grpc
from services.gateway import metrics
from services.gateway.blobs import Blob
from services.gateway.errors import HttpError

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0
# How long one ListSnapshots long poll may wait for a new generation (below the gRPC connections'
# 30 s maximum age, lnsync.rpc).
LONG_POLL = 20
# A listed generation this gateway has failed to load for this long makes /readyz report it stale.
STALE_AFTER = 3 * POLL_SECONDS
CALL_TIMEOUT = 30.0
PARALLEL_FETCHES = 4


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """One blob of a generation as the status page shows it."""

    version: int
    scope: int  # seconds, or ladder.FULL / ladder.NOTHING_NEW
    last_sync_timestamp: int
    size: int
    gzip_size: int
    sha256: str

    @property
    def kind(self) -> str:
        return ladder.Choice(self.scope).kind


@dataclass
class Generation:
    id: int
    reference_time: int
    generated_at: int
    interval: int
    scopes: list[int]
    entries: list[SnapshotEntry]
    blobs: dict[tuple[int, int], Blob] = field(repr=False)
    loaded_at: float = 0.0
    last_modified: int = 0

    @property
    def nbytes(self) -> int:
        return sum(len(b.body) + len(b.gzip or b"") for b in self.blobs.values())


def _scope_of(info: snapshots_pb2.SnapshotInfo, reference_time: int) -> int:
    """The ladder scope a listed snapshot stands for."""
    return snapshot_kinds.scope_of(info.kind, info.scope_seconds, info.last_sync_timestamp, reference_time)


def _last_modified(listing: snapshots_pb2.ListSnapshotsResponse) -> int:
    """``Last-Modified`` of a generation's answers: when the snapshotter published it (the same on
    every gateway replica), or its reference time if the listing does not say."""
    return int(listing.generated_at) or int(listing.reference_time)


class GenerationChanged(Exception):
    """The snapshotter moved to another generation while this one was being fetched."""


class Unloadable(Exception):
    """The listed generation cannot be served (it lacks blobs)."""


class SnapshotCache:
    def __init__(
        self,
        stub: snapshots_pb2_grpc.SnapshotsStub,
        chain_hash: bytes,
        cache_control: str,
        poll: float = POLL_SECONDS,
        long_poll: int = LONG_POLL,
    ) -> None:
        self._stub = stub
        self._chain_hash = chain_hash
        self._cache_control = cache_control
        self._poll = poll
        self._long_poll = long_poll
        self.generation: Generation | None = None
        self.reachable = False
        self.last_error = "not polled yet"
        # The snapshotter's listed generation this gateway has not managed to load, since when, why.
        self.unloaded: tuple[int, float, str] | None = None
        # The snapshotter's newest generation that failed its proof and was not published: (R, problem).
        self.proof_failure: tuple[int, str] | None = None
        self._loading = asyncio.Lock()

    # -- following the snapshotter ---------------------------------------------------------------

    async def run(self) -> None:
        """Long-poll forever (cancel to stop); a failed poll is logged by :meth:`refresh` and
        retried after the poll interval, as is a snapshotter that answered without waiting."""
        while True:
            if not await self.refresh(wait=self._long_poll):
                await asyncio.sleep(self._poll)

    def stale_for(self, now: float | None = None) -> tuple[float, str] | None:
        """(seconds, reason) the snapshotter's generation has been failing to load, or None."""
        if self.unloaded is None:
            return None
        generation, since, reason = self.unloaded
        seconds = (time.monotonic() if now is None else now) - since
        return seconds, f"generation {generation} cannot be loaded ({reason})"

    async def refresh(self, wait: float = 0, *, again: int = 2) -> bool:
        """One poll: load the snapshotter's generation if it differs from the one held. With
        ``wait``, a long poll: the snapshotter answers once it holds another generation, or after
        ``wait`` seconds.

        Returns whether the next long poll may follow at once: the answer was a new generation
        that loaded, or it came after the snapshotter waited. Never raises (but for
        cancellation): whatever the snapshotter lists, the generation held keeps being served and
        the next poll tries again. A generation replaced while it was being fetched is followed at
        once, ``again`` times at most (a worker starting up must hold one before it listens).
        """
        listed = 0
        held = self.generation.id if self.generation else 0
        request = snapshots_pb2.ListSnapshotsRequest(unless_generation=held, wait_seconds=round(wait))
        started = time.monotonic()
        try:
            listing = await self._stub.ListSnapshots(request, timeout=CALL_TIMEOUT + wait)
            self.reachable, self.last_error = True, ""
            failed = listing.proof_failure if listing.HasField("proof_failure") else None
            self.proof_failure = None if failed is None else (failed.reference_time, failed.problem)
            listed = listing.generation
            async with self._loading:  # the wait above holds no lock: only loading is exclusive
                current = self.generation
                if listing.generation and (current is None or current.id != listing.generation):
                    await self._load(listing)
                    return True
                self.unloaded = None
            return wait > 0 and time.monotonic() - started >= wait / 2
        except grpc.aio.AioRpcError as exc:
            self.reachable = False
            self.last_error = f"{exc.code().name}: {exc.details()}"
            log.debug("snapshotter poll failed: %s", self.last_error)
        except GenerationChanged as exc:
            log.info("%s; fetching again", exc)
            self._failed(listed, str(exc))
            if again > 0:
                return await self.refresh(again=again - 1)
        except Exception as exc:  # a listing this code cannot use must not stop the polling
            first = self.unloaded is None or self.unloaded[0] != listed
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "cannot load snapshot generation %d: %r; keeping the one held",
                listed, exc,
            )  # fmt: skip
            self._failed(listed, type(exc).__name__)
        return False

    def _failed(self, generation: int, reason: str) -> None:
        if self.unloaded is None or self.unloaded[0] != generation:
            self.unloaded = (generation, time.monotonic(), reason)

    async def _load(self, listing: snapshots_pb2.ListSnapshotsResponse) -> None:
        started = time.perf_counter()
        R = listing.reference_time
        entries = [
            SnapshotEntry(
                s.version, _scope_of(s, R), s.last_sync_timestamp, s.size, s.gzip_size, s.sha256.hex()
            )
            for s in listing.snapshots
        ]
        scopes = sorted({e.scope for e in entries if e.scope > 0})
        needed = {(v, s) for v in policy.VERSIONS for s in (*scopes, ladder.FULL, ladder.NOTHING_NEW)}
        have = {(e.version, e.scope) for e in entries}
        if not needed <= have:
            missing = sorted(needed - have)
            raise Unloadable(f"lacks snapshots {missing}")
        limit = asyncio.Semaphore(PARALLEL_FETCHES)
        modified = _last_modified(listing)

        async def fetch(entry: SnapshotEntry) -> tuple[tuple[int, int], Blob]:
            async with limit:
                blob = await self._fetch(listing.generation, R, modified, entry)
                return (entry.version, entry.scope), blob

        results = await asyncio.gather(
            *(fetch(e) for e in entries if e.version in policy.VERSIONS), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        pairs = [r for r in results if not isinstance(r, BaseException)]
        self.generation = Generation(
            id=listing.generation,
            reference_time=R,
            generated_at=listing.generated_at,
            interval=listing.interval,
            scopes=scopes,
            entries=sorted(entries, key=lambda e: (e.version, e.kind != "full", e.scope)),
            blobs=dict(pairs),
            loaded_at=time.time(),
            last_modified=modified,
        )
        self.unloaded = None
        metrics.SNAPSHOT_GENERATION.set(listing.generation)
        metrics.SNAPSHOT_REFERENCE_TIME.set(R)
        metrics.SNAPSHOT_CACHE_BYTES.set(self.generation.nbytes)
        log.info(
            "holding snapshot generation %d (R=%d): %d blobs, %.1f MB, fetched in %.2f s",
            listing.generation, R, len(pairs), self.generation.nbytes / 1e6, time.perf_counter() - started,
        )  # fmt: skip

    async def _fetch(self, generation: int, R: int, modified: int, entry: SnapshotEntry) -> Blob:
        if entry.scope == ladder.FULL:
            timestamp = 0
        elif entry.scope == ladder.NOTHING_NEW:
            timestamp = R
        else:
            timestamp = max(R - entry.scope, 0)  # as the snapshotter computed it
        # By kind and scope, as listed; the timestamp serves a snapshotter that predates kinds.
        raw_info, raw = await self._get(timestamp, entry, gzip=False)
        gz_info, gz = await self._get(timestamp, entry, gzip=True)
        for info in (raw_info, gz_info):
            if info.generation != generation:
                raise GenerationChanged(f"generation {generation} was replaced by {info.generation}")
        if hashlib.sha256(raw).digest() != raw_info.sha256 or len(raw) != raw_info.size:
            raise GenerationChanged(f"snapshot v{entry.version} scope {entry.scope} arrived damaged")
        return Blob(raw, gz, raw_info.sha256, raw_info.blob.timestamp, self._cache_control, modified)

    async def _get(
        self, timestamp: int, entry: SnapshotEntry, gzip: bool
    ) -> tuple[snapshots_pb2.SnapshotInfo, bytes]:
        request = snapshots_pb2.GetSnapshotRequest(
            timestamp=timestamp,
            version=entry.version,
            gzip=gzip,
            kind=snapshot_kinds.kind_of(entry.scope),
            scope_seconds=max(entry.scope, 0),
        )
        info, data = await rpc.join_chunks(self._stub.GetSnapshot(request, timeout=CALL_TIMEOUT))
        if info is None:
            raise GenerationChanged("the snapshotter sent an empty stream")
        return info, data

    # -- answering --------------------------------------------------------------------------------

    def select(self, last_sync: int, version: int) -> Blob:
        """The blob for a client whose last sync is ``last_sync`` (already validated)."""
        gen = self.generation
        if gen is None:
            reason = "no snapshot generation yet (waiting for the first full graph sync and generation)"
            if not self.reachable:
                reason = "snapshotter unavailable and no snapshot held yet"
            raise HttpError(503, reason, retry_after=30)
        if policy.ahead_of_generation(last_sync, gen.reference_time):
            timestamp, body = policy.nothing_new(self._chain_hash, last_sync, gen.reference_time, version)
            return Blob.of(body, timestamp, self._cache_control, gen.last_modified)
        choice = policy.choose_snapshot(last_sync, gen.reference_time, gen.scopes)
        return gen.blobs[(version, choice.scope)]
