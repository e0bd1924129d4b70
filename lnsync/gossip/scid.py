"""Short channel ids: the ``block x tx x output`` notation. Dependency-free, so that every module of
:mod:`lnsync.gossip` (errors included) may use it without an import cycle."""

from __future__ import annotations


def scid_str(scid: int) -> str:
    """``block x tx x output`` notation of a short channel id."""
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"


def scid_from_str(text: str) -> int:
    """The short channel id written ``block x tx x output``; ValueError if it is not one."""
    block, tx, out = (int(p) for p in text.split("x"))
    if not (0 <= block < 1 << 24 and 0 <= tx < 1 << 24 and 0 <= out < 1 << 16):
        raise ValueError(f"{text!r} is not a short channel id")
    return (block << 40) | (tx << 16) | out
