"""The store's rules for one incoming message, shared by the in-memory model
(:mod:`lnsync.rgs.history`) and the persistence service, so that both store exactly the same thing.

Given what the store currently holds for a channel direction (or a node), decide whether an
arriving message is new, a duplicate or stale, and which change bits it carries. See
docs/architecture.md, "The store".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from lnsync.rgs import format as f

if TYPE_CHECKING:
    import numpy as np

# (disabled, cltv_expiry_delta, htlc_minimum_msat, fee_base_msat, fee_proportional_millionths,
#  htlc_maximum_msat): what RGS transmits of a channel direction.
Policy = tuple[int, int, int, int, int, int]
_POLICY_BITS = (f.UPDATE_DISABLED, *f.FIELD_BITS)

NEW_LIFE_MASK = 0x7E
# A channel_update or node_announcement dated more than this after it was received is refused
# (LDK drops updates more than a day ahead too): stored, it would be its direction's latest and
# every later real update would be classed stale.
MAX_AHEAD = 86400
FUTURE_REASON = "timestamp_in_future"
NODE_FEATURES_CHANGED = 0x01
NODE_ADDRESSES_CHANGED = 0x02


class Outcome(Enum):
    STORED = "stored"  # a new row; it becomes the latest
    STALE = "stale"  # a new row, not newer than the latest: never visible to clients
    DUPLICATE = "duplicate"  # the same (key, timestamp) is already stored


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    change_mask: int = 0
    starts_life: bool = False
    # A node_announcement that wins the tie with the stored latest one (same timestamp, different
    # content): it replaces that row's content; change_mask is what differs from it.
    replaces: bool = False


def policy_changes(old: Policy, new: Policy) -> int:
    """Change bits (RGS update flag bits) of the fields that differ."""
    if old == new:  # most updates only refresh the timestamp
        return 0
    mask = 0
    for bit, a, b in zip(_POLICY_BITS, old, new, strict=True):
        if a != b:
            mask |= bit
    return mask


# Decisions are immutable, so the few distinct ones are built once (this runs per message).
_DUPLICATE = Decision(Outcome.DUPLICATE)
_STALE = Decision(Outcome.STALE)
_NEW_LIFE = Decision(Outcome.STORED, NEW_LIFE_MASK, True)
_STORED = tuple(Decision(Outcome.STORED, mask, False) for mask in range(NEW_LIFE_MASK + 1))


@overload
def too_far_ahead(timestamp: int, received: int) -> bool: ...
@overload
def too_far_ahead(timestamp: np.ndarray, received: np.ndarray) -> np.ndarray: ...
def too_far_ahead(timestamp: Any, received: Any) -> Any:
    """True if a message dated ``timestamp`` must be refused, having been received at ``received``
    (both whole seconds; pass the earlier of the receipt time and now). Element-wise on arrays."""
    return timestamp > received + MAX_AHEAD


def received_or_now(received_us: int, now_us: int) -> int:
    """A message's receipt time (µs): the producer's, or now when it gives none (not positive)."""
    return received_us if received_us > 0 else now_us


@overload
def judged_at(received_us: int, now_us: int) -> int: ...
@overload
def judged_at(received_us: np.ndarray, now_us: int) -> np.ndarray: ...
def judged_at(received_us: Any, now_us: int) -> Any:
    """The time, in whole seconds, :func:`too_far_ahead` judges a message against: its receipt
    time (:func:`received_or_now`), never later than now. Element-wise on an array of receipt
    times (by its own methods: the model does not import NumPy)."""
    if isinstance(received_us, int):
        return min(received_or_now(received_us, now_us), now_us) // 1_000_000
    given = received_us > 0
    return (received_us * given + now_us * ~given).clip(max=now_us) // 1_000_000


def decide_update(
    latest: tuple[int, Policy] | None, timestamp: int, seen: int, policy: Policy, duplicate: bool
) -> Decision:
    """Classify a channel_update given the direction's latest ``(timestamp, policy)``.

    ``duplicate``: a row with the same (scid, direction, timestamp) is already stored.
    ``seen`` is in whole seconds.
    """
    if duplicate:
        return _DUPLICATE
    if latest is None:
        return _NEW_LIFE
    latest_ts, latest_policy = latest
    if timestamp <= latest_ts:
        return _STALE
    if seen - latest_ts > f.STALE_AFTER:
        # The direction had been dead (no update for two weeks): clients forgot it, so it comes
        # back as a new life and is sent in full.
        return _NEW_LIFE
    return _STORED[policy_changes(latest_policy, policy)]


class Decided(NamedTuple):
    """:func:`decide_updates`' answer, one entry per update in arrival order."""

    outcome: np.ndarray  # int8: an index into OUTCOMES
    change_mask: np.ndarray  # int64
    starts_life: np.ndarray  # bool


OUTCOMES = (Outcome.STORED, Outcome.STALE, Outcome.DUPLICATE)  # Decided.outcome's codes


def decide_updates(
    group: np.ndarray,
    timestamp: np.ndarray,
    seen: np.ndarray,
    policy: np.ndarray,
    duplicate: np.ndarray,
    latest_ts: np.ndarray,
    latest_policy: np.ndarray,
) -> Decided:
    """:func:`decide_update` over a whole batch at once, column-wise (the persistence writer's hot
    path; ``tests/rgs/test_decide_updates.py`` checks it against a fold of :func:`decide_update`).

    The batch's updates in arrival order: ``group`` (int64, the index of each one's direction),
    ``timestamp`` and ``seen`` (int64, whole seconds), ``policy`` (uint64, one :data:`Policy` a row)
    and ``duplicate`` (bool). Per direction, its latest before the batch: ``latest_ts`` (int64, -1
    if none) and ``latest_policy`` (uint64 rows). Each update is decided against its direction's
    latest as the updates before it in the batch left it.
    """
    import numpy as np

    n = len(group)
    order = np.argsort(group, kind="stable")  # by direction, in arrival order within one
    g = group[order].astype(np.int64)
    ts = timestamp[order]
    dup = duplicate[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    # A stored update's timestamp beats every earlier one, so the latest's timestamp before an
    # update is the highest timestamp of the direction's earlier non-duplicates (and its latest).
    # Prefix maxima restart per direction: each direction's values are shifted above the last's.
    base = g << 33  # timestamps are u32
    higher = np.maximum.accumulate(base + np.where(dup, 0, ts + 1)) - base - 1
    latest = _earlier(higher, first)
    latest = np.maximum(latest, latest_ts[g])
    stored = ~dup & (ts > latest)
    new_life = stored & ((latest < 0) | (seen[order] - latest > f.STALE_AFTER))
    # The policy to compare with: the direction's last stored update before this one, or its latest.
    base = g << 32
    last = _earlier(np.maximum.accumulate(base + np.where(stored, np.arange(n) + 1, 0)) - base - 1, first)
    pol = policy[order]
    old = np.where((last >= 0)[:, None], pol[np.maximum(last, 0)], latest_policy[g])
    mask = ((pol != old) * np.array(_POLICY_BITS, dtype=np.int64)).sum(axis=1)
    mask = np.where(new_life, NEW_LIFE_MASK, mask)
    outcome = np.where(stored, 0, np.where(dup, 2, 1)).astype(np.int8)
    decided = Decided(np.empty_like(outcome), np.zeros(n, dtype=np.int64), np.empty(n, dtype=bool))
    decided.outcome[order] = outcome
    decided.change_mask[order] = np.where(stored, mask, 0)
    decided.starts_life[order] = new_life
    return decided


def _earlier(inclusive: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per-direction prefix values shifted to exclude each element itself (-1 at a direction's first)."""
    import numpy as np

    out = np.empty_like(inclusive)
    out[0] = -1
    out[1:] = inclusive[:-1]
    out[first] = -1
    return out


def node_tie_winner(stored_raw: bytes, raw: bytes) -> bool:
    """Whether an arriving node_announcement replaces the stored one of the same node and timestamp.

    BOLT 7 leaves equal timestamps undecided, so "the first one stored wins" would make what a
    server serves depend on arrival order. The lexicographically greater raw message (type,
    signature and body, as received) wins: every server ends with the same node, whatever the order.
    """
    return raw > stored_raw


def decide_node(
    latest: tuple[int, bytes, bytes, bytes] | None,
    timestamp: int,
    features: bytes,
    addresses: bytes,
    raw: bytes,
    duplicate: bool,
) -> Decision:
    """Classify a node_announcement given the node's latest ``(timestamp, features, addresses,
    raw)``. ``duplicate``: a row with the same (node id, timestamp) is already stored; when that row
    is the latest and :func:`node_tie_winner` says so, the arrival replaces its content."""
    if duplicate:
        if latest is not None and latest[0] == timestamp and node_tie_winner(latest[3], raw):
            return Decision(
                Outcome.STORED, _node_changes(latest[1], latest[2], features, addresses), replaces=True
            )
        return Decision(Outcome.DUPLICATE)
    if latest is None:
        return Decision(Outcome.STORED, NODE_FEATURES_CHANGED | NODE_ADDRESSES_CHANGED, True)
    latest_ts, latest_features, latest_addresses, _ = latest
    if timestamp <= latest_ts:
        return Decision(Outcome.STALE)
    return Decision(
        Outcome.STORED, _node_changes(latest_features, latest_addresses, features, addresses), False
    )


def _node_changes(old_features: bytes, old_addresses: bytes, features: bytes, addresses: bytes) -> int:
    return (NODE_FEATURES_CHANGED if features != old_features else 0) | (
        NODE_ADDRESSES_CHANGED if addresses != old_addresses else 0
    )
