"""The snapshot ladder: which precomputed scopes exist and which one answers a client's timestamp.

Scopes start at the snapshot interval and double until the first one of at least 21 days, then
comes the full snapshot (the reference server's ladder). A snapshot of scope S is computed against
R - S, so it carries everything any client whose last sync T satisfies R - S <= T <= R lacks: it is
served to every such client for which S is the smallest covering scope. Pure code.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_FINITE_SCOPE = 21 * 86400
FULL = 0  # the scope value that stands for "full snapshot"
NOTHING_NEW = -1  # and for the empty "nothing new" blob
# Time a generation may take after its reference time R plus the ingest lag until it is published
# (computing it, fetch delays): part of every snapshot's apply lag.
APPLY_MARGIN = 600
# How far behind a client may be and still be given a delta rather than need its channels
# re-announced: LDK forgets channel directions not updated for 14 days.
CLIENT_HORIZON = 14 * 86400


def scopes(interval: int) -> list[int]:
    """Finite scopes in seconds, ascending, for a snapshot interval (the full snapshot comes on top)."""
    if interval <= 0:
        raise ValueError("interval must be positive")
    out = [interval]
    while out[-1] < MAX_FINITE_SCOPE:
        out.append(out[-1] * 2)
    return out


@dataclass(frozen=True, slots=True)
class Choice:
    """Which stored blob answers a request: a scope, FULL or NOTHING_NEW."""

    scope: int

    @property
    def kind(self) -> str:
        return "full" if self.scope == FULL else "nothing_new" if self.scope == NOTHING_NEW else "delta"


def choose(last_sync: int, reference_time: int, ladder: list[int]) -> Choice:
    """The snapshot for a client whose last sync is ``last_sync`` in the generation at ``reference_time``.

    * 0 (never synced) -> the full snapshot;
    * at or after R -> nothing new;
    * otherwise the smallest scope covering R - T, whether or not T is on the reference server's
      3-hour grid (any timestamp this server or a dynamic delta returned maps to a correct answer);
    * older than the largest finite scope -> the full snapshot: it is complete, and after such a gap
      the client may have pruned channels that only a full snapshot re-announces.
    """
    if last_sync == 0:
        return Choice(FULL)
    if last_sync >= reference_time:
        return Choice(NOTHING_NEW)
    gap = reference_time - last_sync
    for scope in ladder:
        if scope >= gap:
            return Choice(scope)
    return Choice(FULL)


def apply_lag(interval: int, ingest_lag: int, cache_lifetime: int) -> int:
    """How long after its reference time R a snapshot blob may still be applied by a client: the
    generation is published by R + ingest_lag + APPLY_MARGIN and served until the next one (one
    interval later), and an HTTP cache may hand out a copy fetched at the last moment for up to
    ``cache_lifetime`` more (``GatewaySettings.cache_lifetime``: the longer of max-age and
    s-maxage, plus stale-while-revalidate). The engine's repair and reminder rules use it
    (docs/reminders.md), so a client applying the blob by then has lost no channel."""
    return interval + ingest_lag + APPLY_MARGIN + cache_lifetime


def min_superseded_retention(interval: int, ingest_lag: int) -> int:
    """The shortest ``persistence.superseded_retention`` that keeps every row a served delta needs.

    A delta against T reads the change masks of the updates seen since T, including updates already
    superseded; snapshots reach back the largest finite scope from R (computed up to
    ingest_lag + APPLY_MARGIN after R), dynamic deltas at least CLIENT_HORIZON.
    """
    return max(CLIENT_HORIZON, scopes(interval)[-1]) + ingest_lag + APPLY_MARGIN
