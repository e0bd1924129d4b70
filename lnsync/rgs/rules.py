"""The store's rules for one incoming message, shared by the in-memory model
(:mod:`lnsync.rgs.history`) and the persistence service, so that both store exactly the same thing.

Given what the store currently holds for a channel direction (or a node), decide whether an
arriving message is new, a duplicate or stale, and which change bits it carries. See
docs/architecture.md, "The store".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lnsync.rgs import format as f

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


def too_far_ahead(timestamp: int, received: int) -> bool:
    """True if a message dated ``timestamp`` must be refused, having been received at ``received``
    (both whole seconds; pass the earlier of the receipt time and now)."""
    return timestamp > received + MAX_AHEAD


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
