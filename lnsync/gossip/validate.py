"""Gossip validation: every rule BOLT 7 (and LDK, which our clients run) puts on a message.

Two layers:

* ``check_*`` functions check one decoded message in isolation. A channel_update's signature
  can only be checked with its channel's node ids, so ``check_channel_update`` takes the origin
  node id (``None`` skips the signature).
* :class:`GossipValidator` is what a downloader or importer holds for one chain: it decodes and
  checks raw messages and remembers the node ids of the channels it has seen announced (a bounded
  map) so that it can verify their channel_updates. It is the hot loop, so it avoids needless work:
  cheap field checks before the ~50 µs signature check, one parse per message, cached keys.

Every failure is a :class:`~lnsync.gossip.errors.GossipError` subclass with a stable ``reason``.
Deliberately *not* rejected: unknown feature bits in announcements (BOLT 7 keeps such messages and
only forbids routing; see :mod:`lnsync.gossip.features`), high-S signatures, extension bytes after
the known fields, Tor v2 and port-0 addresses (BOLT 7 says to ignore the address, not the message).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING

from lnsync.gossip import messages as m
from lnsync.gossip.addresses import count_dns_descriptors
from lnsync.gossip.errors import (
    DontForward,
    GossipError,
    HtlcMaximumMissing,
    HtlcMaximumTooLarge,
    HtlcMinimumAboveMaximum,
    InvalidAddress,
    InvalidAlias,
    InvalidPublicKey,
    InvalidSignature,
    MalformedMessage,
    UnknownChannel,
    UnsortedNodeIds,
    WrongChain,
)
from lnsync.gossip.scid import scid_str
from lnsync.gossip.signing import is_valid_pubkey, parse_pubkey, sha256d, verify, verify_parsed

if TYPE_CHECKING:
    import numpy as np

# 21 million BTC in millisatoshi: the bound BOLT 1 puts on every msat amount.
MAX_VALUE_MSAT = 21_000_000 * 100_000_000 * 1000

DEFAULT_MAX_CHANNELS = 400_000  # mainnet has ~50k; archives with closed channels a few 100k


def _check_chain(chain: bytes, expected: bytes, what: str) -> None:
    if chain != expected:
        raise WrongChain(f"{what} for chain {chain.hex()}, expected {expected.hex()}")


def check_channel_announcement(
    msg: m.ChannelAnnouncement, chain_hash: bytes, *, verify_signatures: bool = True
) -> None:
    """Chain, key order, four valid points and (by default) four signatures over sha256d(signed part)."""
    _check_chain(msg.chain_hash, chain_hash, "channel_announcement")
    if msg.node_id_1 >= msg.node_id_2:
        raise UnsortedNodeIds(
            f"channel_announcement {scid_str(msg.short_channel_id)}: node_id_1 {msg.node_id_1.hex()} "
            f"is not below node_id_2 {msg.node_id_2.hex()}"
        )
    keys = (
        ("node_id_1", msg.node_id_1, msg.node_signature_1, True),
        ("node_id_2", msg.node_id_2, msg.node_signature_2, True),
        ("bitcoin_key_1", msg.bitcoin_key_1, msg.bitcoin_signature_1, False),
        ("bitcoin_key_2", msg.bitcoin_key_2, msg.bitcoin_signature_2, False),
    )
    parsed = []  # each key parsed once: the bitcoin keys are not cached (they sign once)
    for name, key, _, is_node in keys:
        point = parse_pubkey(key, cache=is_node)
        if point is None:
            raise InvalidPublicKey(f"channel_announcement {name} {key.hex()} is not a valid point")
        parsed.append(point)
    if not verify_signatures:
        return
    digest = sha256d(msg.signed_part)
    for (name, _, signature, _), point in zip(keys, parsed, strict=True):
        if not verify_parsed(point, signature, digest):
            raise InvalidSignature(
                f"channel_announcement {scid_str(msg.short_channel_id)}: signature by {name} does not verify"
            )


def check_channel_update(
    msg: m.ChannelUpdate,
    chain_hash: bytes,
    origin: bytes | None,
    *,
    reject_htlc_min_above_max: bool = True,
) -> None:
    """Fields, then the signature by ``origin`` (the node id for the update's direction; None skips it).

    ``htlc_minimum_msat > htlc_maximum_msat`` breaks an origin MUST of BOLT 7, yet a BOLT 7 reader
    only stops routing through it and LDK stores it; ``reject_htlc_min_above_max=False`` accepts it.
    """
    _check_chain(msg.chain_hash, chain_hash, "channel_update")
    _check_update_fields(msg, reject_htlc_min_above_max)
    if origin is not None and not verify(origin, msg.signature, sha256d(msg.signed_part)):
        raise InvalidSignature(
            f"channel_update {scid_str(msg.short_channel_id)}/{msg.direction}: "
            f"signature by {origin.hex()} does not verify"
        )


def channel_updates_pass(records: np.ndarray, chain_hash: bytes) -> np.ndarray:
    """:func:`check_channel_update` without a signature and with ``reject_htlc_min_above_max=False``
    over :func:`lnsync.gossip.messages.channel_update_records`, column-wise: True where it passes.
    (Its twin, tested against it in tests/gossip/test_update_columns.py.)"""
    import numpy as np

    flags = records["message_flags"]
    return np.asarray(
        (records["chain_hash"] == np.void(chain_hash))
        & (flags & m.MESSAGE_FLAG_HTLC_MAX != 0)
        & (flags & m.MESSAGE_FLAG_DONT_FORWARD == 0)
        & (records["htlc_maximum_msat"] <= MAX_VALUE_MSAT),
        dtype=bool,
    )


def _check_update_fields(msg: m.ChannelUpdate, reject_htlc_min_above_max: bool) -> None:
    flags = msg.message_flags
    if not flags & m.MESSAGE_FLAG_HTLC_MAX:
        raise HtlcMaximumMissing(f"{_where(msg)}: message_flags bit 0 (must_be_one) is clear")
    if flags & m.MESSAGE_FLAG_DONT_FORWARD:
        raise DontForward(f"{_where(msg)}: dont_forward is set; private updates are not gossip")
    if msg.htlc_maximum_msat > MAX_VALUE_MSAT:
        raise HtlcMaximumTooLarge(f"{_where(msg)}: htlc_maximum_msat {msg.htlc_maximum_msat} exceeds 21M BTC")
    if reject_htlc_min_above_max and msg.htlc_minimum_msat > msg.htlc_maximum_msat:
        raise HtlcMinimumAboveMaximum(
            f"{_where(msg)}: htlc_minimum_msat {msg.htlc_minimum_msat} > "
            f"htlc_maximum_msat {msg.htlc_maximum_msat}"
        )


def _where(msg: m.ChannelUpdate) -> str:
    """Built only for an error: formatting it for every update cost ~1 µs each (bench_ingest)."""
    return f"channel_update {scid_str(msg.short_channel_id)}/{msg.direction}"


def check_node_announcement(
    msg: m.NodeAnnouncement, *, verify_signature: bool = True, strict_alias: bool = False
) -> None:
    """Node id, address descriptors, optionally a UTF-8 alias, and the signature.

    BOLT 7 asks origins for a UTF-8 alias but gives readers no rule, and LDK keeps any bytes, so
    a non-UTF-8 alias is rejected only with ``strict_alias``.
    """
    node = msg.node_id.hex()
    if not is_valid_pubkey(msg.node_id, cache=True):
        raise InvalidPublicKey(f"node_announcement node_id {node} is not a valid point")
    # InvalidAddress for truncated/bad descriptors
    if count_dns_descriptors(msg.addresses) > 1:
        raise InvalidAddress(
            f"node_announcement {node} has more than one DNS hostname (BOLT 7: do not forward)"
        )
    if strict_alias:
        try:
            msg.alias.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidAlias(f"node_announcement {node}: alias {msg.alias.hex()} is not UTF-8") from None
    if verify_signature and not verify(msg.node_id, msg.signature, sha256d(msg.signed_part)):
        raise InvalidSignature(f"node_announcement {node}: signature does not verify")


class GossipValidator:
    """Decode and validate raw gossip for one chain, remembering announced channels' node ids.

    ``max_channels`` bounds that memory: past it the oldest eighth is forgotten, and updates for
    those channels raise :class:`UnknownChannel` until :meth:`remember_channel` is called again
    (e.g. with node ids from the store). A channel announced twice keeps its first node ids, as
    LDK does without a chain source. Not thread-safe; use one per connection or task.
    """

    def __init__(
        self,
        chain_hash: bytes,
        *,
        verify_signatures: bool = True,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        reject_htlc_min_above_max: bool = True,
        strict_alias: bool = False,
    ) -> None:
        if max_channels < 8:
            raise ValueError("max_channels must be at least 8")
        self.chain_hash = chain_hash
        self.verify_signatures = verify_signatures
        self.max_channels = max_channels
        self.reject_htlc_min_above_max = reject_htlc_min_above_max
        self.strict_alias = strict_alias
        self._channels: dict[int, tuple[bytes, bytes]] = {}
        self._interned: dict[bytes, bytes] = {}  # one bytes object per node id across channels

    # -- channel memory -------------------------------------------------------------------------

    def remember_channel(self, short_channel_id: int, node_id_1: bytes, node_id_2: bytes) -> None:
        """Record (or overwrite) a channel's node ids, e.g. from the store at start-up."""
        if short_channel_id not in self._channels and len(self._channels) >= self.max_channels:
            self._evict()
        intern = self._interned
        if len(intern) > 2 * self.max_channels:
            intern.clear()
        self._channels[short_channel_id] = (
            intern.setdefault(node_id_1, node_id_1),
            intern.setdefault(node_id_2, node_id_2),
        )

    def forget_channel(self, short_channel_id: int) -> None:
        self._channels.pop(short_channel_id, None)

    def node_ids(self, short_channel_id: int) -> tuple[bytes, bytes] | None:
        return self._channels.get(short_channel_id)

    def __len__(self) -> int:
        return len(self._channels)

    def _evict(self) -> None:
        # Rebuild without the oldest eighth: amortised O(1) per insert, unlike deleting the head
        # of a dict one key at a time.
        keep = islice(self._channels.items(), self.max_channels // 8, None)
        self._channels = dict(keep)

    # -- validation -----------------------------------------------------------------------------

    def channel_announcement(self, raw: bytes) -> m.ChannelAnnouncement:
        msg = m.decode_channel_announcement(raw)
        check_channel_announcement(msg, self.chain_hash, verify_signatures=self.verify_signatures)
        if msg.short_channel_id not in self._channels:
            self.remember_channel(msg.short_channel_id, msg.node_id_1, msg.node_id_2)
        return msg

    def channel_update(self, raw: bytes) -> m.ChannelUpdate:
        """Raises UnknownChannel when verifying and the channel's announcement was never seen."""
        msg = m.decode_channel_update(raw)
        if msg.chain_hash != self.chain_hash:
            _check_chain(msg.chain_hash, self.chain_hash, "channel_update")
        _check_update_fields(msg, self.reject_htlc_min_above_max)
        if self.verify_signatures:
            pair = self._channels.get(msg.short_channel_id)
            if pair is None:
                raise UnknownChannel(msg.short_channel_id)
            origin = pair[msg.channel_flags & 1]
            if not verify(origin, msg.signature, sha256d(raw[66:])):
                raise InvalidSignature(
                    f"channel_update {scid_str(msg.short_channel_id)}/{msg.direction}: "
                    f"signature by {origin.hex()} does not verify"
                )
        return msg

    def node_announcement(self, raw: bytes) -> m.NodeAnnouncement:
        msg = m.decode_node_announcement(raw)
        check_node_announcement(msg, verify_signature=self.verify_signatures, strict_alias=self.strict_alias)
        return msg

    def validate(self, raw: bytes) -> m.GossipMessage:
        """Any of the three gossip messages; MalformedMessage for other types."""
        if len(raw) < 2 or raw[0] != 1 or raw[1] > 2:
            raise MalformedMessage(f"not a gossip message (type {m.message_type(raw)})")
        kind = raw[1]
        if kind == 2:
            return self.channel_update(raw)
        if kind == 0:
            return self.channel_announcement(raw)
        return self.node_announcement(raw)

    def validate_many(self, raws: Iterable[bytes]) -> list[m.GossipMessage | GossipError]:
        """Validate in order; each result is the message or the error it raised (never raises)."""
        out: list[m.GossipMessage | GossipError] = []
        append = out.append
        validate = self.validate
        for raw in raws:
            try:
                append(validate(raw))
            except GossipError as e:
                append(e)
        return out
