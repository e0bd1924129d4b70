"""The reminder schedule: when a channel that did not change is re-sent anyway.

LDK clients forget a channel direction ``CLIENT_LIFETIME`` (7 days) after the header time of the
last blob that wrote it, so the server must keep re-writing stable channels. Every channel is
assigned to one of ``period / slot`` buckets by a hash of its short channel id; bucket *b* is due at
every time ``t`` with ``t ≡ b·slot (mod period)``. A delta for (T, R] re-sends the channels whose
bucket was due in that window. The reasoning and the guarantees are in docs/reminders.md.

All functions are vectorised over NumPy arrays of short channel ids or buckets.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64's finaliser: spreads similar scids (same block) over all buckets."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def bucket_of(scid: NDArray[np.uint64], period: int, slot: int) -> NDArray[np.int64]:
    buckets: NDArray[np.int64] = (mix64(scid) % np.uint64(period // slot)).astype(np.int64)
    return buckets


def last_due(bucket: NDArray[np.int64], t: int, period: int, slot: int) -> NDArray[np.int64]:
    """The latest time <= ``t`` at which each bucket was due."""
    offset = bucket * slot
    due: NDArray[np.int64] = np.int64(t) - np.mod(np.int64(t) - offset, period)
    return due


def due_between(bucket: NDArray[np.int64], start: int, end: int, period: int, slot: int) -> NDArray[np.bool_]:
    """Whether each bucket became due in the half-open window ``(start, end]``."""
    return last_due(bucket, end, period, slot) > start
