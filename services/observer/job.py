"""The aggregation job: fold closed intervals of raw deliveries into summaries, prune old summaries.

It runs inside persistence (a task beside retention, :mod:`services.persistence.server`), because
persistence owns the ``observations`` table, its retention and its database pool: no extra process,
Deployment or life cycle. An interval ``[s, s + interval)`` is *closed* once
``s + interval + max_delay + ingest_lag`` has passed: every delivery that can count for its messages
has then been committed. Each pass summarises at most ``MAX_INTERVALS`` closed intervals in one
transaction (a catch-up after downtime takes several passes) under an advisory lock, so replicas
never fold the same interval twice. Retention must not prune raw rows the job still needs;
persistence's retention task keeps rows from ``summarised_until - max_delay`` on
(:func:`raw_retention`).

Prometheus metrics are updated from each fold (no extra queries): running totals of deliveries,
unique messages and counted deliveries by kind (rates and redundancy follow from them in PromQL),
and gauges describing the last folded interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from lnsync.db import TRANSIENT_ERRORS
from services.observer import queries, stats
from services.observer.metrics import (
    COUNTED,
    DELIVERIES,
    LAST_REDUNDANCY,
    LAST_T50,
    LAST_T95,
    MESSAGES,
    PEER_COVERAGE,
    PEER_MEAN_RANK,
    SUMMARISED_UNTIL,
)

log = logging.getLogger(__name__)

OBSERVER_LOCK = 0x6F62_7365_7276  # pg_try_advisory_xact_lock key ("observ")
MAX_INTERVALS = 24
MAX_PASS_EVERY = 60  # seconds between passes, at most (a pass with nothing closed is two cheap queries)


@dataclass
class FoldResult:
    lo: float
    hi: float
    kinds: stats.Kinds
    peers: stats.Peers


def closed_until(now: float, *, interval: int, max_delay: int, ingest_lag: int) -> int:
    """End of the last interval no further delivery can change."""
    return int(now - max_delay - ingest_lag) // interval * interval


async def fold(
    pool: Any, *, now: float, interval: int, max_delay: int, ingest_lag: int, summary_retention: int
) -> FoldResult | None:
    """One pass: summarise up to ``MAX_INTERVALS`` closed intervals; None when another replica
    holds the job or nothing is closed yet."""
    closed = closed_until(now, interval=interval, max_delay=max_delay, ingest_lag=ingest_lag)
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", OBSERVER_LOCK):
            return None
        until = await queries.summarised_until(conn)
        oldest = await queries.oldest_delivery(conn)
        if oldest is not None:
            oldest_start = int(oldest) // interval * interval
            until = oldest_start if until is None else max(until, oldest_start)
        if until is None:  # nothing recorded yet
            return None
        lo = int(until)
        hi = min(closed, lo + MAX_INTERVALS * interval)
        if hi > lo:
            kinds, peers = await queries.summarise_range(conn, lo, hi, interval=interval, max_delay=max_delay)
            await queries.store_summaries(conn, kinds, peers, interval)
        else:
            kinds, peers = {}, {}
        await conn.execute("UPDATE observer_state SET summarised_until = to_timestamp($1)", max(hi, lo))
        if summary_retention:
            horizon = queries.ts(now - summary_retention)
            await conn.execute("DELETE FROM observation_summaries WHERE interval_start < $1", horizon)
            await conn.execute("DELETE FROM observation_peer_summaries WHERE interval_start < $1", horizon)
        names = await queries.peer_names(conn) if peers else {}
    result = FoldResult(lo, max(hi, lo), kinds, peers)
    _export(result, names)
    return result if hi > lo else None


def _export(result: FoldResult, names: dict[int, str]) -> None:
    SUMMARISED_UNTIL.set(result.hi)
    last = max((start for start, _ in result.kinds), default=None)
    for (start, kind), s in result.kinds.items():
        label = stats.KINDS.get(kind, str(kind))
        DELIVERIES.labels(label).inc(s.deliveries)
        MESSAGES.labels(label).inc(s.messages)
        COUNTED.labels(label).inc(s.counted)
        if start == last and s.messages:
            LAST_REDUNDANCY.labels(label).set(s.counted / s.messages)
            for gauge, hist in ((LAST_T50, s.t50_hist), (LAST_T95, s.t95_hist)):
                q = stats.quantile(hist, 0.5)
                if q is not None:
                    gauge.labels(label).set(q)
    if last is None:
        return
    unique = sum(s.messages for (start, _), s in result.kinds.items() if start == last)
    latest = {key: p for key, p in result.peers.items() if key[0] == last}
    for f in stats.peer_figures(stats.merge_peers(latest), unique):
        name = names.get(f.peer, str(f.peer))
        PEER_COVERAGE.labels(name).set(f.coverage)
        if f.messages:
            PEER_MEAN_RANK.labels(name).set(f.mean_rank)


def raw_retention(observation_retention: int, summarised: float | None, *, now: float, max_delay: int) -> int:
    """Retention (seconds) for raw rows that spares what the job has not summarised yet."""
    if not observation_retention or summarised is None:
        return observation_retention
    return max(observation_retention, int(now - summarised) + max_delay + 1)


async def run(pool: Any, *, interval: int, max_delay: int, ingest_lag: int, summary_retention: int) -> None:
    """Fold on a schedule (a tenth of an interval, at most a minute) until cancelled; database
    trouble only delays it."""
    every = max(1, min(MAX_PASS_EVERY, interval // 10))
    while True:
        try:
            while True:  # catch up without waiting between full passes
                result = await fold(
                    pool,
                    now=time.time(),
                    interval=interval,
                    max_delay=max_delay,
                    ingest_lag=ingest_lag,
                    summary_retention=summary_retention,
                )
                if result is None:
                    break
                log.info("observer: summarised %s .. %s", queries.ts(result.lo), queries.ts(result.hi))
        except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("observer pass failed (%s); next try in %d s", exc, every)
        except Exception:  # a bug must not end the job for the life of the process
            log.exception("observer pass failed; next try in %d s", every)
        await asyncio.sleep(every)
