"""BOLT 7 gossip queries: range and scid queries, their replies, and the timestamp filter.

Arrays of short channel ids, timestamps and query flags travel "encoded": one encoding byte, then
either the plain array (0) or its zlib deflate (1). BOLT 7 now forbids *sending* zlib, but old
peers still do, so we read it, with the inflated size bounded: a few kilobytes of zlib can
otherwise inflate to gigabytes. We write zlib only when asked (tests, fake peers).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import google_crc32c

from lnsync import bigsize
from lnsync.gossip.errors import InvalidEncoding, InvalidTlvStream
from lnsync.gossip.fields import expect_type, u16_prefixed
from lnsync.gossip.tlv import decode_bigsize_value, decode_tlv_stream, encode_tlv_stream

QUERY_SHORT_CHANNEL_IDS = 261
REPLY_SHORT_CHANNEL_IDS_END = 262
QUERY_CHANNEL_RANGE = 263
REPLY_CHANNEL_RANGE = 264
GOSSIP_TIMESTAMP_FILTER = 265

ENCODING_UNCOMPRESSED = 0
ENCODING_ZLIB = 1

# A BOLT 8 frame holds 65535 bytes, so an uncompressed array never exceeds that; allow zlib
# replies 16 times more (~131k scids) and no more.
MAX_INFLATED_SIZE = 16 * 65536

# query_option_flags bits (query_channel_range) ...
QUERY_OPTION_TIMESTAMPS = 0x1
QUERY_OPTION_CHECKSUMS = 0x2
# ... and query_flags bits (query_short_channel_ids, one bitfield per scid).
QUERY_FLAG_ANNOUNCEMENT = 0x01
QUERY_FLAG_UPDATE_1 = 0x02
QUERY_FLAG_UPDATE_2 = 0x04
QUERY_FLAG_NODE_1 = 0x08
QUERY_FLAG_NODE_2 = 0x10

_U16 = struct.Struct(">H")
_CHAIN_U32_U32 = struct.Struct(">32sII")  # chain_hash + two u32 (range query, filter)
_REPLY_RANGE_HEAD = struct.Struct(">32sIIBH")  # .. sync_complete, len

_TLV_QUERY_FLAGS = 1
_TLV_QUERY_OPTION = 1
_TLV_TIMESTAMPS = 1
_TLV_CHECKSUMS = 3


# -- encoded arrays -------------------------------------------------------------------------------


def decode_encoded(data: bytes, item_size: int, what: str) -> tuple[int, bytes]:
    """``(encoding, plain bytes)`` of an encoded array; checks it holds whole items."""
    if not data:
        raise InvalidEncoding(f"{what}: missing encoding byte")
    encoding, body = data[0], data[1:]
    if encoding == ENCODING_ZLIB:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, MAX_INFLATED_SIZE)
        except zlib.error as e:
            raise InvalidEncoding(f"{what}: bad zlib data ({e})") from None
        if not inflater.eof:
            if inflater.unconsumed_tail or len(body) >= MAX_INFLATED_SIZE:
                raise InvalidEncoding(f"{what}: zlib data inflates beyond {MAX_INFLATED_SIZE} bytes")
            raise InvalidEncoding(f"{what}: truncated zlib data")
        if inflater.unused_data:
            raise InvalidEncoding(f"{what}: {len(inflater.unused_data)} bytes after the zlib stream")
    elif encoding != ENCODING_UNCOMPRESSED:
        raise InvalidEncoding(f"{what}: unknown encoding type {encoding}")
    if len(body) % item_size:
        raise InvalidEncoding(f"{what}: {len(body)} bytes is not a whole number of {item_size}-byte items")
    return encoding, body


def encode_array(plain: bytes, encoding: int = ENCODING_UNCOMPRESSED) -> bytes:
    if encoding == ENCODING_UNCOMPRESSED:
        return b"\0" + plain
    if encoding == ENCODING_ZLIB:
        return b"\1" + zlib.compress(plain, 9)
    raise ValueError(f"unknown encoding type {encoding}")


def decode_short_ids(data: bytes) -> tuple[int, tuple[int, ...]]:
    """``(encoding, scids)`` from ``encoded_short_ids``; an empty field is an empty list."""
    if not data:
        return ENCODING_UNCOMPRESSED, ()
    encoding, plain = decode_encoded(data, 8, "encoded_short_ids")
    return encoding, struct.unpack(f">{len(plain) // 8}Q", plain)


def encode_short_ids(scids: Sequence[int], encoding: int = ENCODING_UNCOMPRESSED) -> bytes:
    return encode_array(struct.pack(f">{len(scids)}Q", *scids), encoding)


def _pairs(plain: bytes) -> tuple[tuple[int, int], ...]:
    values = struct.unpack(f">{len(plain) // 4}I", plain)
    return tuple(zip(values[0::2], values[1::2], strict=True))


def _pack_pairs(pairs: Sequence[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack(">II", a, b) for a, b in pairs)


def channel_update_checksum(raw_update: bytes) -> int:
    """The checksum ``reply_channel_range`` carries: CRC32C of the update minus signature and timestamp."""
    return int(google_crc32c.extend(google_crc32c.value(raw_update[66:106]), raw_update[110:]))


# -- query_short_channel_ids / reply_short_channel_ids_end ----------------------------------------


@dataclass(frozen=True, slots=True)
class QueryShortChannelIds:
    chain_hash: bytes
    short_channel_ids: tuple[int, ...]
    query_flags: tuple[int, ...] | None = None  # one QUERY_FLAG_* bitfield per scid
    encoding: int = ENCODING_UNCOMPRESSED

    def encode(self) -> bytes:
        ids = encode_short_ids(self.short_channel_ids, self.encoding)
        tlvs = {}
        if self.query_flags is not None:
            if len(self.query_flags) != len(self.short_channel_ids):
                raise ValueError("one query flag per short channel id")
            flags = b"".join(bigsize.encode(f) for f in self.query_flags)
            tlvs[_TLV_QUERY_FLAGS] = encode_array(flags, self.encoding)
        return (
            _U16.pack(QUERY_SHORT_CHANNEL_IDS)
            + self.chain_hash
            + _U16.pack(len(ids))
            + ids
            + encode_tlv_stream(tlvs)
        )


def decode_query_short_channel_ids(raw: bytes) -> QueryShortChannelIds:
    expect_type(raw, QUERY_SHORT_CHANNEL_IDS, "query_short_channel_ids", 36)
    ids, pos = u16_prefixed(raw, 34, "query_short_channel_ids")
    encoding, scids = decode_short_ids(ids)
    tlvs = decode_tlv_stream(raw, (_TLV_QUERY_FLAGS,), pos)
    flags = None
    if _TLV_QUERY_FLAGS in tlvs:
        _, plain = decode_encoded(tlvs[_TLV_QUERY_FLAGS], 1, "encoded_query_flags")
        values = []
        at = 0
        try:
            while at < len(plain):
                value, at = bigsize.decode(plain, at)
                values.append(value)
        except bigsize.BigSizeError as e:
            raise InvalidTlvStream(f"encoded_query_flags: {e}") from None
        if len(values) != len(scids):
            raise InvalidTlvStream(f"{len(values)} query flags for {len(scids)} short channel ids")
        flags = tuple(values)
    return QueryShortChannelIds(raw[2:34], scids, flags, encoding)


@dataclass(frozen=True, slots=True)
class ReplyShortChannelIdsEnd:
    chain_hash: bytes
    full_information: bool

    def encode(self) -> bytes:
        return _U16.pack(REPLY_SHORT_CHANNEL_IDS_END) + self.chain_hash + bytes((self.full_information,))


def decode_reply_short_channel_ids_end(raw: bytes) -> ReplyShortChannelIdsEnd:
    expect_type(raw, REPLY_SHORT_CHANNEL_IDS_END, "reply_short_channel_ids_end", 35)
    return ReplyShortChannelIdsEnd(raw[2:34], raw[34] != 0)


# -- query_channel_range / reply_channel_range ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryChannelRange:
    chain_hash: bytes
    first_blocknum: int
    number_of_blocks: int
    query_option: int | None = None  # QUERY_OPTION_* bits

    @property
    def end_blocknum(self) -> int:
        """One past the last block asked for (may exceed 2^32 - 1 for an "everything" query)."""
        return self.first_blocknum + self.number_of_blocks

    def encode(self) -> bytes:
        tlvs = {} if self.query_option is None else {_TLV_QUERY_OPTION: bigsize.encode(self.query_option)}
        return (
            _U16.pack(QUERY_CHANNEL_RANGE)
            + _CHAIN_U32_U32.pack(self.chain_hash, self.first_blocknum, self.number_of_blocks)
            + encode_tlv_stream(tlvs)
        )


def decode_query_channel_range(raw: bytes) -> QueryChannelRange:
    expect_type(raw, QUERY_CHANNEL_RANGE, "query_channel_range", 2 + _CHAIN_U32_U32.size)
    chain, first, count = _CHAIN_U32_U32.unpack_from(raw, 2)
    tlvs = decode_tlv_stream(raw, (_TLV_QUERY_OPTION,), 2 + _CHAIN_U32_U32.size)
    option = None
    if _TLV_QUERY_OPTION in tlvs:
        option = decode_bigsize_value(tlvs[_TLV_QUERY_OPTION], "query_option")
    return QueryChannelRange(chain, first, count, option)


@dataclass(frozen=True, slots=True)
class ReplyChannelRange:
    chain_hash: bytes
    first_blocknum: int
    number_of_blocks: int
    sync_complete: bool
    short_channel_ids: tuple[int, ...]
    # Per scid: (timestamp, timestamp) and (checksum, checksum) of the updates from node 1 and 2.
    timestamps: tuple[tuple[int, int], ...] | None = None
    checksums: tuple[tuple[int, int], ...] | None = None
    encoding: int = ENCODING_UNCOMPRESSED

    @property
    def end_blocknum(self) -> int:
        return self.first_blocknum + self.number_of_blocks

    def encode(self) -> bytes:
        ids = encode_short_ids(self.short_channel_ids, self.encoding)
        tlvs = {}
        for tlv_type, values in ((_TLV_TIMESTAMPS, self.timestamps), (_TLV_CHECKSUMS, self.checksums)):
            if values is None:
                continue
            if len(values) != len(self.short_channel_ids):
                raise ValueError("one timestamp/checksum pair per short channel id")
            plain = _pack_pairs(values)
            tlvs[tlv_type] = encode_array(plain, self.encoding) if tlv_type == _TLV_TIMESTAMPS else plain
        head = _REPLY_RANGE_HEAD.pack(
            self.chain_hash, self.first_blocknum, self.number_of_blocks, self.sync_complete, len(ids)
        )
        return _U16.pack(REPLY_CHANNEL_RANGE) + head + ids + encode_tlv_stream(tlvs)


def empty_range_reply(query: QueryChannelRange) -> ReplyChannelRange:
    """The whole answer of a node that keeps no graph: one final reply that covers the queried
    blocks (BOLT 7: the first reply starts at or before them and ends after their first, the final
    one reaches their end and sets ``sync_complete``) and lists no channels."""
    return ReplyChannelRange(query.chain_hash, query.first_blocknum, max(1, query.number_of_blocks), True, ())


def decode_reply_channel_range(raw: bytes) -> ReplyChannelRange:
    expect_type(raw, REPLY_CHANNEL_RANGE, "reply_channel_range", 2 + _REPLY_RANGE_HEAD.size)
    chain, first, count, complete, _ = _REPLY_RANGE_HEAD.unpack_from(raw, 2)
    ids, pos = u16_prefixed(raw, 2 + _REPLY_RANGE_HEAD.size - 2, "reply_channel_range")
    encoding, scids = decode_short_ids(ids)
    tlvs = decode_tlv_stream(raw, (_TLV_TIMESTAMPS, _TLV_CHECKSUMS), pos)
    timestamps = checksums = None
    if _TLV_TIMESTAMPS in tlvs:
        _, plain = decode_encoded(tlvs[_TLV_TIMESTAMPS], 8, "encoded_timestamps")
        timestamps = _pairs(plain)
    if _TLV_CHECKSUMS in tlvs:
        plain = tlvs[_TLV_CHECKSUMS]
        if len(plain) % 8:
            raise InvalidTlvStream(f"checksums_tlv of {len(plain)} bytes is not whole checksum pairs")
        checksums = _pairs(plain)
    for name, values in (("timestamps", timestamps), ("checksums", checksums)):
        if values is not None and len(values) != len(scids):
            raise InvalidTlvStream(f"{len(values)} {name} for {len(scids)} short channel ids")
    return ReplyChannelRange(chain, first, count, complete != 0, scids, timestamps, checksums, encoding)


# -- gossip_timestamp_filter ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GossipTimestampFilter:
    chain_hash: bytes
    first_timestamp: int
    timestamp_range: int

    def matches(self, timestamp: int) -> bool:
        return self.first_timestamp <= timestamp < self.first_timestamp + self.timestamp_range

    def encode(self) -> bytes:
        return _U16.pack(GOSSIP_TIMESTAMP_FILTER) + _CHAIN_U32_U32.pack(
            self.chain_hash, self.first_timestamp, self.timestamp_range
        )


def decode_gossip_timestamp_filter(raw: bytes) -> GossipTimestampFilter:
    expect_type(raw, GOSSIP_TIMESTAMP_FILTER, "gossip_timestamp_filter", 2 + _CHAIN_U32_U32.size)
    return GossipTimestampFilter(*_CHAIN_U32_U32.unpack_from(raw, 2))
