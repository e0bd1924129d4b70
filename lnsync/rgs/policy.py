"""The RGS serving policy: which requests are answered, for which reference time, with which blob.

Every rule lookup, the snapshotter and the gateway apply to a client's request lives here, so that
a new rule touches one module. Pure code.

* Versions: the format's own (:data:`lnsync.rgs.format.VERSIONS`).
* A client's ``last_sync_timestamp`` T may run ahead of our clock by :data:`FUTURE_TOLERANCE`;
  beyond that it is an error.
* The reference time R is "now" minus the ingest lag, rounded down to a step: the lookup
  granularity for dynamic deltas (so concurrent requests share R), the snapshot interval for
  generations.
* A client whose last sync is :data:`FULL_SYNC_AFTER` older than R gets the full graph.
* A client at or after R gets "nothing new": an empty blob at ``max(T, R)`` (never moving a client
  back in time).
* Snapshots: the smallest scope of the ladder covering R - T (:func:`lnsync.rgs.ladder.choose`),
  applicable until :func:`lnsync.rgs.ladder.apply_lag` after R.
"""

from __future__ import annotations

from lnsync.rgs import format as f
from lnsync.rgs import ladder
from lnsync.rgs.encode import encode_empty

VERSIONS = f.VERSIONS
# A client's clock may run a little ahead of ours; beyond this a timestamp is an error.
FUTURE_TOLERANCE = 60
# A client whose last sync is this old has pruned everything it had (LDK forgets data 7 days after
# the blob that wrote it), and retention may have pruned the rows its delta would read: it gets
# the full graph, computed as for T = 0 (the header stays R).
FULL_SYNC_AFTER = f.CLIENT_PRUNE_AFTER
# A dynamic delta is applied as soon as it is fetched; this much lag covers a slow client.
DYNAMIC_APPLY_LAG = 600


def version_problem(version: int) -> str | None:
    """Why ``version`` cannot be served (one line), or None."""
    if version in VERSIONS:
        return None
    return f"version must be {' or '.join(map(str, VERSIONS))}, not {version}"


def in_future(timestamp: int, now: float) -> bool:
    """True if a client's timestamp is further ahead of ``now`` than any clock skew explains."""
    return timestamp > now + FUTURE_TOLERANCE


def reference_time(now: float, ingest_lag: int, step: int) -> int:
    """R for a request at ``now``: everything seen before it is committed (``ingest_lag``), rounded
    down to ``step`` (the lookup granularity for dynamic deltas, the interval for generations)."""
    r = int(now) - ingest_lag
    return r - r % step


def effective_last_sync(last_sync: int, reference_time: int) -> int:
    """The T a delta is computed against: 0 (the full graph) once T is too old to build on."""
    if last_sync > 0 and reference_time - last_sync >= FULL_SYNC_AFTER:
        return 0
    return last_sync


def is_nothing_new(last_sync: int, reference_time: int) -> bool:
    """The client already holds everything up to R."""
    return last_sync >= reference_time


def nothing_new(chain_hash: bytes, last_sync: int, reference_time: int, version: int) -> tuple[int, bytes]:
    """(timestamp, blob) of the "nothing new" answer: an empty blob at ``max(T, R)``, so a client
    ahead of R (it applied a newer dynamic delta) keeps its own time."""
    timestamp = max(last_sync, reference_time)
    return timestamp, encode_empty(chain_hash, timestamp, version)


def ahead_of_generation(last_sync: int, reference_time: int) -> bool:
    """A client past a generation's R: the stored "nothing new" blob (at R) would move it back in
    time, so it gets :func:`nothing_new` at its own time instead."""
    return last_sync > reference_time


def choose_snapshot(last_sync: int, reference_time: int, scopes: list[int]) -> ladder.Choice:
    """Which blob of a generation at ``reference_time`` answers a client at ``last_sync``."""
    return ladder.choose(last_sync, reference_time, scopes)
