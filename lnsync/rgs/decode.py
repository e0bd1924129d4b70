"""Read RGS v1/v2 blobs back into structures, with the LDK client's validation rules.

Used by ``lnsync inspect`` (what an operator debugs a blob with), by the tests (round trips,
upstream vectors) and by :mod:`lnsync.rgs.client`, a pure model of how LDK applies blobs.
Every problem raises :class:`RgsDecodeError` with the LDK error kind it corresponds to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from lnsync import bigsize
from lnsync.rgs import format as f

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DEFAULTS = struct.Struct(">HQIIQ")
_FIELDS = (struct.Struct(">H"), struct.Struct(">Q"), _U32, _U32, struct.Struct(">Q"))

# The client refuses more than 10x its graph-size estimates (LDK >= 0.1.10 / 0.2.3).
MAX_NODES = 200_000
MAX_UPDATES = 630_000


class RgsDecodeError(ValueError):
    """``kind`` is LDK's error: unknown_version, short_read, invalid_value or nonsense_count."""

    def __init__(self, kind: str, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.kind = kind
        self.offset = offset


@dataclass
class DecodedNode:
    node_id: bytes  # the canonical 33-byte key
    addresses: list[bytes] | None = None
    features: bytes | None = None
    default_features_index: int | None = None  # which default set, if the marker named one
    reminder: bool = False
    extra: bytes | None = None


@dataclass
class DecodedAnnouncement:
    scid: int
    features: bytes
    node_1: int
    node_2: int
    funding_sats: int | None = None
    extra: bytes | None = None


@dataclass
class DecodedUpdate:
    scid: int
    flags: int
    # Values present in the record, in wire order (cltv, htlc_min, fee_base, fee_prop, htlc_max);
    # None where the record omits the field.
    values: tuple[int | None, int | None, int | None, int | None, int | None]
    extra: bytes | None = None  # v2 forward-compatibility blob (the record is then not an update)

    @property
    def direction(self) -> int:
        return self.flags & f.UPDATE_DIRECTION

    @property
    def incremental(self) -> bool:
        return bool(self.flags & f.UPDATE_INCREMENTAL)

    @property
    def disabled(self) -> bool:
        return bool(self.flags & f.UPDATE_DISABLED)

    @property
    def reminder(self) -> bool:
        return self.incremental and not self.flags & f.VALUE_FIELDS_MASK


@dataclass
class DecodedBlob:
    version: int
    chain_hash: bytes
    timestamp: int
    default_node_features: list[bytes] = field(default_factory=list)
    nodes: list[DecodedNode] = field(default_factory=list)
    announcements: list[DecodedAnnouncement] = field(default_factory=list)
    defaults: tuple[int, int, int, int, int] | None = None
    updates: list[DecodedUpdate] = field(default_factory=list)
    trailing_bytes: int = 0

    def full_values(self, upd: DecodedUpdate) -> tuple[int, int, int, int, int]:
        """A full update's five values with defaults filled in (meaningless for incremental ones)."""
        assert self.defaults is not None
        return tuple(  # type: ignore[return-value]
            v if v is not None else d for v, d in zip(upd.values, self.defaults, strict=True)
        )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RgsDecodeError(
                "short_read", f"needed {n} bytes, {len(self.data) - self.pos} left", self.pos
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def bigsize(self) -> int:
        try:
            value, self.pos = bigsize.decode(self.data, self.pos)
        except bigsize.BigSizeError as exc:
            kind = "short_read" if "truncated" in str(exc) else "invalid_value"
            raise RgsDecodeError(kind, str(exc), self.pos) from None
        return value

    def features(self) -> bytes:
        return self.take(self.u16())

    def blob(self) -> bytes:
        """LDK's length-prefixed byte vector (u16 length; 0xFFFF escapes to a u64 + 0xFFFF)."""
        n = self.u16()
        if n == 0xFFFF:
            n = int(struct.unpack(">Q", self.take(8))[0]) + 0xFFFF
        return self.take(n)


def _valid_key(key: bytes) -> bool:
    from lnsync.gossip.signing import is_valid_pubkey

    return is_valid_pubkey(key)


def decode(data: bytes) -> DecodedBlob:
    r = _Reader(data)
    if len(data) < 4 or data[:3] != f.MAGIC:
        if len(data) < 3:
            raise RgsDecodeError("short_read", "blob shorter than its prefix", 0)
        raise RgsDecodeError("unknown_version", f"prefix {data[:3].hex()} is not 'LDK'", 0)
    r.pos = 3
    version = r.u8()
    if version not in f.VERSIONS:
        raise RgsDecodeError("unknown_version", f"version {version}", 3)
    blob = DecodedBlob(version=version, chain_hash=r.take(32), timestamp=r.u32())

    if version == 2:
        for _ in range(r.u8()):
            blob.default_node_features.append(r.features())
    node_count = r.u32()
    if node_count > MAX_NODES:
        raise RgsDecodeError("nonsense_count", f"{node_count} nodes", r.pos - 4)
    for _ in range(node_count):
        start = r.pos
        raw = r.take(33)
        first = raw[0]
        key = bytes((first & f.NODE_KEY_BITS,)) + raw[1:]
        if version == 1 and first not in (2, 3):
            raise RgsDecodeError("invalid_value", "node id is not a compressed key", start)
        if not _valid_key(key):
            raise RgsDecodeError("invalid_value", f"invalid node id {key.hex()}", start)
        node = DecodedNode(node_id=key)
        if version == 2:
            node.reminder = bool(first & f.NODE_REMINDER)
            if first & f.NODE_HAS_ADDRESSES:
                node.addresses = [r.take(r.u8()) for _ in range(r.u8())]
            marker = (first & f.NODE_FEATURES_MASK) >> f.NODE_FEATURES_SHIFT
            if marker == f.NODE_FEATURES_EXPLICIT:
                node.features = r.features()
            elif marker:
                if marker - 1 >= len(blob.default_node_features):
                    raise RgsDecodeError(
                        "invalid_value", f"default feature set {marker - 1} not defined", start
                    )
                node.default_features_index = marker - 1
                node.features = blob.default_node_features[marker - 1]
            if first & f.NODE_HAS_EXTRA:
                node.extra = r.blob()
        blob.nodes.append(node)

    scid = 0
    for _ in range(r.u32()):
        start = r.pos
        feats = r.features()
        scid += r.bigsize()
        if scid > bigsize.MAX:
            raise RgsDecodeError("invalid_value", "short channel id overflows u64", start)
        n1 = r.bigsize()
        n2 = r.bigsize()
        has_extra = bool(n2 & f.ANNOUNCEMENT_HAS_EXTRA) and version == 2
        n2 &= ~f.ANNOUNCEMENT_HAS_EXTRA
        if max(n1, n2) >= node_count:
            raise RgsDecodeError("invalid_value", f"node index {max(n1, n2)} >= {node_count}", start)
        ann = DecodedAnnouncement(scid=scid, features=feats, node_1=n1, node_2=n2)
        if has_extra:
            extra = r.blob()
            ann.extra = extra
            try:
                ann.funding_sats, _ = bigsize.decode(extra, 0)
            except bigsize.BigSizeError as exc:
                raise RgsDecodeError("short_read", f"announcement tail: {exc}", r.pos) from None
        blob.announcements.append(ann)

    update_count = r.u32()
    if update_count > MAX_UPDATES:
        raise RgsDecodeError("nonsense_count", f"{update_count} updates", r.pos - 4)
    if update_count:
        blob.defaults = _DEFAULTS.unpack(r.take(_DEFAULTS.size))
    scid = 0
    previous_direction: int | None = None
    for _ in range(update_count):
        start = r.pos
        delta = r.bigsize()
        scid += delta
        if scid > bigsize.MAX:
            raise RgsDecodeError("invalid_value", "short channel id overflows u64", start)
        flags = r.u8()
        if version == 2:
            direction = flags & f.UPDATE_DIRECTION
            same = direction == previous_direction
            previous_direction = direction
            if delta == 0 and same:
                blob.updates.append(DecodedUpdate(scid, flags, (None,) * 5, extra=r.blob()))
                continue
        values = tuple(
            int(_FIELDS[i].unpack(r.take(_FIELDS[i].size))[0]) if flags & f.FIELD_BITS[i] else None
            for i in range(5)
        )
        blob.updates.append(DecodedUpdate(scid, flags, values))  # type: ignore[arg-type]
    blob.trailing_bytes = len(data) - r.pos
    return blob
