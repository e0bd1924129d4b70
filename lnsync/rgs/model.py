"""The delta engine's input and output.

The input, :class:`DeltaInput`, summarises the store for one (T, R) pair: every live channel with
its two directions' current values and which fields changed during ``[T, R)``, and every node those
channels reference. It is columnar (NumPy arrays, one row per channel) because a mainnet graph has
~50k channels and the engine must scan all of them for every delta; both the in-memory model
(:mod:`lnsync.rgs.history`) and the lookup service's SQL produce it.

The output, :class:`DeltaSet`, is exactly what goes on the wire, in wire order; the encoder only
turns it into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from lnsync.rgs import format as f

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
U8 = NDArray[np.uint8]
Bool = NDArray[np.bool_]


# A direction's value fields and its disabled flag, as update change bits.
DIRECTION_CHANGE_BITS = f.VALUE_FIELDS_MASK | f.UPDATE_DISABLED


@dataclass
class ChannelTable:
    """Live channels at R, ascending by short channel id. Direction columns have shape (n, 2)."""

    scid: U64
    node_1: I32  # index into NodeTable
    node_2: I32
    features: list[bytes]
    funding_sats: I64  # -1 when unknown
    # Since when the channel has been usable (announcement and both directions present, alive):
    # a client that synced before this does not know the channel.
    live_since: I64
    disabled: Bool
    cltv_expiry_delta: I64
    htlc_minimum_msat: U64
    fee_base_msat: I64
    fee_proportional_millionths: I64
    htlc_maximum_msat: U64
    # OR of the store's change_mask over the direction's updates seen in [T, R).
    changes: U8

    def __len__(self) -> int:
        return len(self.scid)

    def direction_values(self, i: int, d: int) -> tuple[bool, int, int, int, int, int]:
        """Row ``i``'s direction ``d`` as a client holds it: disabled, cltv_expiry_delta,
        htlc_minimum_msat, fee_base_msat, fee_proportional_millionths, htlc_maximum_msat."""
        return (
            bool(self.disabled[i, d]),
            int(self.cltv_expiry_delta[i, d]),
            int(self.htlc_minimum_msat[i, d]),
            int(self.fee_base_msat[i, d]),
            int(self.fee_proportional_millionths[i, d]),
            int(self.htlc_maximum_msat[i, d]),
        )

    @classmethod
    def empty(cls) -> ChannelTable:
        z2 = np.zeros((0, 2), dtype=np.int64)
        return cls(
            scid=np.zeros(0, np.uint64), node_1=np.zeros(0, np.int32), node_2=np.zeros(0, np.int32),
            features=[], funding_sats=np.zeros(0, np.int64), live_since=np.zeros(0, np.int64),
            disabled=np.zeros((0, 2), np.bool_), cltv_expiry_delta=z2, htlc_minimum_msat=z2.astype(np.uint64),
            fee_base_msat=z2, fee_proportional_millionths=z2, htlc_maximum_msat=z2.astype(np.uint64),
            changes=np.zeros((0, 2), np.uint8),
        )  # fmt: skip


@dataclass
class NodeTable:
    """Nodes referenced by live channels (any order; the encoder fixes the wire order)."""

    node_id: list[bytes]
    has_announcement: Bool
    features: list[bytes]  # b"" without an announcement
    addresses: list[bytes]  # raw BOLT 7 address descriptors, b"" without an announcement
    first_seen: I64  # seen time of the node's first announcement, -1 if none
    changes: U8  # OR of the store's node change_mask over announcements seen in [T, R)

    def __len__(self) -> int:
        return len(self.node_id)


@dataclass
class DeltaInput:
    chain_hash: bytes
    last_sync: int  # T
    reference_time: int  # R
    channels: ChannelTable
    nodes: NodeTable


@dataclass(frozen=True)
class DeltaParams:
    """Engine knobs. The defaults are what lnsync serves; see docs/reminders.md for the reasoning."""

    # Header timestamps are R rounded down to this many seconds.
    timestamp_granularity: int = 1
    # Every live channel is re-sent at least once per reminder period (in one of its buckets).
    reminder_period: int = 4 * 86400
    # One bucket of channels becomes due every slot.
    reminder_slot: int = 6 * 3600
    # How long after R a client may apply the blob (a snapshot is served until the next generation).
    apply_lag: int = 3600
    # How long data written by a blob survives on the client (LDK: prune after 14 d, backdate 7 d).
    client_lifetime: int = f.CLIENT_LIFETIME

    def __post_init__(self) -> None:
        if self.reminder_slot <= 0 or self.reminder_period % self.reminder_slot:
            raise ValueError("reminder_period must be a positive multiple of reminder_slot")
        if self.timestamp_granularity <= 0:
            raise ValueError("timestamp_granularity must be positive")


# -- output ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeDetails:
    """v2 node data. ``None`` parts are not sent (the client keeps what it has)."""

    addresses: list[bytes] | None = None  # individual address descriptors
    features: bytes | None = None


@dataclass(frozen=True, slots=True)
class Announcement:
    scid: int
    features: bytes
    node_1: int  # index into DeltaSet.node_ids
    node_2: int
    funding_sats: int | None


@dataclass(frozen=True, slots=True)
class Defaults:
    cltv_expiry_delta: int = 0
    htlc_minimum_msat: int = 0
    fee_base_msat: int = 0
    fee_proportional_millionths: int = 0
    htlc_maximum_msat: int = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (
            self.cltv_expiry_delta,
            self.htlc_minimum_msat,
            self.fee_base_msat,
            self.fee_proportional_millionths,
            self.htlc_maximum_msat,
        )


class UpdateRecord(NamedTuple):
    """One update record; ``flags`` is the final wire byte; ``values`` the five fields (only those
    whose bit is set in ``flags`` are written). A NamedTuple: a full snapshot has ~100k of them."""

    scid: int
    flags: int
    values: tuple[int, int, int, int, int]

    @property
    def direction(self) -> int:
        return self.flags & f.UPDATE_DIRECTION

    @property
    def incremental(self) -> bool:
        return bool(self.flags & f.UPDATE_INCREMENTAL)


@dataclass
class DeltaStats:
    """Why records were emitted, for logs, metrics and tests."""

    new_channels: int = 0
    repaired_channels: int = 0
    full_updates: int = 0
    incremental_updates: int = 0
    reminders: int = 0
    nodes_full: int = 0
    nodes_mutated: int = 0


@dataclass
class DeltaSet:
    chain_hash: bytes
    timestamp: int
    node_ids: list[bytes]
    # v2 only, aligned with node_ids (None: bare key).
    node_details: list[NodeDetails | None]
    announcements: list[Announcement]
    defaults: Defaults
    updates: list[UpdateRecord]
    stats: DeltaStats = field(default_factory=DeltaStats)
