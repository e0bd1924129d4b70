"""Retention: delete what no client can need any more, in small batches beside ingest.

What goes (``now`` is the pass's wall-clock time; ``cutoff = now - superseded_retention``):

* **Superseded updates.** A channel_update with a newer update of its direction (higher gossip
  timestamp) seen before ``cutoff``. Lookup computes a delta (T, R] only from rows seen in
  [T, R) and each direction's latest before R; with ``T >= cutoff`` neither can involve such a
  row. Never a direction's latest or current life-start row; an older life start only once a
  newer life start was seen before ``cutoff`` (lookup dates a life by the last start before R).
  Superseded node_announcements likewise (never a node's latest or first).
* **Dead channels.** Both directions' latest gossip timestamps more than 28 days old (the
  channel has been dead, by the 14-day rule, for more than 14 days), or an announcement seen
  more than 28 days ago still missing a direction: the announcement, all its updates, its
  direction rows.
* **Pending updates.** Directions of channels never announced whose latest update was seen more
  than ``pending_update_ttl`` ago.
* **Observations** older than ``observation_retention``.

Each batch is its own short transaction, and batches touching the store take the writer's
advisory lock, so a batch's decision and its deletes are atomic against concurrent ingest while
ingest is never held up for more than one batch. Batches that delete anything of the store stamp
``writer_state``: writers drop what they cached of it and make again a decision made ahead of the
lock (it may have found a row deleted since). Clients whose last sync is older than
``cutoff`` must get a full sync (lookup's and the gateway's job).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from lnsync.rgs import format as f
from lnsync.schema.columns import INT8_MIN
from services.persistence.store import WRITER_LOCK, to_timestamp

log = logging.getLogger(__name__)

DEAD_AFTER = 2 * f.STALE_AFTER  # dead (14 days without an update) for 14 more days
ID_CHUNK = 5_000  # update ids examined per superseded-pruning batch (~50 ms under the lock)
CHANNEL_CHUNK = 200  # channels per dead/pending batch
OBSERVATION_CHUNK = 20_000

SUPERSEDED_UPDATES_SQL = """
DELETE FROM channel_updates WHERE id IN (
    SELECT u.id FROM channel_updates u
    WHERE u.id >= $1 AND u.id < $2 AND u.seen < $3
      AND NOT EXISTS (SELECT 1 FROM channel_directions d
                      WHERE d.scid = u.scid AND d.direction = u.direction
                        AND (d.update_id = u.id OR d.alive_update_id = u.id))
      AND CASE WHEN u.starts_life THEN
            EXISTS (SELECT 1 FROM channel_updates w
                    WHERE w.scid = u.scid AND w.direction = u.direction AND w.starts_life
                      AND w.seen > u.seen AND w.seen < $3)
          ELSE
            EXISTS (SELECT 1 FROM channel_updates v
                    WHERE v.scid = u.scid AND v.direction = u.direction
                      AND v.timestamp > u.timestamp AND v.seen < $3)
          END)
"""
SUPERSEDED_NODES_SQL = """
DELETE FROM node_announcements WHERE id IN (
    SELECT a.id FROM node_announcements a
    WHERE a.id >= $1 AND a.id < $2 AND a.seen < $3
      AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = a.node_id
                      AND (n.announcement_id = a.id OR n.first_announcement_id = a.id))
      AND EXISTS (SELECT 1 FROM node_announcements v
                  WHERE v.node_id = a.node_id AND v.timestamp > a.timestamp AND v.seen < $3))
"""
DEAD_CHANNELS_SQL = """
SELECT a.scid FROM channel_announcements a
LEFT JOIN channel_directions d0 ON d0.scid = a.scid AND d0.direction = 0
LEFT JOIN channel_directions d1 ON d1.scid = a.scid AND d1.direction = 1
WHERE ($1::int8 IS NULL OR a.scid > $1)
  AND CASE WHEN d0.scid IS NULL OR d1.scid IS NULL THEN a.seen < to_timestamp($2)
           ELSE least(d0.timestamp, d1.timestamp) < $2 END
ORDER BY a.scid LIMIT $3
"""
PENDING_SQL = """
SELECT d.scid, d.direction FROM channel_directions d
WHERE (d.scid, d.direction) > ($1, $2) AND d.seen < $3
  AND NOT EXISTS (SELECT 1 FROM channel_announcements a WHERE a.scid = d.scid)
ORDER BY d.scid, d.direction LIMIT $4
"""
DELETE_DIRECTIONS_SQL = """
WITH k AS (SELECT * FROM unnest($1::int8[], $2::int2[]) AS k(scid, direction)),
     u AS (DELETE FROM channel_updates x USING k WHERE x.scid = k.scid AND x.direction = k.direction)
DELETE FROM channel_directions x USING k WHERE x.scid = k.scid AND x.direction = k.direction
"""
OBSERVATIONS_SQL = """
DELETE FROM observations WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM observations WHERE received < $1 LIMIT $2))
"""
# Deleting directions invalidates what writers cached of them (see services.persistence.store).
STAMP_SQL = "UPDATE writer_state SET writer = 0, batch = batch + 1"


@dataclass
class PruneStats:
    superseded_updates: int = 0
    superseded_node_announcements: int = 0
    dead_channels: int = 0
    pending_directions: int = 0
    observations: int = 0

    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


def _count(status: str) -> int:
    """Rows affected, from asyncpg's command status ("DELETE 12")."""
    return int(status.rsplit(" ", 1)[-1])


async def prune(
    pool: Any,
    *,
    now: float,
    superseded_retention: int,
    pending_update_ttl: int,
    observation_retention: int,
) -> PruneStats:
    """One retention pass (see the module docstring); returns what it deleted."""
    stats = PruneStats()
    cutoff = to_timestamp(int((now - superseded_retention) * 1_000_000))
    await _prune_superseded(pool, "channel_updates", SUPERSEDED_UPDATES_SQL, cutoff, stats)
    await _prune_superseded(pool, "node_announcements", SUPERSEDED_NODES_SQL, cutoff, stats)
    await _prune_dead_channels(pool, int(now) - DEAD_AFTER, stats)
    await _prune_pending(pool, to_timestamp(int((now - pending_update_ttl) * 1_000_000)), stats)
    if observation_retention:
        horizon = to_timestamp(int((now - observation_retention) * 1_000_000))
        while True:
            async with pool.acquire() as conn:
                n = _count(await conn.execute(OBSERVATIONS_SQL, horizon, OBSERVATION_CHUNK))
            stats.observations += n
            if n < OBSERVATION_CHUNK:
                break
            await asyncio.sleep(0)
    return stats


async def _prune_superseded(pool: Any, table: str, sql: str, cutoff: Any, stats: PruneStats) -> None:
    async with pool.acquire() as conn:
        lo, hi = await conn.fetchrow(f"SELECT min(id), max(id) FROM {table}")  # noqa: S608 - fixed names
    if lo is None:
        return
    start = lo
    while start <= hi:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK)
            n = _count(await conn.execute(sql, start, start + ID_CHUNK, cutoff))
            if n:  # a writer's decision made ahead may have found one of these rows
                await conn.execute(STAMP_SQL)
        if table == "channel_updates":
            stats.superseded_updates += n
        else:
            stats.superseded_node_announcements += n
        start += ID_CHUNK
        await asyncio.sleep(0)


async def _prune_keyed(
    pool: Any,
    select: str,
    select_args: Callable[[Any], tuple[Any, ...]],
    delete: Callable[[Any, list[Any]], Awaitable[None]],
) -> int:
    """Delete what ``select`` finds (ordered by key, after a key), a chunk per locked transaction."""
    after: Any = None
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK)
            rows = await conn.fetch(select, *select_args(after), CHANNEL_CHUNK)
            if rows:
                await delete(conn, rows)
                await conn.execute(STAMP_SQL)
        total += len(rows)
        if len(rows) < CHANNEL_CHUNK:
            return total
        after = rows[-1]
        await asyncio.sleep(0)


async def _prune_dead_channels(pool: Any, dead_before: int, stats: PruneStats) -> None:
    async def delete(conn: Any, rows: list[Any]) -> None:
        scids = [r[0] for r in rows]
        await conn.execute(DELETE_DIRECTIONS_SQL, scids * 2, [0] * len(scids) + [1] * len(scids))
        await conn.execute("DELETE FROM channel_announcements WHERE scid = ANY($1::int8[])", scids)

    def args(after: Any) -> tuple[Any, ...]:
        return (None if after is None else after[0], dead_before)

    stats.dead_channels += await _prune_keyed(pool, DEAD_CHANNELS_SQL, args, delete)


async def _prune_pending(pool: Any, seen_before: Any, stats: PruneStats) -> None:
    async def delete(conn: Any, rows: list[Any]) -> None:
        await conn.execute(DELETE_DIRECTIONS_SQL, [r[0] for r in rows], [r[1] for r in rows])

    def args(after: Any) -> tuple[Any, ...]:
        return (INT8_MIN, -1, seen_before) if after is None else (after[0], after[1], seen_before)

    stats.pending_directions += await _prune_keyed(pool, PENDING_SQL, args, delete)
