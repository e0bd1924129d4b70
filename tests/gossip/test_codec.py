"""Round trips of every message lnsync.gossip encodes or decodes, plus BOLT 1 TLV test vectors."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnsync import bigsize
from lnsync.gossip import control as c
from lnsync.gossip import features as feat
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.addresses import encode_addresses
from lnsync.gossip.dispatch import DECODERS, IgnoredMessage, decode_message
from lnsync.gossip.errors import (
    GossipError,
    InvalidEncoding,
    InvalidTlvStream,
    MalformedMessage,
    MissingFeatureDependency,
    UnknownMessageType,
    UnknownRequiredFeature,
)
from lnsync.gossip.tlv import decode_tlv_stream, encode_tlv_stream
from tests.gossip_helpers import (
    address_lists,
    chains,
    excess_bytes,
    feature_vectors,
    points,
    signatures,
    u8,
    u16,
    u32,
    u64,
)

# -- the three gossip messages --------------------------------------------------------------------


@given(
    sigs=st.lists(signatures, min_size=4, max_size=4),
    features=feature_vectors,
    chain=chains,
    scid=u64,
    keys=st.lists(points, min_size=4, max_size=4),
    excess=excess_bytes,
)
def test_channel_announcement_round_trip(sigs, features, chain, scid, keys, excess):
    body = m.encode_channel_announcement_body(chain, scid, *keys, features=features) + excess
    raw = m.with_type(m.CHANNEL_ANNOUNCEMENT, b"".join(sigs), body)
    msg = decode_message(raw)
    assert isinstance(msg, m.ChannelAnnouncement)
    assert [
        msg.node_signature_1,
        msg.node_signature_2,
        msg.bitcoin_signature_1,
        msg.bitcoin_signature_2,
    ] == sigs
    assert (msg.features, msg.chain_hash, msg.short_channel_id) == (features, chain, scid)
    assert [msg.node_id_1, msg.node_id_2, msg.bitcoin_key_1, msg.bitcoin_key_2] == keys
    assert msg.signed_part == body
    assert msg.excess == excess
    assert msg.raw == raw


@given(
    sig=signatures,
    chain=chains,
    scid=u64,
    ts=u32,
    mflags=u8,
    cflags=u8,
    cltv=u16,
    hmin=u64,
    fbase=u32,
    fprop=u32,
    hmax=u64,
    excess=excess_bytes,
)
def test_channel_update_round_trip(
    sig, chain, scid, ts, mflags, cflags, cltv, hmin, fbase, fprop, hmax, excess
):
    body = m.encode_channel_update_body(
        chain, scid, ts, cflags, cltv, hmin, fbase, fprop, hmax, message_flags=mflags
    )
    raw = m.with_type(m.CHANNEL_UPDATE, sig, body + excess)
    msg = decode_message(raw)
    assert msg == m.ChannelUpdate(sig, chain, scid, ts, mflags, cflags, cltv, hmin, fbase, fprop, hmax, raw)
    assert msg.direction == cflags & 1
    assert msg.disabled == bool(cflags & 2)
    assert msg.dont_forward == bool(mflags & 2)
    assert msg.excess == excess
    assert msg.signed_part == body + excess


@given(
    sig=signatures,
    features=feature_vectors,
    ts=u32,
    node_id=points,
    rgb=st.binary(min_size=3, max_size=3),
    alias=st.text(max_size=8).map(lambda t: t.encode()[:32]),
    addresses=address_lists,
    excess=excess_bytes,
)
def test_node_announcement_round_trip(sig, features, ts, node_id, rgb, alias, addresses, excess):
    addr_bytes = encode_addresses(addresses)
    body = m.encode_node_announcement_body(
        node_id, ts, features=features, rgb_color=rgb, alias=alias, addresses=addr_bytes
    )
    raw = m.with_type(m.NODE_ANNOUNCEMENT, sig, body + excess)
    msg = decode_message(raw)
    assert isinstance(msg, m.NodeAnnouncement)
    assert (msg.signature, msg.features, msg.timestamp, msg.node_id, msg.rgb_color) == (
        sig,
        features,
        ts,
        node_id,
        rgb,
    )
    assert msg.alias == alias.ljust(32, b"\0")
    assert msg.alias_text == alias.rstrip(b"\0").decode()
    assert msg.addresses == addr_bytes
    assert list(msg.address_list.addresses) == addresses
    assert msg.excess == excess


def test_gossip_decoders_reject_the_wrong_type():
    raw = bytes(m.CHANNEL_UPDATE_SIZE)
    for decode in (m.decode_channel_update, m.decode_channel_announcement, m.decode_node_announcement):
        with pytest.raises(MalformedMessage):
            decode(raw)
    with pytest.raises(MalformedMessage, match="not a gossip message"):
        m.decode_gossip(c.Ping(1).encode())


# -- BOLT 1 ---------------------------------------------------------------------------------------


@given(
    gf=feature_vectors,
    lf=feature_vectors,
    networks=st.none() | st.lists(chains, max_size=3).map(tuple),
    remote=st.none() | address_lists.filter(len).map(lambda a: a[0].encode()),
)
def test_init_round_trip(gf, lf, networks, remote):
    msg = c.Init(gf, lf, networks, remote)
    assert decode_message(msg.encode()) == msg
    assert feat.to_int(msg.combined_features) == feat.to_int(gf) | feat.to_int(lf)
    if remote is not None:
        assert msg.remote_address is not None
        assert msg.remote_address.encode() == remote


def test_init_extension_vectors_from_bolt1_appendix_c():
    assert c.decode_init(bytes.fromhex("001000000000")) == c.Init()
    assert c.decode_init(bytes.fromhex("001000000000c9012acb0104")) == c.Init()
    for bad in ("00100000000001", "001000000000ca012a", "001000000000c90101c90102"):
        with pytest.raises(InvalidTlvStream):
            c.decode_init(bytes.fromhex(bad))


def test_init_networks_must_be_whole_chain_hashes():
    raw = c.Init().encode() + encode_tlv_stream({1: bytes(33)})
    with pytest.raises(InvalidTlvStream, match="multiple of 32"):
        c.decode_init(raw)
    assert c.Init(networks=(b"x" * 32,)).wants_chain(b"x" * 32)
    assert not c.Init(networks=()).wants_chain(b"x" * 32)
    assert c.Init().wants_chain(b"x" * 32)


@given(channel_id=st.binary(min_size=32, max_size=32), data=st.binary(max_size=100), warning=st.booleans())
def test_error_and_warning_round_trip(channel_id, data, warning):
    msg = c.ErrorMessage(channel_id, data, warning)
    assert decode_message(msg.encode()) == msg


def test_error_text_is_safe_to_log():
    assert c.ErrorMessage(data=b"bad sig").text == "bad sig"
    assert c.ErrorMessage(data=b"\x1b[31m").text == "0x1b5b33316d"
    assert c.ErrorMessage().all_channels


@given(num=u16, ignored=st.binary(max_size=64))
def test_ping_pong_round_trip(num, ignored):
    ping = c.Ping(num, ignored)
    assert decode_message(ping.encode()) == ping
    assert ping.wants_pong == (num < 65532)
    pong = ping.pong()
    if num >= 65532:
        assert pong is None  # BOLT 1: such pings are not answered
    else:
        assert pong is not None
        assert decode_message(pong.encode()) == pong
        assert len(pong.ignored) == num


def test_truncated_control_messages_are_malformed():
    for msg in (c.Ping(4, b"abcd"), c.Pong(b"ab"), c.ErrorMessage(data=b"x"), c.Init(b"\x01", b"\x02")):
        raw = msg.encode()
        with pytest.raises(MalformedMessage):
            decode_message(raw[:-1])


# -- BOLT 7 queries -------------------------------------------------------------------------------

scid_lists = st.lists(u64, max_size=60).map(tuple)
encodings = st.sampled_from([q.ENCODING_UNCOMPRESSED, q.ENCODING_ZLIB])


@given(chain=chains, scids=scid_lists, data=st.data(), encoding=encodings)
def test_query_short_channel_ids_round_trip(chain, scids, data, encoding):
    flags = data.draw(st.none() | st.lists(u64, min_size=len(scids), max_size=len(scids)).map(tuple))
    msg = q.QueryShortChannelIds(chain, scids, flags, encoding)
    raw = msg.encode()
    assert decode_message(raw) == msg
    assert decode_message(raw).encode() == raw


@given(chain=chains, full=st.booleans())
def test_reply_short_channel_ids_end_round_trip(chain, full):
    msg = q.ReplyShortChannelIdsEnd(chain, full)
    assert decode_message(msg.encode()) == msg


@given(chain=chains, first=u32, count=u32, option=st.none() | u64)
def test_query_channel_range_round_trip(chain, first, count, option):
    msg = q.QueryChannelRange(chain, first, count, option)
    assert decode_message(msg.encode()) == msg
    assert msg.end_blocknum == first + count


pairs = st.tuples(u32, u32)


@given(
    chain=chains,
    first=u32,
    count=u32,
    complete=st.booleans(),
    scids=scid_lists,
    data=st.data(),
    encoding=encodings,
)
def test_reply_channel_range_round_trip(chain, first, count, complete, scids, data, encoding):
    n = len(scids)
    timestamps = data.draw(st.none() | st.lists(pairs, min_size=n, max_size=n).map(tuple))
    checksums = data.draw(st.none() | st.lists(pairs, min_size=n, max_size=n).map(tuple))
    msg = q.ReplyChannelRange(chain, first, count, complete, scids, timestamps, checksums, encoding)
    raw = msg.encode()
    assert decode_message(raw) == msg
    assert decode_message(raw).encode() == raw


@given(chain=chains, first=u32, span=u32)
def test_gossip_timestamp_filter_round_trip(chain, first, span):
    msg = q.GossipTimestampFilter(chain, first, span)
    assert decode_message(msg.encode()) == msg
    assert msg.matches(first) == (span > 0)
    assert not msg.matches(first + span)


def test_reply_channel_range_with_zero_length_scids_is_empty():
    raw = struct.pack(">H32sIIBH", q.REPLY_CHANNEL_RANGE, bytes(32), 1, 2, 1, 0)
    msg = q.decode_reply_channel_range(raw)
    assert msg.short_channel_ids == ()
    assert msg.sync_complete


def _reply_with_ids(encoded: bytes) -> bytes:
    return struct.pack(">H32sIIBH", q.REPLY_CHANNEL_RANGE, bytes(32), 0, 10, 1, len(encoded)) + encoded


def test_zlib_bomb_is_bounded():
    bomb = b"\x01" + zlib.compress(bytes(q.MAX_INFLATED_SIZE + 8), 9)
    assert len(bomb) < 2000  # a tiny message ...
    with pytest.raises(InvalidEncoding, match="inflates beyond"):
        q.decode_reply_channel_range(_reply_with_ids(bomb))  # ... must not inflate without bound


@pytest.mark.parametrize(
    ("encoded", "match"),
    [
        (b"\x02" + bytes(8), "unknown encoding type 2"),
        (b"\x00" + bytes(7), "whole number"),
        (b"\x01not zlib", "bad zlib"),
        (b"\x01" + zlib.compress(bytes(16))[:-3], "truncated zlib"),
        (b"\x01" + zlib.compress(bytes(16)) + b"junk", "after the zlib stream"),
    ],
)
def test_bad_scid_encodings(encoded, match):
    with pytest.raises(InvalidEncoding, match=match):
        q.decode_reply_channel_range(_reply_with_ids(encoded))


def test_tlv_counts_must_match_the_scids():
    good = q.ReplyChannelRange(bytes(32), 0, 10, True, (1, 2), ((1, 2), (3, 4)), None).encode()
    bad = good[: -len(encode_tlv_stream({1: b"\0" + bytes(16)}))] + encode_tlv_stream({1: b"\0" + bytes(8)})
    with pytest.raises(InvalidTlvStream, match="1 timestamps for 2"):
        q.decode_reply_channel_range(bad)
    query = q.QueryShortChannelIds(bytes(32), (1, 2), (1, 3)).encode()
    with pytest.raises(InvalidTlvStream, match="3 query flags for 2"):
        q.decode_query_short_channel_ids(query[:-5] + encode_tlv_stream({1: b"\0\1\1\1"}))


def _crc32c_reference(data: bytes) -> int:
    """Bitwise CRC32C (Castagnoli, reflected 0x82F63B78), to check the library independently."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_channel_update_checksum_skips_signature_and_timestamp():
    def update(sig: bytes, ts: int, fee: int) -> bytes:
        body = m.encode_channel_update_body(bytes(32), 42, ts, 0, 144, 1, fee, 10, 10**9)
        return m.with_type(m.CHANNEL_UPDATE, sig, body)

    a = update(b"\1" * 64, 1000, 5)
    assert q.channel_update_checksum(a) == _crc32c_reference(a[66:106] + a[110:])
    assert q.channel_update_checksum(a) == q.channel_update_checksum(update(b"\2" * 64, 2000, 5))
    assert q.channel_update_checksum(a) != q.channel_update_checksum(update(b"\1" * 64, 1000, 6))


# -- dispatcher -----------------------------------------------------------------------------------


def test_unknown_odd_types_are_ignorable_and_even_ones_fail():
    assert decode_message(b"\x80\x01payload") == IgnoredMessage(0x8001, b"\x80\x01payload")
    assert isinstance(decode_message(struct.pack(">H", 259) + bytes(10)), IgnoredMessage)  # announcement_sigs
    with pytest.raises(UnknownMessageType) as e:
        decode_message(b"\x80\x02")
    assert e.value.msg_type == 0x8002
    assert e.value.reason == "unknown_even_type"
    with pytest.raises(MalformedMessage):
        decode_message(b"\x01")
    with pytest.raises(MalformedMessage, match="BOLT 8 frame"):
        decode_message(b"\x80\x01" + bytes(65535))


def test_every_known_type_has_a_decoder():
    expected = {1, 16, 17, 18, 19, 256, 257, 258, 261, 262, 263, 264, 265}
    assert set(DECODERS) == expected


# -- TLV streams (BOLT 1 appendix B vectors that hold in any namespace) ---------------------------

_TLV_FAILURES = [
    "fd",
    "fd01",
    "fd000100",
    "fd0101",
    "0ffd",
    "0ffd26",
    "0ffd2602",
    "0ffd000100",
    "0ffd0201" + "00" * 200,
    "1200",
    "fd010200",
    "fe0100000200",
    "ff010000000000000200",
    "1f000f012a",
    "1f001f012a",
    "ffffffffffffffffff000000",
]
_TLV_SUCCESSES = ["", "2100", "fd020100", "fd00fd00", "fd00ff00", "fe0200000100", "ff020000000000000100"]


@pytest.mark.parametrize("stream", _TLV_FAILURES)
def test_tlv_vectors_that_must_fail(stream):
    with pytest.raises(InvalidTlvStream):
        decode_tlv_stream(bytes.fromhex(stream), known=())


@pytest.mark.parametrize("stream", _TLV_SUCCESSES)
def test_tlv_vectors_that_must_decode(stream):
    records = decode_tlv_stream(bytes.fromhex(stream), known=())
    assert all(t % 2 for t in records)


def test_tlv_known_even_type_is_accepted():
    assert decode_tlv_stream(bytes.fromhex("02080000000000000226"), known=(2,)) == {
        2: bytes.fromhex("0226").rjust(8, b"\0")
    }


@given(st.dictionaries(st.integers(0, 2**64 - 1), st.binary(max_size=40), max_size=6))
def test_tlv_round_trip(records):
    raw = encode_tlv_stream(records)
    assert decode_tlv_stream(raw, known=records.keys()) == records


# -- features -------------------------------------------------------------------------------------


@given(st.sets(st.integers(0, 300), max_size=20))
def test_feature_bits_round_trip(bits):
    vector = feat.from_bits(bits)
    assert feat.set_bits(vector) == sorted(bits)
    assert vector == b"" or vector[0] != 0  # minimal length


def test_feature_helpers():
    v = feat.from_bits([7, 12, 17])
    assert feat.supports(v, feat.GOSSIP_QUERIES)
    assert not feat.requires(v, feat.GOSSIP_QUERIES)
    assert feat.requires(v, 12)
    assert feat.supports(v, 16)
    assert not feat.supports(v, 10)
    assert feat.combine(b"\x01", b"\x01\x00") == b"\x01\x01"
    assert feat.unknown_required_bits(feat.from_bits([12, 100, 101, 202]), feat.KNOWN_NODE_FEATURES) == [
        100,
        202,
    ]
    assert feat.unknown_required_bits(feat.from_bits([0, 5]), feat.KNOWN_CHANNEL_FEATURES) == [0]
    assert feat.name(7) == "gossip_queries"


def test_init_feature_rules():
    feat.check_init_features(feat.from_bits([7, 13, 14, 17, 999]))  # unknown odd: fine
    with pytest.raises(UnknownRequiredFeature, match=r"\[998\]"):
        feat.check_init_features(feat.from_bits([7, 998]))
    with pytest.raises(MissingFeatureDependency, match="basic_mpp needs payment_secret"):
        feat.check_init_features(feat.from_bits([17]))
    # UnknownRequiredFeature is a GossipError too, so callers can count it by reason
    assert issubclass(UnknownRequiredFeature, GossipError)


def test_bigsize_values_inside_tlvs_are_canonical():
    raw = q.QueryChannelRange(bytes(32), 0, 1, 1).encode()
    non_minimal = raw[:-3] + encode_tlv_stream({1: b"\xfd\x00\x01"})
    with pytest.raises(InvalidTlvStream, match="non-canonical"):
        q.decode_query_channel_range(non_minimal)
    trailing = raw[:-3] + encode_tlv_stream({1: b"\x01\x00"})
    with pytest.raises(InvalidTlvStream, match="after its BigSize"):
        q.decode_query_channel_range(trailing)
    assert bigsize.encode(3) == b"\x03"
