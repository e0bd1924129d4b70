"""Stored channels no longer funded on chain (chain.source set): spent since, or never checked.

Every ``chain.recheck_interval`` one persistence replica (a session advisory lock) checks every
stored channel not yet known to be closed against the chain source with the same verifier the
downloaders use. A final verdict other than verified (its output spent, or no matching output at
all: a channel stored before the source was configured, or imported unchecked) sets
``channel_announcements.closed_at`` (migration 008). From the first reference time after that,
lookup leaves the channel out of the live graph: no more updates, reminders or announcements for it
(docs/architecture.md, "Funding checks"). Too few confirmations changes nothing. A source that
stops answering ends the pass; the next one starts over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lnsync.chain.funding import Verdict
from lnsync.chain.verifier import FundingVerifier
from lnsync.gossip import messages as m
from lnsync.schema.columns import INT8_MIN
from services.persistence.metrics import CLOSED

log = logging.getLogger(__name__)

RECHECK_LOCK = 0x6C6E737370  # "lnssp": one replica rechecks at a time
PAGE = 1000
CHANNELS_SQL = """
SELECT scid, raw FROM channel_announcements
WHERE closed_at IS NULL AND scid > $1 ORDER BY scid LIMIT $2
"""
MARK_SQL = (
    "UPDATE channel_announcements SET closed_at = now() WHERE scid = ANY($1::int8[]) AND closed_at IS NULL"
)


def _closes(verdict: Verdict) -> bool:
    return verdict.final and verdict is not Verdict.VERIFIED


async def recheck(pool: Any, verifier: FundingVerifier) -> tuple[int, int] | None:
    """One pass: (channels checked, newly marked closed), or None if another replica is at it.
    Raises :class:`~lnsync.chain.sources.ChainUnavailable` when the source stops answering."""
    async with pool.acquire() as lock_conn:
        if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", RECHECK_LOCK):
            return None
        try:
            return await _pass(pool, verifier)
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", RECHECK_LOCK)


async def _pass(pool: Any, verifier: FundingVerifier) -> tuple[int, int]:
    after, checked, closed = INT8_MIN, 0, 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(CHANNELS_SQL, after, PAGE)
        if not rows:
            return checked, closed
        anns = [m.decode_channel_announcement(bytes(r["raw"])) for r in rows]
        verdicts = await asyncio.gather(
            *(verifier.check(a.short_channel_id, a.bitcoin_key_1, a.bitcoin_key_2) for a in anns)
        )
        found = [r["scid"] for r, j in zip(rows, verdicts, strict=True) if _closes(j.verdict)]
        if found:
            async with pool.acquire() as conn:
                await conn.execute(MARK_SQL, found)
            CLOSED.inc(len(found))
            log.info("%d channels no longer funded on chain (closed)", len(found))
        checked += len(rows)
        closed += len(found)
        after = rows[-1]["scid"]
