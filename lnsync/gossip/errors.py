"""Typed gossip errors: each says what was wrong, so callers can count rejections by reason."""

from __future__ import annotations


class GossipError(ValueError):
    """Base class: a message that must not be accepted. ``reason`` is a short stable label."""

    reason = "invalid"


class MalformedMessage(GossipError):
    """Truncated, too long, or structurally impossible bytes."""

    reason = "malformed"


class UnknownMessageType(GossipError):
    """An unknown *even* message type (BOLT 1: the connection must fail). Odd ones are ignored."""

    reason = "unknown_even_type"

    def __init__(self, msg_type: int) -> None:
        super().__init__(f"unknown even message type {msg_type}")
        self.msg_type = msg_type


class WrongChain(GossipError):
    """The message is for another chain (chain_hash mismatch)."""

    reason = "wrong_chain"


class InvalidSignature(GossipError):
    """A signature does not verify (or is not a valid encoding)."""

    reason = "bad_signature"


class InvalidField(GossipError):
    """A field holds a value BOLT 7 forbids (bounds, ordering, flags, addresses)."""

    reason = "invalid_field"
