"""Shared test helpers for lnsync.gossip: hypothesis strategies, fixed keys, signing of raw bodies."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from lnsync.chain import CHAIN_HASHES
from lnsync.gossip import messages as m
from lnsync.gossip.addresses import AddressType, SocketAddress, decode_address
from lnsync.gossip.signing import pubkey_of, signed_message

MAINNET = CHAIN_HASHES["bitcoin"]
TESTNET = CHAIN_HASHES["testnet"]
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def secret(i: int) -> bytes:
    return i.to_bytes(32, "big")


# Four node secrets, ordered so that node A's public key sorts below node B's.
_pair = sorted((secret(11), secret(12)), key=pubkey_of)
NODE_A, NODE_B = _pair
BTC_A, BTC_B = secret(21), secret(22)


def resign(raw: bytes, secrets: list[bytes]) -> bytes:
    """Re-sign a (possibly tampered) gossip message over its current body with ``secrets``."""
    body = raw[2 + 64 * len(secrets) :]
    return signed_message(m.message_type(raw), secrets, body)


def channel_update(
    scid: int = (700_000 << 40) | (1 << 16) | 1,
    *,
    direction: int = 0,
    secret_key: bytes | None = None,
    chain: bytes = MAINNET,
    timestamp: int = 1_700_000_000,
    htlc_min: int = 1_000,
    htlc_max: int = 1_000_000_000,
    message_flags: int = m.MESSAGE_FLAG_HTLC_MAX,
    excess: bytes = b"",
) -> bytes:
    body = m.encode_channel_update_body(
        chain, scid, timestamp, direction, 144, htlc_min, 1000, 100, htlc_max, message_flags=message_flags
    )
    key = secret_key or (NODE_B if direction else NODE_A)
    body += excess
    return signed_message(m.CHANNEL_UPDATE, (key,), body)


# -- strategies -----------------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
chains = st.one_of(st.sampled_from(list(CHAIN_HASHES.values())), st.binary(min_size=32, max_size=32))
points = st.binary(min_size=33, max_size=33)
signatures = st.binary(min_size=64, max_size=64)
feature_vectors = st.binary(max_size=40)
# Extension bytes after the known fields: these are signed and must survive a round trip.
excess_bytes = st.binary(max_size=24)

_hostnames = st.from_regex(rb"[A-Za-z0-9._-]{0,60}", fullmatch=True)

socket_addresses = st.one_of(
    st.builds(lambda a, p: SocketAddress(AddressType.IPV4, str(a), p), st.ip_addresses(v=4), u16),
    st.builds(lambda a, p: SocketAddress(AddressType.IPV6, str(a), p), st.ip_addresses(v=6), u16),
    st.builds(
        lambda k, p: decode_address(b"\x03" + k + struct.pack(">H", p)),
        st.binary(min_size=10, max_size=10),
        u16,
    ),
    st.builds(
        lambda k, p: decode_address(b"\x04" + k + struct.pack(">H", p)),
        st.binary(min_size=35, max_size=35),
        u16,
    ),
    st.builds(lambda h, p: SocketAddress(AddressType.DNS, h.decode(), p), _hostnames, u16),
)
address_lists = st.lists(socket_addresses, max_size=6)
