"""BOLT 7 gossip messages: decoding and encoding of the three messages RGS is built from.

Decoders take the whole wire message (2-byte type first) and check only structure; semantic checks
(chain, signatures, bounds) live in :mod:`lnsync.gossip.validate`. Every decoder raises
:class:`~lnsync.gossip.errors.MalformedMessage` on bad bytes and never anything else.
Parsing uses ``struct.unpack_from`` on the original buffer: this is the downloader's and
persistence's hot loop. The messages are named tuples, immutable like frozen dataclasses but built
five times faster (0.35 against 1.9 µs for a channel_update, a tenth of persistence's per-message
work before this change).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from lnsync.gossip.addresses import AddressList, decode_addresses
from lnsync.gossip.errors import MalformedMessage

if TYPE_CHECKING:
    import numpy as np

CHANNEL_ANNOUNCEMENT = 256
NODE_ANNOUNCEMENT = 257
CHANNEL_UPDATE = 258

GOSSIP_TYPES = frozenset({CHANNEL_ANNOUNCEMENT, NODE_ANNOUNCEMENT, CHANNEL_UPDATE})

# BOLT 8 frames carry at most 65535 bytes of plaintext.
MAX_MESSAGE_SIZE = 65535

_U16 = struct.Struct(">H")
_CA_TAIL = struct.Struct(
    ">32sQ33s33s33s33s"
)  # chain_hash scid node_id_1 node_id_2 bitcoin_key_1 bitcoin_key_2
_CU = struct.Struct(">64s32sQIBBHQIIQ")  # signature .. htlc_maximum_msat
_NA_MID = struct.Struct(">I33s3s32s")  # timestamp node_id rgb_color alias
_new = tuple.__new__  # a named tuple from a tuple of all its fields, without its __new__'s call

CHANNEL_UPDATE_SIZE = 2 + _CU.size  # 138
CHANNEL_ANNOUNCEMENT_MIN_SIZE = 2 + 256 + 2 + _CA_TAIL.size  # 432
NODE_ANNOUNCEMENT_MIN_SIZE = 2 + 64 + 2 + _NA_MID.size + 2  # 142

# message_flags bit 0 (must_be_one): htlc_maximum_msat is present. Mandatory since 2022.
MESSAGE_FLAG_HTLC_MAX = 0x01
# message_flags bit 1: a private update for the channel peer only, never to be gossiped.
MESSAGE_FLAG_DONT_FORWARD = 0x02
CHANNEL_FLAG_DIRECTION = 0x01
CHANNEL_FLAG_DISABLED = 0x02


def message_type(raw: bytes) -> int:
    if len(raw) < 2:
        raise MalformedMessage("message shorter than its 2-byte type")
    return int(_U16.unpack_from(raw)[0])


class ChannelAnnouncement(NamedTuple):
    node_signature_1: bytes
    node_signature_2: bytes
    bitcoin_signature_1: bytes
    bitcoin_signature_2: bytes
    features: bytes
    chain_hash: bytes
    short_channel_id: int
    node_id_1: bytes
    node_id_2: bytes
    bitcoin_key_1: bytes
    bitcoin_key_2: bytes
    raw: bytes

    @property
    def signed_part(self) -> bytes:
        """What all four signatures sign (double-SHA256 of it): everything after the signatures."""
        return self.raw[258:]

    @property
    def excess(self) -> bytes:
        """Signed bytes after the known fields (future extensions)."""
        return self.raw[260 + len(self.features) + _CA_TAIL.size :]


class ChannelUpdate(NamedTuple):
    signature: bytes
    chain_hash: bytes
    short_channel_id: int
    timestamp: int
    message_flags: int
    channel_flags: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    htlc_maximum_msat: int
    raw: bytes

    @property
    def direction(self) -> int:
        """0 if node_id_1 is the origin, 1 if node_id_2 is."""
        return self.channel_flags & CHANNEL_FLAG_DIRECTION

    @property
    def disabled(self) -> bool:
        return bool(self.channel_flags & CHANNEL_FLAG_DISABLED)

    @property
    def dont_forward(self) -> bool:
        return bool(self.message_flags & MESSAGE_FLAG_DONT_FORWARD)

    @property
    def signed_part(self) -> bytes:
        return self.raw[66:]

    @property
    def excess(self) -> bytes:
        """Signed bytes after htlc_maximum_msat (in practice a TLV stream, e.g. LND's inbound fees)."""
        return self.raw[CHANNEL_UPDATE_SIZE:]


class NodeAnnouncement(NamedTuple):
    signature: bytes
    features: bytes
    timestamp: int
    node_id: bytes
    rgb_color: bytes
    alias: bytes
    addresses: bytes  # raw address descriptors; see lnsync.gossip.addresses
    raw: bytes

    @property
    def signed_part(self) -> bytes:
        return self.raw[66:]

    @property
    def alias_text(self) -> str:
        """The alias for display: trailing NULs dropped, invalid UTF-8 replaced (never trust it)."""
        return self.alias.rstrip(b"\0").decode("utf-8", "replace")

    @property
    def address_list(self) -> AddressList:
        """The parsed addresses; raises InvalidAddress for a truncated or impossible descriptor."""
        return decode_addresses(self.addresses)

    @property
    def excess(self) -> bytes:
        """Signed bytes after the addresses (future extensions)."""
        return self.raw[68 + len(self.features) + _NA_MID.size + 2 + len(self.addresses) :]


GossipMessage = ChannelAnnouncement | ChannelUpdate | NodeAnnouncement


def decode_channel_announcement(raw: bytes) -> ChannelAnnouncement:
    if len(raw) < CHANNEL_ANNOUNCEMENT_MIN_SIZE:
        raise MalformedMessage(f"channel_announcement too short ({len(raw)} bytes)")
    if len(raw) > MAX_MESSAGE_SIZE:
        raise MalformedMessage("channel_announcement longer than a BOLT 8 frame")
    if raw[0] != 1 or raw[1] != 0:
        raise MalformedMessage("not a channel_announcement")
    (flen,) = _U16.unpack_from(raw, 258)
    tail = 260 + flen
    if tail + _CA_TAIL.size > len(raw):
        raise MalformedMessage("channel_announcement truncated after its features")
    chain, scid, n1, n2, b1, b2 = _CA_TAIL.unpack_from(raw, tail)
    return ChannelAnnouncement(
        raw[2:66], raw[66:130], raw[130:194], raw[194:258], raw[260:tail], chain, scid, n1, n2, b1, b2, raw
    )


def decode_channel_update(raw: bytes) -> ChannelUpdate:
    if len(raw) < CHANNEL_UPDATE_SIZE:
        raise MalformedMessage(f"channel_update too short ({len(raw)} bytes; htlc_maximum_msat is mandatory)")
    if len(raw) > MAX_MESSAGE_SIZE:
        raise MalformedMessage("channel_update longer than a BOLT 8 frame")
    if raw[0] != 1 or raw[1] != 2:
        raise MalformedMessage("not a channel_update")
    return _new(ChannelUpdate, (*_CU.unpack_from(raw, 2), raw))


# Many channel_updates at once, for a receiver's hot path: those of exactly CHANNEL_UPDATE_SIZE
# bytes (no fields after htlc_maximum_msat), concatenated. tests/gossip/test_update_columns.py
# checks both against decode_channel_update.
_CU_WHOLE = struct.Struct(">2x" + _CU.format[1:])


@cache
def channel_update_dtype() -> np.dtype:
    """A channel_update of CHANNEL_UPDATE_SIZE bytes as a NumPy record: ``type``, then
    :class:`ChannelUpdate`'s fields (NumPy imported only by whoever decodes in bulk)."""
    import numpy as np

    kinds = (">u2", "V64", "V32", ">u8", ">u4", "u1", "u1", ">u2", ">u8", ">u4", ">u4", ">u8")
    dtype = np.dtype(list(zip(("type", *ChannelUpdate._fields[:-1]), kinds, strict=True)))
    assert dtype.itemsize == CHANNEL_UPDATE_SIZE
    return dtype


def channel_update_records(joined: bytes) -> np.ndarray:
    """Concatenated messages of CHANNEL_UPDATE_SIZE bytes each as :func:`channel_update_dtype`
    records (a view: nothing is checked, the type included)."""
    import numpy as np

    return np.frombuffer(joined, dtype=channel_update_dtype())


def decode_channel_updates(joined: bytes, raws: Sequence[bytes]) -> Iterator[ChannelUpdate]:
    """:func:`decode_channel_update` of each of ``raws`` (CHANNEL_UPDATE_SIZE bytes each, their
    type already checked), given their concatenation ``joined``."""
    for fields, raw in zip(_CU_WHOLE.iter_unpack(joined), raws, strict=True):
        yield _new(ChannelUpdate, (*fields, raw))


def decode_node_announcement(raw: bytes) -> NodeAnnouncement:
    if len(raw) < NODE_ANNOUNCEMENT_MIN_SIZE:
        raise MalformedMessage(f"node_announcement too short ({len(raw)} bytes)")
    if len(raw) > MAX_MESSAGE_SIZE:
        raise MalformedMessage("node_announcement longer than a BOLT 8 frame")
    if raw[0] != 1 or raw[1] != 1:
        raise MalformedMessage("not a node_announcement")
    (flen,) = _U16.unpack_from(raw, 66)
    mid = 68 + flen
    if mid + _NA_MID.size + 2 > len(raw):
        raise MalformedMessage("node_announcement truncated after its features")
    ts, node_id, rgb, alias = _NA_MID.unpack_from(raw, mid)
    alen_at = mid + _NA_MID.size
    (alen,) = _U16.unpack_from(raw, alen_at)
    end = alen_at + 2 + alen
    if end > len(raw):
        raise MalformedMessage("node_announcement addresses run past the end of the message")
    return NodeAnnouncement(raw[2:66], raw[68:mid], ts, node_id, rgb, alias, raw[alen_at + 2 : end], raw)


_DECODERS: dict[int, Callable[[bytes], GossipMessage]] = {
    CHANNEL_ANNOUNCEMENT: decode_channel_announcement,
    CHANNEL_UPDATE: decode_channel_update,
    NODE_ANNOUNCEMENT: decode_node_announcement,
}


def decode_gossip(raw: bytes) -> GossipMessage:
    """Decode any of the three gossip messages (MalformedMessage for anything else)."""
    decoder = _DECODERS.get(message_type(raw))
    if decoder is None:
        raise MalformedMessage(f"message type {message_type(raw)} is not a gossip message")
    return decoder(raw)


# -- encoding (unsigned bodies; see lnsync.gossip.signing for signing them) -----------------------


def encode_channel_announcement_body(
    chain_hash: bytes,
    short_channel_id: int,
    node_id_1: bytes,
    node_id_2: bytes,
    bitcoin_key_1: bytes,
    bitcoin_key_2: bytes,
    features: bytes = b"",
) -> bytes:
    """The signed part of a channel_announcement (everything after the four signatures)."""
    return (
        _U16.pack(len(features))
        + features
        + _CA_TAIL.pack(chain_hash, short_channel_id, node_id_1, node_id_2, bitcoin_key_1, bitcoin_key_2)
    )


def encode_channel_update_body(
    chain_hash: bytes,
    short_channel_id: int,
    timestamp: int,
    channel_flags: int,
    cltv_expiry_delta: int,
    htlc_minimum_msat: int,
    fee_base_msat: int,
    fee_proportional_millionths: int,
    htlc_maximum_msat: int,
    message_flags: int = MESSAGE_FLAG_HTLC_MAX,
) -> bytes:
    """The signed part of a channel_update (everything after the signature)."""
    return _CU.pack(
        b"\0" * 64, chain_hash, short_channel_id, timestamp, message_flags, channel_flags,
        cltv_expiry_delta, htlc_minimum_msat, fee_base_msat, fee_proportional_millionths, htlc_maximum_msat,
    )[64:]  # fmt: skip


def encode_node_announcement_body(
    node_id: bytes,
    timestamp: int,
    *,
    features: bytes = b"",
    rgb_color: bytes = b"\0\0\0",
    alias: bytes = b"",
    addresses: bytes = b"",
) -> bytes:
    """The signed part of a node_announcement (everything after the signature)."""
    if len(alias) > 32:
        raise ValueError("alias is at most 32 bytes")
    return (
        _U16.pack(len(features))
        + features
        + _NA_MID.pack(timestamp, node_id, rgb_color, alias.ljust(32, b"\0"))
        + _U16.pack(len(addresses))
        + addresses
    )


def with_type(msg_type: int, signatures: bytes, body: bytes) -> bytes:
    return _U16.pack(msg_type) + signatures + body
