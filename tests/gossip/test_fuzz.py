"""Fuzzing: arbitrary and mutated bytes into every decoder and validator; only GossipError may come out."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lnsync.gossip import control as c
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.addresses import decode_address, decode_addresses, split_descriptors
from lnsync.gossip.dispatch import DECODERS, decode_message
from lnsync.gossip.errors import GossipError
from lnsync.gossip.signing import sign_channel_announcement, sign_node_announcement
from lnsync.gossip.tlv import decode_tlv_stream
from lnsync.gossip.validate import GossipValidator
from tests.gossip_helpers import BTC_A, BTC_B, MAINNET, NODE_A, NODE_B, channel_update

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SCID = (700_000 << 40) | (1 << 16) | 1
# Valid seeds of every type, so that mutations reach deep into each decoder.
SEEDS = [
    sign_channel_announcement(MAINNET, _SCID, NODE_A, NODE_B, BTC_A, BTC_B, b"\x01\x02"),
    channel_update(excess=b"\x01\x00"),
    sign_node_announcement(NODE_A, 7, alias=b"n", addresses=bytes.fromhex("01010203042607050161000107ff")),
    c.Init(b"\x02", b"\x80", (MAINNET,), bytes.fromhex("01010203042607")).encode(),
    c.ErrorMessage(bytes(32), b"oops").encode(),
    c.ErrorMessage(bytes(32), b"hmm", warning=True).encode(),
    c.Ping(4, b"\0\0").encode(),
    c.Pong(b"\0").encode(),
    q.QueryShortChannelIds(MAINNET, (1, 2, 3), (1, 3, 31), q.ENCODING_ZLIB).encode(),
    q.ReplyShortChannelIdsEnd(MAINNET, True).encode(),
    q.QueryChannelRange(MAINNET, 0, 1000, 3).encode(),
    q.ReplyChannelRange(MAINNET, 0, 10, True, (5, 6), ((1, 2), (3, 4)), ((9, 9), (8, 8))).encode(),
    q.ReplyChannelRange(MAINNET, 0, 10, False, (5,), ((1, 2),), None, q.ENCODING_ZLIB).encode(),
    q.GossipTimestampFilter(MAINNET, 0, 0xFFFFFFFF).encode(),
]


def _validator() -> GossipValidator:
    v = GossipValidator(MAINNET)
    v.channel_announcement(SEEDS[0])
    return v


TARGETS: dict[str, Callable[[bytes], object]] = {
    **{f"decoder_{t}": d for t, d in DECODERS.items()},
    "decode_message": decode_message,
    "decode_gossip": m.decode_gossip,
    "validate": _validator().validate,
    "validate_unverified": GossipValidator(MAINNET, verify_signatures=False).validate,
    "decode_addresses": decode_addresses,
    "decode_address": decode_address,
    "split_descriptors": split_descriptors,
    "tlv_stream": lambda b: decode_tlv_stream(b, known=(1, 2, 3)),
    "address_list_of_node": lambda b: m.decode_node_announcement(b).address_list,
    "remote_address_of_init": lambda b: c.decode_init(b).remote_address,
}


def _call(target: Callable[[bytes], object], data: bytes) -> None:
    try:
        target(data)
    except GossipError as e:
        error = e
    else:
        return
    assert error.reason  # a label for counters ...
    assert str(error)  # ... and a message for humans


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "set_u16"]))
        at = draw(st.integers(0, len(data)))
        if action == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif at + 2 <= len(data):  # lengths are u16s: make them lie
            data[at : at + 2] = struct.pack(">H", draw(st.integers(0, 0xFFFF)))
    return bytes(data)


typed_noise = st.builds(
    lambda t, body: struct.pack(">H", t) + body, st.sampled_from(sorted(DECODERS)), st.binary(max_size=300)
)


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.one_of(st.binary(max_size=300), typed_noise, mutated()))
def test_only_gossip_errors_come_out(name, data):
    _call(TARGETS[name], data)


def test_seeds_are_valid():
    """The fuzz seeds themselves decode (otherwise the mutations would test little)."""
    for seed in SEEDS:
        decode_message(seed)
    _validator().validate(SEEDS[1])
    _validator().validate(SEEDS[2])
