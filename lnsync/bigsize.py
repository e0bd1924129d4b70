"""BigSize (BOLT 1): the big-endian variable-length integer used by TLVs, GSP archives and RGS.

Decoding is strict: a value encoded in more bytes than necessary is an error, as LDK requires.
"""

from __future__ import annotations

import struct

MAX = (1 << 64) - 1


class BigSizeError(ValueError):
    """Truncated or non-canonical BigSize."""


def encode(value: int) -> bytes:
    if value < 0xFD:
        if value < 0:
            raise ValueError("BigSize cannot encode negative values")
        return bytes((value,))
    if value <= 0xFFFF:
        return b"\xfd" + struct.pack(">H", value)
    if value <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack(">I", value)
    if value > MAX:
        raise ValueError("BigSize cannot encode values above 2^64-1")
    return b"\xff" + struct.pack(">Q", value)


def size(value: int) -> int:
    """Encoded length of ``value`` in bytes."""
    if value < 0xFD:
        return 1
    if value <= 0xFFFF:
        return 3
    if value <= 0xFFFFFFFF:
        return 5
    return 9


def decode(buf: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Read a BigSize at ``offset``; return ``(value, new_offset)``."""
    try:
        first = buf[offset]
    except IndexError:
        raise BigSizeError("truncated BigSize") from None
    if first < 0xFD:
        return first, offset + 1
    if first == 0xFD:
        end, fmt, floor = offset + 3, ">H", 0xFD
    elif first == 0xFE:
        end, fmt, floor = offset + 5, ">I", 0x10000
    else:
        end, fmt, floor = offset + 9, ">Q", 0x100000000
    if end > len(buf):
        raise BigSizeError("truncated BigSize")
    (value,) = struct.unpack_from(fmt, buf, offset + 1)
    if value < floor:
        raise BigSizeError(f"non-canonical BigSize encoding of {value}")
    return value, end
