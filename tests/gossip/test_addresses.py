"""BOLT 7 address descriptors: exact bytes per type, round trips, and what is rejected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnsync.gossip.addresses import (
    AddressList,
    AddressType,
    SocketAddress,
    count_dns_descriptors,
    decode_address,
    decode_addresses,
    encode_addresses,
    onion_v3_checksum_ok,
    parse_address,
    split_descriptors,
)
from lnsync.gossip.errors import InvalidAddress
from tests.gossip_helpers import address_lists

# The Tor project's own v3 address (rend-spec-v3 checksum holds for it).
TORPROJECT_V3 = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"


@given(address_lists, st.binary(max_size=20).map(lambda b: b"\x07" + b))
def test_address_list_round_trip(addresses, excess):
    raw = encode_addresses(addresses)
    assert decode_addresses(raw) == AddressList(tuple(addresses))
    # an unknown type ends parsing; it and everything after it are kept as excess
    parsed = decode_addresses(raw + excess)
    assert parsed == AddressList(tuple(addresses), excess)
    assert parsed.encode() == raw + excess
    assert split_descriptors(raw + excess) == [a.encode() for a in addresses]


def test_descriptor_bytes_per_type():
    cases = {
        "1.2.3.4:9735": "01010203042607",
        "[2001:db8::1]:9735": "0220010db80000000000000000000000012607",
        "example.com:9735": "050b6578616d706c652e636f6d2607",
    }
    for text, hexed in cases.items():
        address = parse_address(text)
        assert address.encode().hex() == hexed
        assert decode_address(bytes.fromhex(hexed)) == address
        assert str(address) == text
    v3 = parse_address(TORPROJECT_V3 + ":443")
    assert v3.type == AddressType.TOR_V3
    assert len(v3.encode()) == 38
    assert v3.encode()[35] == 3
    assert decode_address(v3.encode()).host == TORPROJECT_V3
    v2 = parse_address("expyuzz4wqqyqhjn.onion:80")
    assert v2.type == AddressType.TOR_V2
    assert len(v2.encode()) == 13
    assert not v2.usable


def test_tor_v3_checksum():
    assert onion_v3_checksum_ok(TORPROJECT_V3)
    broken = "3" + TORPROJECT_V3[1:]
    assert not onion_v3_checksum_ok(broken)
    with pytest.raises(ValueError, match="checksum"):
        parse_address(broken + ":443")


def test_port_zero_is_kept_but_not_usable():
    address = decode_address(bytes.fromhex("01010203040000"))
    assert address.port == 0
    assert not address.usable
    assert parse_address("1.2.3.4:1").usable


@pytest.mark.parametrize(
    ("hexed", "match"),
    [
        ("01010203", "IPV4 address descriptor needs 6 bytes, 3 left"),
        ("02" + "00" * 17, "IPV6 address descriptor needs 18 bytes, 17 left"),
        ("03" + "00" * 11, "TOR_V2"),
        ("04" + "00" * 36, "TOR_V3"),
        ("05", "truncated before its length byte"),
        ("0505616263", "DNS address descriptor needs 8 bytes"),
        ("0503612062" + "2607", "outside"),  # a space in the hostname
        ("0502c3a9" + "2607", "outside"),  # non-ASCII (é): BOLT 7 requires Punycode
        ("01010203042607" + "0101", "IPV4"),  # a good one, then a truncated one
    ],
)
def test_bad_descriptors(hexed, match):
    with pytest.raises(InvalidAddress, match=match):
        decode_addresses(bytes.fromhex(hexed))
    if "outside" not in match:  # splitting does not look inside hostnames, only at lengths
        with pytest.raises(InvalidAddress, match=match):
            split_descriptors(bytes.fromhex(hexed))


def test_single_descriptor_rules():
    with pytest.raises(InvalidAddress, match="empty"):
        decode_address(b"")
    with pytest.raises(InvalidAddress, match="unknown address descriptor type 9"):
        decode_address(b"\x09abc")
    with pytest.raises(InvalidAddress, match="1 bytes after"):
        decode_address(bytes.fromhex("0101020304260700"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("nonsense", "not host:port"),
        ("1.2.3.4", "not host:port"),
        ("1.2.3.4:99999", "not host:port"),
        ("bad host:1", "not a hostname BOLT 7 can carry"),
        ("abc.onion:1", "neither a Tor v2 nor a Tor v3"),
    ],
)
def test_parse_address_rejects(text, match):
    with pytest.raises(ValueError, match=match):
        parse_address(text)


def test_encode_rejects_what_bolt7_cannot_carry():
    with pytest.raises(ValueError, match="not a hostname"):
        SocketAddress(AddressType.DNS, "x" * 256, 1).encode()
    with pytest.raises(ValueError, match="port 70000 out of range"):
        SocketAddress(AddressType.IPV4, "1.2.3.4", 70000).encode()


def _descriptor_soup() -> st.SearchStrategy[bytes]:
    """Fields of real descriptors (DNS names with bad characters too), truncated or followed by
    anything: what a peer can send."""
    dns = st.tuples(st.binary(max_size=12), st.integers(0, 65535)).map(
        lambda t: bytes((5, len(t[0]))) + t[0] + t[1].to_bytes(2, "big")
    )
    fixed = st.sampled_from([(1, 6), (2, 18), (3, 12), (4, 37)]).flatmap(
        lambda k: st.binary(min_size=k[1], max_size=k[1]).map(lambda b, t=k[0]: bytes((t,)) + b)
    )
    parts = st.lists(st.one_of(dns, fixed, st.binary(max_size=4)), max_size=6).map(b"".join)
    return st.tuples(parts, st.integers(0, 8)).map(lambda t: t[0][: len(t[0]) - t[1]] if t[1] else t[0])


@given(st.one_of(address_lists.map(lambda a: b"".join(x.encode() for x in a)), _descriptor_soup()))
def test_the_check_without_decoding_agrees_with_decoding(data):
    """count_dns_descriptors (persistence's check) refuses exactly what decode_addresses refuses,
    and counts its DNS hostnames."""
    try:
        decoded = decode_addresses(data)
    except InvalidAddress:
        with pytest.raises(InvalidAddress):
            count_dns_descriptors(data)
        return
    assert count_dns_descriptors(data) == sum(a.type == AddressType.DNS for a in decoded.addresses)
