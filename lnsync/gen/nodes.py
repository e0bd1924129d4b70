"""What a generated node announces: features, colour and addresses that look like mainnet's.

Feature sets follow what the main implementations advertise in node_announcements (BOLT 9 bits;
odd = optional). Addresses mix the kinds seen on mainnet: Tor v3 only is the most common, then
IPv4, IPv4 with Tor, IPv6 and DNS hostnames; a few nodes announce none. All values come from the
caller's RNG, so a seed reproduces them.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import random
from dataclasses import dataclass

from lnsync.gossip import features
from lnsync.gossip.addresses import AddressType, SocketAddress, decode_addresses, encode_addresses

# BOLT 9 feature bits per implementation (as of 2025/2026 releases).
_FEATURE_BITS: dict[str, tuple[int, ...]] = {
    # LND: data_loss_protect, upfront_shutdown, gossip_queries, var_onion, gossip_queries_ex,
    # static_remotekey, payment_secret, basic_mpp, large_channel, anchors, route_blinding,
    # anysegwit, channel_type, scid_alias, zeroconf, keysend (55), taproot chans (181), lease (2023).
    "lnd": (0, 5, 7, 8, 11, 12, 14, 17, 19, 23, 25, 27, 45, 47, 51, 55, 181, 2023),
    # Core Lightning: dual funding, quiescence, onion messages, storage, splicing on top.
    "cln": (1, 5, 7, 8, 11, 12, 14, 17, 19, 23, 25, 27, 29, 35, 39, 43, 45, 47, 51, 63),
    "eclair": (1, 5, 7, 8, 11, 12, 14, 17, 19, 23, 25, 27, 29, 35, 39, 45, 47, 51, 61),
    "ldk": (1, 7, 8, 11, 12, 14, 17, 23, 25, 27, 39, 45, 47, 51),
    "old_lnd": (0, 5, 7, 8, 11, 12, 14, 17, 19, 23, 31, 45, 2023),
}
# Roughly the mainnet mix of implementations.
_IMPLEMENTATIONS = (("lnd", 0.66), ("cln", 0.16), ("ldk", 0.07), ("eclair", 0.03), ("old_lnd", 0.08))
_DEFAULT_COLOUR = {"lnd": b"\x33\x99\xff", "old_lnd": b"\x33\x99\xff", "eclair": b"\x49\xda\xaa"}

# (kinds, share): t = Tor v3, 4 = IPv4, 6 = IPv6, d = DNS hostname.
_ADDRESS_MIXES = (
    ("t", 0.38),
    ("4", 0.22),
    ("4t", 0.18),
    ("46", 0.05),
    ("46t", 0.05),
    ("dt", 0.03),
    ("4d", 0.02),
    ("", 0.07),
)
_IPV6_PREFIXES = ("2a01:4f8", "2a01:4f9", "2a02:c207", "2600:1f18", "2001:41d0", "2604:a880", "2a03:b0c0")
_DNS_SUFFIXES = ("duckdns.org", "ddns.net", "dynv6.net", "no-ip.org", "com", "io", "net", "xyz")
_PORT = 9735


@dataclass(frozen=True, slots=True)
class NodeProfile:
    """The node_announcement content of one node; ``addresses`` are encoded descriptors."""

    features: bytes
    rgb_color: bytes
    alias: bytes
    addresses: bytes


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def _port(rng: random.Random) -> int:
    return _PORT if rng.random() < 0.85 else rng.randrange(1024, 65536)


def random_ipv4(rng: random.Random) -> str:
    """A routable (public, unicast) IPv4 address."""
    while True:
        addr = ipaddress.IPv4Address(rng.getrandbits(32))
        if addr.is_global and not addr.is_multicast:
            return str(addr)


def random_ipv6(rng: random.Random) -> str:
    """An address in one of the large hosting providers' IPv6 blocks."""
    prefix = ipaddress.IPv6Address(rng.choice(_IPV6_PREFIXES) + "::").packed[:4]
    return str(ipaddress.IPv6Address(prefix + rng.getrandbits(96).to_bytes(12, "big")))


def tor_v3_host(key: bytes) -> str:
    """The ``….onion`` name of a 32-byte service key, with its real checksum and version 3."""
    checksum = hashlib.sha3_256(b".onion checksum" + key + b"\x03").digest()[:2]
    return base64.b32encode(key + checksum + b"\x03").decode("ascii").lower() + ".onion"


def _hostname(rng: random.Random, alias: str) -> str:
    label = "".join(ch for ch in alias.lower() if ch.isascii() and ch.isalnum())[:20]
    if len(label) < 3:
        label = "ln" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    prefix = rng.choice(("", "", "ln.", "node.", "lightning."))
    return f"{prefix}{label}.{rng.choice(_DNS_SUFFIXES)}"


def random_addresses(rng: random.Random, kinds: str, alias: str) -> list[SocketAddress]:
    """Addresses of the given kinds, in the ascending type order BOLT 7 requires."""
    out = []
    if "4" in kinds:
        out.append(SocketAddress(AddressType.IPV4, random_ipv4(rng), _port(rng)))
    if "6" in kinds:
        out.append(SocketAddress(AddressType.IPV6, random_ipv6(rng), _port(rng)))
    if "t" in kinds:
        out.append(SocketAddress(AddressType.TOR_V3, tor_v3_host(rng.randbytes(32)), _PORT))
    if "d" in kinds:
        out.append(SocketAddress(AddressType.DNS, _hostname(rng, alias), _port(rng)))
    return out


def alias_bytes(alias: str) -> bytes:
    """The alias as at most 32 bytes of valid UTF-8 (cut at a character boundary)."""
    raw = alias.encode("utf-8")[:32]
    return raw.decode("utf-8", errors="ignore").encode("utf-8")


def make_profile(rng: random.Random, node_id: bytes, alias: str) -> NodeProfile:
    impl = _pick(rng, _IMPLEMENTATIONS)
    if impl == "cln":
        colour = node_id[:3]  # Core Lightning's default colour is the start of the node id
    elif impl in _DEFAULT_COLOUR and rng.random() < 0.5:
        colour = _DEFAULT_COLOUR[impl]
    else:
        colour = rng.randbytes(3)
    addresses = random_addresses(rng, _pick(rng, _ADDRESS_MIXES), alias)
    return NodeProfile(
        features.from_bits(_FEATURE_BITS[impl]), colour, alias_bytes(alias), encode_addresses(addresses)
    )


def moved(rng: random.Random, profile: NodeProfile) -> NodeProfile:
    """The same node after its clearnet address changed (a new IPv4 where it had one)."""
    addresses = list(decode_addresses(profile.addresses).addresses)
    if not addresses or addresses[0].type != AddressType.IPV4:
        return profile
    addresses[0] = SocketAddress(AddressType.IPV4, random_ipv4(rng), addresses[0].port)
    return dataclasses.replace(profile, addresses=encode_addresses(addresses))
