"""Random peer sets, the I/O side: read candidates from the store, run one downloader per chosen
peer, replace the ones that fail, rotate every epoch, and record who was observed when.

``lnsync serve random-peers`` (and ``lnsync up`` when ``observer.random_peers`` > 0) runs
:class:`RandomPeerSet`. Its members are the normal downloader machinery
(:class:`services.downloader.downloader.Downloader`, each with its own persistence sink, so its
deliveries are recorded under the peer's node id like any downloader's), hosted in this one
process so the set can change without starting processes. Which peers to observe is decided by
:mod:`services.observer.peerset` (pure); this module only applies it:

* every tick, a member whose downloader recorded a disconnect is replaced: the disconnect's reason
  gives the outcome (refused, stalled, misbehaved, closed), the node is excluded for
  ``observer.exclude_failed_for`` and counted by outcome;
* every epoch, the members whose slot rotates are stopped (``rotated``) and the rest get a new
  ``peer_set_epochs`` row (the old one ends ``continued``);
* new connections wait for the :class:`~services.observer.peerset.AttemptBudget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc

from lnsync import db
from lnsync.chain import chain_hash
from lnsync.config import ConfigError, ObserverSettings, PeerAddress, Settings
from lnsync.db import require_database_url
from lnsync.service import ReadySignal, run_service
from services.downloader.downloader import Downloader
from services.downloader.forward import PersistenceSink
from services.downloader.options import PeerOptions
from services.downloader.sink import GossipSink
from services.observer import peerset as ps
from services.observer.metrics import CANDIDATES, EPOCH, MEMBERS, REPLACED

log = logging.getLogger(__name__)

CONTINUED = "continued"
# Candidates are re-read at every epoch and at most this often in between (when a slot is empty).
RELOAD_EVERY = 60.0
FLUSH_GRACE = 3.0
STOP_ATTEMPTS = 25  # x 0.2 s: how long a member's downloader gets to end once cancelled


CANDIDATES_SQL = "SELECT node_id, addresses FROM nodes WHERE length(addresses) > 0"


async def load_candidates(conn: Any) -> dict[str, PeerAddress]:
    """Every stored node with a dialable address, by node id in hex."""
    out: dict[str, PeerAddress] = {}
    for row in await conn.fetch(CANDIDATES_SQL):
        peer = ps.dialable(bytes(row["node_id"]), bytes(row["addresses"]))
        if peer is not None:
            out[peer.node_id] = peer
    return out


async def open_row(
    conn: Any, epoch: int, choice: ps.Choice, seed: int, now: float, joined: float | None = None
) -> int:
    """A row for ``choice`` observed from ``now`` in ``epoch``; ``joined``: when it joined the set
    (a continuation's), else now."""
    return int(
        await conn.fetchval(
            "INSERT INTO peer_set_epochs (epoch, slot, peer_id, address, seed, started, joined)"
            " VALUES ($1, $2, $3, $4, $5, to_timestamp($6), to_timestamp($7)) RETURNING id",
            epoch,
            choice.slot,
            choice.peer.node_id,
            f"{choice.peer.host}:{choice.peer.port}",
            seed,
            now,
            now if joined is None else joined,
        )
    )


async def close_row(conn: Any, row_id: int, outcome: str, now: float) -> None:
    await conn.execute(
        "UPDATE peer_set_epochs SET ended = to_timestamp($2), outcome = $3 WHERE id = $1 AND ended IS NULL",
        row_id,
        now,
        outcome,
    )


async def close_stale(conn: Any, now: float) -> int:
    """Rows left open by a process that died: ``stopped`` now (the end is an upper bound)."""
    result = await conn.execute(
        "UPDATE peer_set_epochs SET ended = to_timestamp($1), outcome = $2 WHERE ended IS NULL",
        now,
        ps.STOPPED,
    )
    return int(result.split()[-1])


RANDOM_SET_LOCK = 0x7065_6572_7365  # pg_advisory_xact_lock key ("peerse")
OPEN_ROWS_SQL = """
SELECT id, epoch, peer_id, extract(epoch FROM joined)::float8 AS joined
FROM peer_set_epochs WHERE ended IS NULL
"""
LAST_DELIVERY_SQL = """
SELECT peer_id, extract(epoch FROM last_message_at)::float8 AS at FROM peers WHERE peer_id = ANY($1::text[])
"""
# New members (not continuations) that joined in the last minute: the attempt budget's use.
RECENT_JOINS_SQL = """
SELECT count(*) FROM peer_set_epochs WHERE started = joined AND started > to_timestamp($1)
"""


async def maintain(conn: Any, o: ObserverSettings, now: float) -> tuple[list[ps.Choice], Counter[str]]:
    """One round of the random set kept entirely in the store (the peer controller's mode, whose
    downloaders run in their own pods): judge each open row by its peer's deliveries
    (:func:`~services.observer.peerset.store_verdict`), choose, and record the set. Returns the
    peers in the set now (new ones within the attempt budget) and this round's failures."""
    outcomes: Counter[str] = Counter()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RANDOM_SET_LOCK)
        candidates = await load_candidates(conn)
        rows = await conn.fetch(OPEN_ROWS_SQL)
        last = {
            r["peer_id"]: r["at"] for r in await conn.fetch(LAST_DELIVERY_SQL, [r["peer_id"] for r in rows])
        }
        members = {}
        for r in rows:
            verdict = ps.store_verdict(r["joined"], last.get(r["peer_id"]), now, o.stall_timeout)
            if verdict is None:
                members[r["peer_id"]] = r
                continue
            await close_row(conn, r["id"], verdict, now)
            outcomes[verdict] += 1
            REPLACED.labels(verdict).inc()
        excluded = set(await failed_until(conn, o.exclude_failed_for, now))
        epoch = ps.epoch_of(now, o.rotate_interval)
        desired = ps.choose(
            candidates,
            k=o.random_peers,
            seed=o.seed,
            epoch=epoch,
            period=ps.period_of(o.rotate_share),
            excluded=excluded,
        )
        wanted = {c.peer.node_id: c for c in desired}
        for peer, r in members.items():
            if peer not in wanted:
                await close_row(conn, r["id"], ps.ROTATED if peer in candidates else ps.GONE, now)
            elif r["epoch"] != epoch:
                await close_row(conn, r["id"], CONTINUED, now)
                await open_row(conn, epoch, wanted[peer], o.seed, now, r["joined"])
        recent = int(await conn.fetchval(RECENT_JOINS_SQL, now - 60))
        allowance = max(0, o.attempts_per_minute - recent)
        in_set = []
        for choice in desired:
            if choice.peer.node_id in members:
                in_set.append(choice)
            elif allowance > 0:
                allowance -= 1
                await open_row(conn, epoch, choice, o.seed, now)
                in_set.append(choice)
    CANDIDATES.set(len(candidates))
    MEMBERS.set(len(in_set))
    EPOCH.set(epoch)
    return in_set, outcomes


async def failed_until(conn: Any, exclude_for: int, now: float) -> dict[str, float]:
    """Peers that failed within ``exclude_for`` seconds, and until when they stay excluded (a
    restarted observer keeps excluding them)."""
    if not exclude_for:
        return {}
    rows = await conn.fetch(
        "SELECT peer_id, extract(epoch FROM max(ended))::float8 AS at FROM peer_set_epochs"
        " WHERE outcome = ANY($1::text[]) AND ended > to_timestamp($2) GROUP BY peer_id",
        list(ps.FAILURES),
        now - exclude_for,
    )
    return {r["peer_id"]: r["at"] + exclude_for for r in rows}


@dataclass
class Member:
    """One observed peer: its slot's choice, its open epoch row and its running downloader."""

    choice: ps.Choice
    row_id: int
    downloader: Downloader
    sink: GossipSink
    task: asyncio.Task[None]
    joined: float
    attempts_charged: int = 1

    @property
    def node_id(self) -> str:
        return self.choice.peer.node_id


SinkFactory = Callable[[PeerAddress], GossipSink]


class RandomPeerSet:
    """Keeps the random peer set running; :meth:`step` is one tick (tests drive it directly)."""

    service_names: tuple[str, ...] = ()

    def __init__(
        self,
        settings: Settings,
        *,
        pool: Any = None,
        sink_factory: SinkFactory | None = None,
        options: PeerOptions | None = None,
        tick: float = 1.0,
    ) -> None:
        self.settings = settings
        self.observer = o = settings.observer
        if o.random_peers < 1:
            raise ConfigError(
                "observer.random_peers is 0: set it (LNSYNC_OBSERVER__RANDOM_PEERS) to run a random peer set"
            )
        self.pool = pool
        self.url = require_database_url(settings) if pool is None else ""
        self.chain_hash = chain_hash(settings.network)
        self.sink_factory = sink_factory or self._persistence_sink
        base = options or PeerOptions.from_settings(settings.downloader)
        # The observer's stall rule is the downloader's own: it pings a quiet peer every third of
        # the timeout and drops it (reason "stall") when nothing, not even a pong, arrives.
        third = o.stall_timeout / 3
        self.options = replace(
            base, stall_timeout=float(o.stall_timeout), ping_interval=third, ping_timeout=third
        )
        self.period = ps.period_of(o.rotate_share)
        self.tick = tick
        self.members: dict[str, Member] = {}
        self.excluded: dict[str, float] = {}  # node id -> excluded until (unix time)
        self.outcomes: Counter[str] = Counter()
        self.candidates: dict[str, PeerAddress] = {}
        self.epoch: int | None = None
        self.budget: ps.AttemptBudget | None = None
        self._loaded_at = float("-inf")

    def _persistence_sink(self, peer: PeerAddress) -> GossipSink:
        return PersistenceSink(
            self.settings.persistence.target, peer.node_id, window=self.settings.downloader.max_unacked
        )

    def register(self, server: grpc.aio.Server) -> None:
        """Only health and reflection."""

    # --- one tick ---------------------------------------------------------------------------

    async def step(self, now: float) -> None:
        o = self.observer
        if self.budget is None:
            self.budget = ps.AttemptBudget(o.attempts_per_minute, now)
        epoch = ps.epoch_of(now, o.rotate_interval)
        new_epoch = epoch != self.epoch
        short = len(self.members) < o.random_peers
        if new_epoch or (short and now - self._loaded_at >= RELOAD_EVERY):
            async with self.pool.acquire() as conn:
                self.candidates = await load_candidates(conn)
            self._loaded_at = now
            CANDIDATES.set(len(self.candidates))
        self.excluded = {n: t for n, t in self.excluded.items() if t > now}
        await self._replace_failed(now)
        desired = ps.choose(
            self.candidates,
            k=o.random_peers,
            seed=o.seed,
            epoch=epoch,
            period=self.period,
            excluded=self.excluded,
        )
        wanted = {c.peer.node_id: c for c in desired}
        for node, member in list(self.members.items()):
            if node not in wanted:
                await self._stop(member, ps.ROTATED if node in self.candidates else ps.GONE, now)
        if new_epoch and self.epoch is not None:
            async with self.pool.acquire() as conn:
                for node, member in self.members.items():
                    await close_row(conn, member.row_id, CONTINUED, now)
                    member.choice = wanted[node]
                    member.row_id = await open_row(conn, epoch, member.choice, o.seed, now, member.joined)
        self.epoch = epoch
        EPOCH.set(epoch)
        for node, choice in wanted.items():
            if node not in self.members and self.budget.take(now):
                await self._start(choice, epoch, now)
        MEMBERS.set(len(self.members))

    async def _replace_failed(self, now: float) -> None:
        assert self.budget is not None
        for member in list(self.members.values()):
            stats = member.downloader.stats
            if stats.attempts > member.attempts_charged:  # reconnects count against the budget
                self.budget.charge(now, stats.attempts - member.attempts_charged)
                member.attempts_charged = stats.attempts
            if not stats.disconnects:
                continue
            outcome = ps.outcome_of(next(iter(stats.disconnects)))
            self.outcomes[outcome] += 1
            REPLACED.labels(outcome).inc()
            if self.observer.exclude_failed_for:
                self.excluded[member.node_id] = now + self.observer.exclude_failed_for
            log.info(
                "random set: %s %s (%s); replacing it",
                member.choice.peer,
                outcome,
                ", ".join(f"{k} {v}" for k, v in stats.disconnects.items()),
            )
            await self._stop(member, outcome, now)

    async def _start(self, choice: ps.Choice, epoch: int, now: float) -> None:
        sink = self.sink_factory(choice.peer)
        await sink.start()
        downloader = Downloader(choice.peer, self.chain_hash, sink, self.options)
        async with self.pool.acquire() as conn:
            row_id = await open_row(conn, epoch, choice, self.observer.seed, now)
        task = asyncio.create_task(downloader.run(), name=f"random-peer-{choice.peer.node_id[:16]}")
        self.members[choice.peer.node_id] = Member(choice, row_id, downloader, sink, task, now)
        log.info("random set: observing %s (slot %d, epoch %d)", choice.peer, choice.slot, epoch)

    async def _stop(self, member: Member, outcome: str, now: float) -> None:
        self.members.pop(member.node_id, None)
        # Cancel until the task ends: a cancellation that lands as an inner timeout fires (Python
        # 3.11's wait_for, e.g. the handshake's) can be lost, and the downloader would reconnect.
        for _ in range(STOP_ATTEMPTS):
            member.task.cancel()
            done, _ = await asyncio.wait({member.task}, timeout=0.2)
            if done:
                break
        else:
            log.warning("random set: %s's downloader did not stop", member.choice.peer)
        await member.downloader.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(member.sink.flush(), FLUSH_GRACE)
        await member.sink.close()
        async with self.pool.acquire() as conn:
            await close_row(conn, member.row_id, outcome, now)
        if outcome != ps.ROTATED:
            log.info("random set: %s left the set (%s)", member.choice.peer, outcome)

    # --- life cycle ---------------------------------------------------------------------------

    async def run(self, ready: ReadySignal) -> None:
        if self.pool is None:
            self.pool = await db.open_store(self.url, max_size=2)
        async with self.pool.acquire() as conn:
            stale = await close_stale(conn, time.time())
            self.excluded = await failed_until(conn, self.observer.exclude_failed_for, time.time())
        if stale:
            log.info("random set: closed %d epoch rows left open by an earlier run", stale)
        await ready.set(True)
        while True:
            try:
                await self.step(time.time())
            except db.TRANSIENT_ERRORS as exc:
                log.warning("random set: the store is unavailable (%s); retrying", exc)
            await asyncio.sleep(self.tick)

    async def stop_all(self, now: float) -> None:
        for member in list(self.members.values()):
            await self._stop(member, ps.STOPPED, now)
        MEMBERS.set(0)

    async def close(self) -> None:
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.stop_all(time.time())
            await self.pool.close()


async def main(settings: Settings) -> int:
    o = settings.observer
    return await run_service("random-peers", o.listen, RandomPeerSet(settings), o.metrics_listen)
