"""The delta engine: what a client whose last sync was T must receive at reference time R.

Given a :class:`~lnsync.rgs.model.DeltaInput` (live channels with their current values and which
fields changed in ``[T, R)``), decide for every channel and direction:

* **announce** the channel if the client cannot know it: it became usable at or after T (``new``),
  or the client may already have pruned it (``repair``, see docs/reminders.md). Both directions are
  then sent as full updates;
* otherwise, for each direction whose values changed in ``[T, R)``, send an **incremental** update
  with exactly the changed fields, or a **full** one when that is not larger;
* otherwise, if the channel's reminder bucket was due in ``(T, R]`` (or the client would forget the
  channel before its next sync at its current cadence), send a **reminder** (flags only).

Nodes (v2) get full details when the client cannot have them, the changed parts otherwise.
The result is deterministic: the same input always gives the same records in the same order.
The work is vectorised over all channels with NumPy; only emitted records are built in Python.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from lnsync.gossip.addresses import split_descriptors
from lnsync.gossip.errors import GossipError
from lnsync.rgs import format as f
from lnsync.rgs import reminders
from lnsync.rgs.model import (
    DIRECTION_CHANGE_BITS,
    Announcement,
    ChannelTable,
    Defaults,
    DeltaInput,
    DeltaParams,
    DeltaSet,
    DeltaStats,
    NodeDetails,
    UpdateRecord,
)
from lnsync.rgs.rules import NODE_ADDRESSES_CHANGED, NODE_FEATURES_CHANGED

_FIELD_SIZES = np.array(f.FIELD_SIZES, dtype=np.int64)
_FIELD_BITS = np.array(f.FIELD_BITS, dtype=np.uint8)


def node_addresses(raw: bytes) -> list[bytes]:
    """A stored node's address descriptors, one bytes object each (validation at ingest rejects
    truncated ones; should one slip through, the node is sent without addresses rather than failing
    the whole blob)."""
    try:
        return split_descriptors(raw)
    except GossipError:
        return []


def announced_funding(ch: ChannelTable) -> NDArray[np.int64]:
    """The capacity (sats) each channel's v2 announcement carries, -1 for none: sent only where
    every update respects it (LDK >= 0.2 drops updates whose htlc_maximum_msat exceeds it, and a
    channel without capacity beats a channel without updates)."""
    capacity_ok = (ch.funding_sats >= 0) & np.all(
        ch.htlc_maximum_msat <= ch.funding_sats.clip(0).astype(np.uint64)[:, None] * np.uint64(1000), axis=1
    )
    return np.where(capacity_ok, ch.funding_sats, -1)


def _mode(values: NDArray[np.int64] | NDArray[np.uint64]) -> int:
    """Most frequent value; ties go to the smallest (np.unique sorts), so defaults are deterministic."""
    if len(values) == 0:
        return 0
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[int(np.argmax(counts))])


def compute_delta(inp: DeltaInput, params: DeltaParams | None = None) -> DeltaSet:
    params = params or DeltaParams()
    T, R = inp.last_sync, inp.reference_time
    ch = inp.channels
    stats = DeltaStats()
    header = R - R % params.timestamp_granularity

    # Channels whose announcement would put node_1 >= node_2 cannot be sent (newer LDK rejects the
    # whole blob); validation keeps them out of the store, this keeps them out of blobs.
    node_ids = inp.nodes.node_id
    rank = np.empty(len(node_ids), dtype=np.int64)
    rank[sorted(range(len(node_ids)), key=node_ids.__getitem__)] = np.arange(len(node_ids))
    ordered = rank[ch.node_1] < rank[ch.node_2] if len(ch) else np.zeros(0, dtype=np.bool_)

    # -- which channels, which directions ------------------------------------------------------
    new = ch.live_since >= T
    bucket = reminders.bucket_of(ch.scid, params.reminder_period, params.reminder_slot)
    # Lower bound of the last time this client was sent the channel: the channel's last reminder
    # slot before T (every sync delivers the reminders of its window), or when it became usable.
    written = np.maximum(
        reminders.last_due(bucket, T, params.reminder_period, params.reminder_slot), ch.live_since
    )
    expires = written + params.client_lifetime
    repair = ~new & (expires < R + params.apply_lag)
    announce = (new | repair) & ordered
    # Re-send stable channels whose bucket fell due in (T, R], and those that would expire before
    # the client's next sync if it keeps syncing every R - T seconds.
    due = reminders.due_between(bucket, T, R, params.reminder_period, params.reminder_slot)
    expiring = expires < R + params.apply_lag + (R - T)
    refresh = ~announce & (due | expiring) & ordered

    changes = ch.changes & np.uint8(DIRECTION_CHANGE_BITS)
    changed = (changes != 0) & ~announce[:, None] & ordered[:, None]
    remind = refresh[:, None] & ~changed

    values = np.stack(
        [
            ch.cltv_expiry_delta.astype(np.uint64),
            ch.htlc_minimum_msat,
            ch.fee_base_msat.astype(np.uint64),
            ch.fee_proportional_millionths.astype(np.uint64),
            ch.htlc_maximum_msat,
        ],
        axis=-1,
    )  # (n, 2, 5)

    # -- defaults: the most common values among updates that must be full ------------------------
    forced = np.broadcast_to(announce[:, None], changed.shape)
    basis = values[forced | changed]
    defaults = Defaults(*(_mode(basis[:, i]) for i in range(5)))
    default_arr = np.array(defaults.as_tuple(), dtype=np.uint64)

    # -- full or incremental: whichever is smaller (full wins ties: it does not need prior state)
    differs = values != default_arr  # (n, 2, 5)
    full_bits = (differs * _FIELD_BITS).sum(axis=-1).astype(np.uint8)
    full_size = (differs * _FIELD_SIZES).sum(axis=-1)
    changed_fields = (changes[..., None] & _FIELD_BITS) != 0
    incr_size = (changed_fields * _FIELD_SIZES).sum(axis=-1)
    as_full = forced | (changed & (full_size <= incr_size))
    as_incr = changed & ~as_full

    disabled_bits = np.where(ch.disabled, f.UPDATE_DISABLED, 0).astype(np.uint8)
    dir_bits = np.array([0, 1], dtype=np.uint8)
    flags = np.zeros(changed.shape, dtype=np.uint8)
    flags = np.where(as_full, full_bits | disabled_bits | dir_bits, flags)
    incr_bits = (changes & np.uint8(f.VALUE_FIELDS_MASK)) | f.UPDATE_INCREMENTAL | disabled_bits | dir_bits
    flags = np.where(as_incr, incr_bits, flags)
    flags = np.where(remind, f.UPDATE_INCREMENTAL | disabled_bits | dir_bits, flags)
    emit = as_full | as_incr | remind

    # -- records ---------------------------------------------------------------------------------
    rows, dirs = np.nonzero(emit)  # row-major: ascending scid, direction 0 before 1
    scids = ch.scid[rows].tolist()
    rec_flags = flags[rows, dirs].tolist()
    rec_values = values[rows, dirs].tolist()
    updates = list(map(UpdateRecord._make, zip(scids, rec_flags, map(tuple, rec_values), strict=True)))

    stats.new_channels = int((new & ordered).sum())
    stats.repaired_channels = int((repair & ordered).sum())
    stats.full_updates = int(as_full.sum())
    stats.incremental_updates = int(as_incr.sum())
    stats.reminders = int(remind.sum())

    # -- nodes -----------------------------------------------------------------------------------
    ann_rows = np.nonzero(announce)[0]
    table: list[int] = []  # indices into inp.nodes, in wire order
    position: dict[int, int] = {}
    for a, b in zip(ch.node_1[ann_rows].tolist(), ch.node_2[ann_rows].tolist(), strict=True):
        for node in (a, b):
            if node not in position:
                position[node] = len(table)
                table.append(node)
    funding = announced_funding(ch)
    announcements = [
        Announcement(s, ch.features[r], position[a], position[b], fs if fs >= 0 else None)
        for r, s, a, b, fs in zip(
            ann_rows.tolist(),
            ch.scid[ann_rows].tolist(),
            ch.node_1[ann_rows].tolist(),
            ch.node_2[ann_rows].tolist(),
            funding[ann_rows].tolist(),
            strict=True,
        )
    ]

    details = _node_details(inp, T, new & ordered, repair & ordered, stats)
    extra = sorted((i for i in details if i not in position), key=lambda i: node_ids[i])
    for node in extra:
        position[node] = len(table)
        table.append(node)

    return DeltaSet(
        chain_hash=inp.chain_hash,
        timestamp=header,
        node_ids=[node_ids[i] for i in table],
        node_details=[details.get(i) for i in table],
        announcements=announcements,
        defaults=defaults,
        updates=updates,
        stats=stats,
    )


def _node_details(
    inp: DeltaInput, T: int, new: NDArray[np.bool_], repair: NDArray[np.bool_], stats: DeltaStats
) -> dict[int, NodeDetails]:
    """v2 node data to send, by index into ``inp.nodes``."""
    nodes, ch = inp.nodes, inp.channels
    m = len(nodes)
    if m == 0:
        return {}
    # Since when could the client know each node: when its first channel became usable.
    known_since = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(known_since, ch.node_1, ch.live_since)
    np.minimum.at(known_since, ch.node_2, ch.live_since)
    refreshed = np.zeros(m, dtype=np.bool_)
    refreshed[ch.node_1[repair]] = True
    refreshed[ch.node_2[repair]] = True
    full = nodes.has_announcement & ((known_since >= T) | (nodes.first_seen >= T) | refreshed)
    mutated = nodes.has_announcement & ~full & ((nodes.changes & 0x03) != 0)

    out: dict[int, NodeDetails] = {}
    for i in np.nonzero(full)[0].tolist():
        out[i] = NodeDetails(addresses=node_addresses(nodes.addresses[i]), features=nodes.features[i])
    for i in np.nonzero(mutated)[0].tolist():
        bits = int(nodes.changes[i])
        out[i] = NodeDetails(
            addresses=node_addresses(nodes.addresses[i]) if bits & NODE_ADDRESSES_CHANGED else None,
            features=nodes.features[i] if bits & NODE_FEATURES_CHANGED else None,
        )
    stats.nodes_full = int(full.sum())
    stats.nodes_mutated = int(mutated.sum())
    return out
