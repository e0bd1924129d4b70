"""Reading the primitive fields message codecs share, with MalformedMessage for short input."""

from __future__ import annotations

import struct

from lnsync.gossip.errors import MalformedMessage

_U16 = struct.Struct(">H")


def expect_type(raw: bytes, msg_type: int, name: str, min_size: int) -> None:
    """Check ``raw`` is at least ``min_size`` bytes and starts with type ``msg_type``."""
    if len(raw) < min_size:
        raise MalformedMessage(f"{name} too short ({len(raw)} bytes, needs {min_size})")
    if _U16.unpack_from(raw)[0] != msg_type:
        raise MalformedMessage(f"not a {name}")


def u16_prefixed(raw: bytes, pos: int, name: str) -> tuple[bytes, int]:
    """The ``[u16 len][len bytes]`` field at ``pos`` and the offset after it."""
    if pos + 2 > len(raw):
        raise MalformedMessage(f"{name}: truncated length")
    (size,) = _U16.unpack_from(raw, pos)
    end = pos + 2 + size
    if end > len(raw):
        raise MalformedMessage(f"{name}: {size} bytes announced, {len(raw) - pos - 2} present")
    return raw[pos + 2 : end], end
