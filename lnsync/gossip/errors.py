"""Typed gossip errors: each says what was wrong, so callers can count rejections by reason.

Every error a decoder or validator in :mod:`lnsync.gossip` raises is a :class:`GossipError`;
``reason`` is a short label that never changes (it names per-peer counters and the
``Rejection.reason`` persistence reports), while the message text is for humans.
"""

from __future__ import annotations

from lnsync.gossip.scid import scid_str


class GossipError(ValueError):
    """Base class: a message that must not be accepted. ``reason`` is a short stable label."""

    reason = "invalid"


# -- structure ------------------------------------------------------------------------------------


class MalformedMessage(GossipError):
    """Truncated, too long, or structurally impossible bytes."""

    reason = "malformed"


class InvalidTlvStream(MalformedMessage):
    """A TLV stream breaks BOLT 1: out of order, non-minimal, truncated, or an unknown even type."""

    reason = "bad_tlv"


class InvalidEncoding(MalformedMessage):
    """An ``encoded_short_ids``-style array: unknown encoding byte, bad zlib, or a partial element."""

    reason = "bad_encoding"


class UnknownMessageType(GossipError):
    """An unknown *even* message type (BOLT 1: the connection must fail). Odd ones are ignored."""

    reason = "unknown_even_type"

    def __init__(self, msg_type: int) -> None:
        super().__init__(f"unknown even message type {msg_type}")
        self.msg_type = msg_type


# -- semantics ------------------------------------------------------------------------------------


class WrongChain(GossipError):
    """The message is for another chain (chain_hash mismatch)."""

    reason = "wrong_chain"


class InvalidSignature(GossipError):
    """A signature does not verify (or is not a valid encoding)."""

    reason = "bad_signature"


class InvalidPublicKey(GossipError):
    """A node id or bitcoin key is not a valid compressed secp256k1 point."""

    reason = "bad_pubkey"


class UnknownChannel(GossipError):
    """A channel_update whose channel_announcement is unknown, so its signer cannot be known.

    BOLT 7 says to ignore such an update; a downloader may query the announcement and retry.
    """

    reason = "unknown_channel"

    def __init__(self, short_channel_id: int) -> None:
        super().__init__(f"channel_update for unknown channel {scid_str(short_channel_id)}")
        self.short_channel_id = short_channel_id


class InvalidField(GossipError):
    """A field holds a value BOLT 7 forbids (bounds, ordering, flags, addresses)."""

    reason = "invalid_field"


class UnsortedNodeIds(InvalidField):
    """channel_announcement with node_id_1 not strictly below node_id_2."""

    reason = "unsorted_node_ids"


class HtlcMaximumMissing(InvalidField):
    """channel_update without htlc_maximum_msat (message_flags bit 0, must_be_one, is clear)."""

    reason = "htlc_max_missing"


class HtlcMaximumTooLarge(InvalidField):
    """htlc_maximum_msat above 21 million BTC."""

    reason = "htlc_max_too_large"


class HtlcMinimumAboveMaximum(InvalidField):
    """htlc_minimum_msat greater than htlc_maximum_msat."""

    reason = "htlc_min_above_max"


class DontForward(InvalidField):
    """channel_update with the dont_forward bit: a private update that must not be gossiped."""

    reason = "dont_forward"


class InvalidAddress(InvalidField):
    """A node_announcement address descriptor is truncated or holds an impossible value."""

    reason = "bad_address"


class InvalidAlias(InvalidField):
    """A node_announcement alias that is not UTF-8 (only when the validator is strict about it)."""

    reason = "bad_alias"


class UnknownRequiredFeature(InvalidField):
    """An ``init`` requires (even bit) a feature we do not know: BOLT 1 says close the connection."""

    reason = "unknown_required_feature"


class MissingFeatureDependency(InvalidField):
    """A feature vector sets a feature without the features it depends on (BOLT 9)."""

    reason = "missing_feature_dependency"
