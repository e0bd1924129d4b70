"""Validation rules on freshly signed messages: each failure has its own error type and reason."""

from __future__ import annotations

import struct

import pytest

from lnsync.gossip import features as feat
from lnsync.gossip import messages as m
from lnsync.gossip.addresses import parse_address
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
from lnsync.gossip.signing import (
    pubkey_of,
    sha256d,
    sign,
    sign_channel_announcement,
    sign_node_announcement,
    verify,
)
from lnsync.gossip.validate import (
    MAX_VALUE_MSAT,
    GossipValidator,
    check_channel_update,
    check_node_announcement,
)
from tests.gossip_helpers import (
    BTC_A,
    BTC_B,
    CURVE_ORDER,
    MAINNET,
    NODE_A,
    NODE_B,
    TESTNET,
    channel_update,
    resign,
    secret,
)

SCID = (700_000 << 40) | (1 << 16) | 1
ALL_FOUR = [NODE_A, NODE_B, BTC_A, BTC_B]


def announcement(chain: bytes = MAINNET, scid: int = SCID, features: bytes = b"") -> bytes:
    return sign_channel_announcement(chain, scid, NODE_A, NODE_B, BTC_A, BTC_B, features)


@pytest.fixture
def validator() -> GossipValidator:
    v = GossipValidator(MAINNET)
    v.channel_announcement(announcement())
    return v


def test_valid_messages_pass(validator):
    ann = m.decode_channel_announcement(announcement())
    assert ann.node_id_1 == pubkey_of(NODE_A) < ann.node_id_2 == pubkey_of(NODE_B)
    assert validator.node_ids(SCID) == (ann.node_id_1, ann.node_id_2)
    for direction in (0, 1):
        assert validator.validate(channel_update(direction=direction)).direction == direction
    node = sign_node_announcement(NODE_A, 5, alias=b"alice", addresses=parse_address("1.2.3.4:9735").encode())
    assert validator.validate(node).alias_text == "alice"


def test_wrong_chain_is_rejected_before_signatures(validator):
    with pytest.raises(WrongChain, match="expected 6fe28c0a") as e:
        validator.validate(announcement(chain=TESTNET))
    assert e.value.reason == "wrong_chain"
    with pytest.raises(WrongChain):
        validator.validate(channel_update(chain=TESTNET))


def test_unsorted_node_ids():
    raw = bytearray(announcement())
    at = len(raw) - 4 * 33
    raw[at : at + 66] = raw[at + 33 : at + 66] + raw[at : at + 33]  # swap node_id_1 and node_id_2
    with pytest.raises(UnsortedNodeIds, match="is not below node_id_2") as e:
        GossipValidator(MAINNET).validate(resign(bytes(raw), [NODE_B, NODE_A, BTC_A, BTC_B]))
    assert e.value.reason == "unsorted_node_ids"


def test_equal_node_ids_are_unsorted_too():
    raw = bytearray(announcement())
    at = len(raw) - 4 * 33
    raw[at + 33 : at + 66] = raw[at : at + 33]
    with pytest.raises(UnsortedNodeIds):
        GossipValidator(MAINNET).validate(resign(bytes(raw), [NODE_A, NODE_A, BTC_A, BTC_B]))


@pytest.mark.parametrize("index", range(4))
def test_invalid_points(index):
    raw = bytearray(announcement())
    at = len(raw) - (4 - index) * 33
    # x = 0 and x >= the field prime are not on the curve; pick one that keeps node ids sorted
    raw[at : at + 33] = b"\x02" + b"\x00" * 32 if index == 0 else b"\x03" + b"\xff" * 32
    with pytest.raises(InvalidPublicKey, match="is not a valid point"):
        GossipValidator(MAINNET).validate(bytes(raw))


@pytest.mark.parametrize(
    ("index", "name"), list(enumerate(["node_id_1", "node_id_2", "bitcoin_key_1", "bitcoin_key_2"]))
)
def test_each_announcement_signature_is_checked(index, name):
    raw = bytearray(announcement())
    raw[2 + 64 * index + 10] ^= 0x01
    with pytest.raises(InvalidSignature, match=f"signature by {name}"):
        GossipValidator(MAINNET).validate(bytes(raw))


def test_announcement_signed_by_wrong_bitcoin_key():
    raw = resign(announcement(), [NODE_A, NODE_B, BTC_B, BTC_A])
    with pytest.raises(InvalidSignature, match="bitcoin_key_1"):
        GossipValidator(MAINNET).validate(raw)


def test_update_signed_by_the_other_node(validator):
    with pytest.raises(InvalidSignature, match="/0: signature by"):
        validator.validate(channel_update(direction=0, secret_key=NODE_B))
    raw = bytearray(channel_update())
    raw[40] ^= 0x80
    with pytest.raises(InvalidSignature):
        validator.validate(bytes(raw))


def test_update_field_rules(validator):
    with pytest.raises(HtlcMaximumMissing, match="must_be_one"):
        validator.validate(channel_update(message_flags=0))
    with pytest.raises(DontForward):
        validator.validate(channel_update(message_flags=3))
    with pytest.raises(HtlcMaximumTooLarge, match="exceeds 21M BTC"):
        validator.validate(channel_update(htlc_max=MAX_VALUE_MSAT + 1))
    validator.validate(channel_update(htlc_min=0, htlc_max=MAX_VALUE_MSAT))  # the bound itself is fine
    with pytest.raises(HtlcMinimumAboveMaximum, match="1001 > htlc_maximum_msat 1000"):
        validator.validate(channel_update(htlc_min=1001, htlc_max=1000))
    lenient = GossipValidator(MAINNET, reject_htlc_min_above_max=False)
    lenient.channel_announcement(announcement())
    assert lenient.validate(channel_update(htlc_min=1001, htlc_max=1000)).htlc_minimum_msat == 1001


def test_update_for_unknown_channel_cannot_be_checked():
    v = GossipValidator(MAINNET)
    raw = channel_update()
    with pytest.raises(UnknownChannel, match="700000x1x1") as e:
        v.validate(raw)
    assert e.value.short_channel_id == SCID
    assert e.value.reason == "unknown_channel"
    v.remember_channel(SCID, pubkey_of(NODE_A), pubkey_of(NODE_B))  # e.g. from the store
    assert v.validate(raw).short_channel_id == SCID
    v.forget_channel(SCID)
    with pytest.raises(UnknownChannel):
        v.validate(raw)
    # Without signature checks (persistence re-checking structure), the channel need not be known.
    assert GossipValidator(MAINNET, verify_signatures=False).validate(raw).short_channel_id == SCID
    check_channel_update(m.decode_channel_update(raw), MAINNET, None)


def test_first_announcement_of_a_channel_wins(validator):
    other = sign_channel_announcement(MAINNET, SCID, secret(31), secret(32), secret(33), secret(34))
    validator.validate(other)  # valid on its own ...
    assert validator.node_ids(SCID) == (pubkey_of(NODE_A), pubkey_of(NODE_B))  # ... but does not replace


def test_channel_memory_is_bounded():
    v = GossipValidator(MAINNET, max_channels=16)
    a, b = pubkey_of(NODE_A), pubkey_of(NODE_B)
    for scid in range(100):
        v.remember_channel(scid, a, b)
        assert len(v) <= 16
    assert v.node_ids(99) == (a, b)
    assert v.node_ids(0) is None
    with pytest.raises(ValueError, match="at least 8"):
        GossipValidator(MAINNET, max_channels=1)


def test_high_s_signatures_verify():
    raw = channel_update()
    r, s = raw[2:34], int.from_bytes(raw[34:66], "big")
    high = raw[:2] + r + (CURVE_ORDER - s).to_bytes(32, "big") + raw[66:]
    assert verify(pubkey_of(NODE_A), high[2:66], sha256d(high[66:]))
    check_channel_update(m.decode_channel_update(high), MAINNET, pubkey_of(NODE_A))


def test_extension_bytes_are_signed(validator):
    tlv = bytes.fromhex("fdd90308") + struct.pack(">ii", -100, -5)  # LND inbound fees
    raw = channel_update(excess=tlv)
    assert validator.validate(raw).excess == tlv
    with pytest.raises(InvalidSignature):
        validator.validate(channel_update() + tlv)  # appended after signing


def test_unknown_features_do_not_invalidate_announcements():
    features = feat.from_bits([0, 40, 1001])
    raw = announcement(features=features)
    msg = GossipValidator(MAINNET).validate(raw)
    assert isinstance(msg, m.ChannelAnnouncement)
    assert msg.features == features
    # ... but consumers can see the channel must not be routed through
    assert feat.unknown_required_bits(msg.features, feat.KNOWN_CHANNEL_FEATURES) == [0, 40]
    node = sign_node_announcement(NODE_A, 1, features=feat.from_bits([7, 90]))
    check_node_announcement(m.decode_node_announcement(node))


def test_node_announcement_rules():
    bad = sign_node_announcement(NODE_A, 1, addresses=bytes.fromhex("010102"))
    with pytest.raises(InvalidAddress, match="IPV4") as e:
        GossipValidator(MAINNET).validate(bad)
    assert e.value.reason == "bad_address"
    two_dns = parse_address("a.example:1").encode() + parse_address("b.example:1").encode()
    with pytest.raises(InvalidAddress, match="more than one DNS"):
        GossipValidator(MAINNET).validate(sign_node_announcement(NODE_A, 1, addresses=two_dns))
    non_utf8 = sign_node_announcement(NODE_A, 1, alias=b"\xff\xfebad")
    assert GossipValidator(MAINNET).validate(non_utf8).alias_text.endswith("bad")
    with pytest.raises(InvalidAlias):
        GossipValidator(MAINNET, strict_alias=True).validate(non_utf8)
    tampered = bytearray(sign_node_announcement(NODE_A, 1, alias=b"x"))
    tampered[-5] ^= 1
    with pytest.raises(InvalidSignature, match="node_announcement"):
        GossipValidator(MAINNET).validate(bytes(tampered))
    bad_key = bytearray(sign_node_announcement(NODE_A, 1))
    bad_key[72:105] = b"\x03" + b"\xff" * 32
    with pytest.raises(InvalidPublicKey):
        GossipValidator(MAINNET).validate(bytes(bad_key))


def test_validate_many_returns_errors_in_place(validator):
    good = channel_update()
    results = validator.validate_many([good, b"\x01", channel_update(chain=TESTNET), good[:-1]])
    assert isinstance(results[0], m.ChannelUpdate)
    assert [r.reason for r in results[1:] if isinstance(r, GossipError)] == [
        "malformed",
        "wrong_chain",
        "malformed",
    ]
    with pytest.raises(MalformedMessage, match="not a gossip message"):
        validator.validate(b"\x00\x12\x00\x00\x00\x00")


def test_sign_helpers_are_consistent():
    digest = sha256d(b"x")
    assert verify(pubkey_of(BTC_A), sign(BTC_A, digest), digest, cache=False)
    assert not verify(pubkey_of(BTC_A), sign(BTC_B, digest), digest)
    assert not verify(b"\x02" + b"\xff" * 32, sign(BTC_A, digest), digest)
    assert not verify(pubkey_of(BTC_A), b"\xff" * 64, digest)  # r, s >= curve order
