"""BOLT 1 TLV streams: decoding with every reader rule of the spec, and canonical encoding.

A stream decodes to a ``dict`` of type -> value bytes. Message decoders pass the set of types
they understand: an unknown *even* type fails the stream, an unknown odd one is kept in the dict
(callers simply do not look at it), exactly as BOLT 1 asks.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from lnsync import bigsize
from lnsync.gossip.errors import InvalidTlvStream


def decode_tlv_stream(
    buf: bytes | memoryview, known: Collection[int], offset: int = 0, end: int | None = None
) -> dict[int, bytes]:
    """Decode the TLV records in ``buf[offset:end]`` (to the end of ``buf`` by default)."""
    stop = len(buf) if end is None else end
    records: dict[int, bytes] = {}
    last = -1
    pos = offset
    while pos < stop:
        try:
            tlv_type, pos = bigsize.decode(buf, pos)
            length, pos = bigsize.decode(buf, pos)
        except bigsize.BigSizeError as e:
            raise InvalidTlvStream(f"TLV record at byte {pos}: {e}") from None
        if pos > stop:
            raise InvalidTlvStream("TLV record header runs past the end of the stream")
        if tlv_type <= last:
            raise InvalidTlvStream(f"TLV type {tlv_type} after {last}: types must strictly increase")
        if length > stop - pos:
            raise InvalidTlvStream(f"TLV type {tlv_type} claims {length} bytes, {stop - pos} remain")
        if tlv_type not in known and tlv_type % 2 == 0:
            raise InvalidTlvStream(f"unknown even TLV type {tlv_type}")
        records[tlv_type] = bytes(buf[pos : pos + length])
        pos += length
        last = tlv_type
    return records


def encode_tlv_stream(records: Mapping[int, bytes]) -> bytes:
    """The canonical stream: records in increasing type order, minimal BigSize headers."""
    return b"".join(bigsize.encode(t) + bigsize.encode(len(records[t])) + records[t] for t in sorted(records))


def decode_bigsize_value(value: bytes, what: str) -> int:
    """A TLV value that is exactly one minimally encoded BigSize (e.g. ``query_option``)."""
    try:
        number, used = bigsize.decode(value)
    except bigsize.BigSizeError as e:
        raise InvalidTlvStream(f"{what}: {e}") from None
    if used != len(value):
        raise InvalidTlvStream(f"{what}: {len(value) - used} bytes after its BigSize value")
    return number
