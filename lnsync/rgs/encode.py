"""Serialise a :class:`~lnsync.rgs.model.DeltaSet` into RGS v1 or v2 bytes.

The delta set already fixes every choice (which records, in which order, with which flags); this
module only writes bytes, so v1 and v2 of one delta agree record for record.
"""

from __future__ import annotations

import struct
from collections import Counter

from lnsync import bigsize
from lnsync.rgs import format as f
from lnsync.rgs.model import Defaults, DeltaSet, NodeDetails

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DEFAULTS = struct.Struct(">HQIIQ")
_FIELD_STRUCTS = (struct.Struct(">H"), struct.Struct(">Q"), _U32, _U32, struct.Struct(">Q"))
_bigsize = bigsize.encode


def default_node_features(details: list[NodeDetails | None]) -> list[bytes]:
    """The v2 default node feature sets: those sent more than once, most frequent first (ties by
    bytes, so output is deterministic), at most six."""
    counts = Counter(d.features for d in details if d is not None and d.features is not None)
    ranked = sorted((-n, feats) for feats, n in counts.items() if n > 1)
    return [feats for _, feats in ranked[: f.MAX_DEFAULT_NODE_FEATURES]]


def _features(feats: bytes) -> bytes:
    return _U16.pack(len(feats)) + feats


def _node_entry(node_id: bytes, details: NodeDetails | None, defaults: dict[bytes, int]) -> bytes:
    if details is None:
        return node_id
    first = node_id[0] & f.NODE_KEY_BITS
    tail = bytearray()
    if details.addresses is not None:
        first |= f.NODE_HAS_ADDRESSES
        addrs = [a for a in details.addresses if len(a) <= 255][:255]
        tail.append(len(addrs))
        for addr in addrs:
            tail.append(len(addr))
            tail += addr
    if details.features is not None:
        marker = defaults.get(details.features)
        if marker is None:
            first |= f.NODE_FEATURES_EXPLICIT << f.NODE_FEATURES_SHIFT
            tail += _features(details.features)
        else:
            first |= (marker + 1) << f.NODE_FEATURES_SHIFT
    if details.addresses is None and details.features is None:
        first |= f.NODE_REMINDER
    return bytes((first,)) + node_id[1:] + bytes(tail)


def encode(delta: DeltaSet, version: int) -> bytes:
    if version not in f.VERSIONS:
        raise ValueError(f"unsupported RGS version {version}")
    out = bytearray(f.MAGIC)
    out.append(version)
    out += delta.chain_hash
    out += _U32.pack(delta.timestamp)

    if version == 2:
        default_features = default_node_features(delta.node_details)
        out.append(len(default_features))
        for feats in default_features:
            out += _features(feats)
        marker_of = {feats: i for i, feats in enumerate(default_features)}
        out += _U32.pack(len(delta.node_ids))
        for node_id, details in zip(delta.node_ids, delta.node_details, strict=True):
            out += _node_entry(node_id, details, marker_of)
    else:
        out += _U32.pack(len(delta.node_ids))
        out += b"".join(delta.node_ids)

    out += _U32.pack(len(delta.announcements))
    previous = 0
    for ann in delta.announcements:
        out += _features(ann.features)
        out += _bigsize(ann.scid - previous)
        previous = ann.scid
        out += _bigsize(ann.node_1)
        if version == 2 and ann.funding_sats is not None:
            out += _bigsize(ann.node_2 | f.ANNOUNCEMENT_HAS_EXTRA)
            extra = _bigsize(ann.funding_sats)
            out += _U16.pack(len(extra)) + extra
        else:
            out += _bigsize(ann.node_2)

    out += _U32.pack(len(delta.updates))
    if delta.updates:
        out += _DEFAULTS.pack(*delta.defaults.as_tuple())
        previous = 0
        parts: list[bytes] = []
        append = parts.append
        field_bits = f.FIELD_BITS
        for upd in delta.updates:
            append(_bigsize(upd.scid - previous))
            previous = upd.scid
            flags = upd.flags
            append(bytes((flags,)))
            if flags & f.VALUE_FIELDS_MASK:
                values = upd.values
                for i in range(5):
                    if flags & field_bits[i]:
                        append(_FIELD_STRUCTS[i].pack(values[i]))
        out += b"".join(parts)
    return bytes(out)


def encode_empty(chain_hash: bytes, timestamp: int, version: int) -> bytes:
    """The "nothing new" blob: a valid header with zero nodes, announcements and updates."""
    return encode(
        DeltaSet(chain_hash, timestamp, [], [], [], defaults=Defaults(), updates=[]),
        version,
    )
