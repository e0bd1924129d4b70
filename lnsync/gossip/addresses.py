"""BOLT 7 address descriptors (node_announcement ``addresses``, init ``remote_addr``, RGS v2).

A descriptor is one type byte then a payload whose length the type fixes:

====  ==========  ===================================================  ==========
type  name        payload                                              length
====  ==========  ===================================================  ==========
1     IPv4        4-byte address, u16 port                             6
2     IPv6        16-byte address, u16 port                            18
3     Tor v2      10-byte onion (deprecated: parse, never use)         12
4     Tor v3      32-byte ed25519 key, u16 checksum, u8 version, port  37
5     DNS         u8 length, ASCII hostname, u16 port                  2 + len + 1
====  ==========  ===================================================  ==========

An unknown type ends parsing: its length is unknown, and since descriptors are sent in ascending
type order everything after it is newer too. Those bytes are kept as ``excess`` (they are signed).
Hostnames follow LDK's rule (ASCII letters, digits, ``.``, ``-``, ``_``) so that we accept exactly
what LDK clients accept.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from lnsync.gossip.errors import InvalidAddress


class AddressType(IntEnum):
    IPV4 = 1
    IPV6 = 2
    TOR_V2 = 3
    TOR_V3 = 4
    DNS = 5


_FIXED_PAYLOAD = {AddressType.IPV4: 6, AddressType.IPV6: 18, AddressType.TOR_V2: 12, AddressType.TOR_V3: 37}
_PORT = struct.Struct(">H")
_HOSTNAME = re.compile(rb"[A-Za-z0-9._-]*")
_ONION_V3_VERSION = 3


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """One address descriptor. ``host`` is text: dotted IPv4, compressed IPv6, ``….onion``, or a name."""

    type: AddressType
    host: str
    port: int

    @property
    def usable(self) -> bool:
        """False for what BOLT 7 says to ignore: port 0 on IP/DNS addresses, and Tor v2."""
        if self.type == AddressType.TOR_V2:
            return False
        return self.port != 0 or self.type == AddressType.TOR_V3

    def encode(self) -> bytes:
        """The descriptor bytes, type byte first."""
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} out of range")
        port = _PORT.pack(self.port)
        if self.type == AddressType.IPV4:
            return b"\x01" + ipaddress.IPv4Address(self.host).packed + port
        if self.type == AddressType.IPV6:
            return b"\x02" + ipaddress.IPv6Address(self.host).packed + port
        if self.type in (AddressType.TOR_V2, AddressType.TOR_V3):
            return (
                bytes((self.type,))
                + _onion_bytes(self.host, 10 if self.type == AddressType.TOR_V2 else 35)
                + port
            )
        name = self.host.encode("ascii")
        if len(name) > 255 or not _HOSTNAME.fullmatch(name):
            raise ValueError(f"{self.host!r} is not a hostname BOLT 7 can carry")
        return b"\x05" + bytes((len(name),)) + name + port

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.type == AddressType.IPV6 else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AddressList:
    """The parsed ``addresses`` field: known descriptors in order, then any bytes we cannot parse."""

    addresses: tuple[SocketAddress, ...]
    excess: bytes = b""

    def encode(self) -> bytes:
        return encode_addresses(self.addresses, self.excess)


def _onion_bytes(host: str, size: int) -> bytes:
    label = host.lower().removesuffix(".onion")
    if len(label) * 5 != size * 8:
        raise ValueError(f"{host!r} is not a {size}-byte onion address")
    return base64.b32decode(label.upper())


def _onion_host(payload: bytes) -> str:
    return base64.b32encode(payload).decode("ascii").lower() + ".onion"


def onion_v3_checksum_ok(host: str) -> bool:
    """Tor v3 address self-check (rend-spec-v3): sha3(".onion checksum" | key | version)[:2]."""
    raw = _onion_bytes(host, 35)
    key, checksum, version = raw[:32], raw[32:34], raw[34]
    digest = hashlib.sha3_256(b".onion checksum" + key + bytes((version,))).digest()
    return version == _ONION_V3_VERSION and digest[:2] == checksum


def _descriptor_end(data: bytes, pos: int) -> int | None:
    """Where the descriptor at ``pos`` ends; None for an unknown type; InvalidAddress if truncated."""
    kind = data[pos]
    if kind == AddressType.DNS:
        if pos + 2 > len(data):
            raise InvalidAddress("DNS address descriptor truncated before its length byte")
        size = data[pos + 1] + 3
    elif kind in _FIXED_PAYLOAD:
        size = _FIXED_PAYLOAD[AddressType(kind)]
    else:
        return None
    if pos + 1 + size > len(data):
        raise InvalidAddress(
            f"{AddressType(kind).name} address descriptor needs {size} bytes, {len(data) - pos - 1} left"
        )
    return pos + 1 + size


def _decode_one(data: bytes, pos: int) -> tuple[SocketAddress | None, int]:
    """Decode the descriptor at ``pos``; (None, pos) for an unknown type."""
    end = _descriptor_end(data, pos)
    if end is None:
        return None, pos
    address_type = AddressType(data[pos])
    (port,) = _PORT.unpack_from(data, end - 2)
    if address_type == AddressType.DNS:
        name = data[pos + 2 : end - 2]
        if not _HOSTNAME.fullmatch(name):
            raise InvalidAddress(f"DNS hostname {name!r} has characters outside [A-Za-z0-9._-]")
        return SocketAddress(AddressType.DNS, name.decode("ascii"), port), end
    payload = data[pos + 1 : end - 2]
    if address_type == AddressType.IPV4:
        host = str(ipaddress.IPv4Address(payload))
    elif address_type == AddressType.IPV6:
        host = str(ipaddress.IPv6Address(payload))
    else:
        host = _onion_host(payload)
    return SocketAddress(address_type, host, port), end


def split_descriptors(data: bytes) -> list[bytes]:
    """The known-type descriptors of an ``addresses`` field as raw bytes each (type byte first),
    without interpreting them: what RGS v2 carries. Stops at an unknown type; InvalidAddress if
    one is truncated."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        end = _descriptor_end(data, pos)
        if end is None:
            break
        out.append(bytes(data[pos:end]))
        pos = end
    return out


def count_dns_descriptors(data: bytes) -> int:
    """Check a whole ``addresses`` field as :func:`decode_addresses` does (same
    :class:`InvalidAddress` cases) without building the addresses; return how many are DNS
    hostnames. For validation on the hot path: no host strings, no address objects."""
    dns = 0
    pos = 0
    while pos < len(data):
        end = _descriptor_end(data, pos)
        if end is None:
            break
        if data[pos] == AddressType.DNS:
            name = data[pos + 2 : end - 2]
            if not _HOSTNAME.fullmatch(name):
                raise InvalidAddress(f"DNS hostname {name!r} has characters outside [A-Za-z0-9._-]")
            dns += 1
        pos = end
    return dns


def decode_addresses(data: bytes) -> AddressList:
    """Parse a whole ``addresses`` field; raises :class:`InvalidAddress` on a truncated descriptor."""
    found: list[SocketAddress] = []
    pos = 0
    while pos < len(data):
        address, pos = _decode_one(data, pos)
        if address is None:
            return AddressList(tuple(found), bytes(data[pos:]))
        found.append(address)
    return AddressList(tuple(found))


def decode_address(data: bytes) -> SocketAddress:
    """Exactly one descriptor of a known type (``init``'s ``remote_addr``)."""
    if not data:
        raise InvalidAddress("empty address descriptor")
    address, end = _decode_one(data, 0)
    if address is None:
        raise InvalidAddress(f"unknown address descriptor type {data[0]}")
    if end != len(data):
        raise InvalidAddress(f"{len(data) - end} bytes after the address descriptor")
    return address


def encode_addresses(addresses: Iterable[SocketAddress], excess: bytes = b"") -> bytes:
    return b"".join(a.encode() for a in addresses) + excess


def parse_address(text: str) -> SocketAddress:
    """``host:port`` as users write it: ``1.2.3.4:9735``, ``[::1]:9735``, ``….onion:9735``, ``name:9735``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 0xFFFF:
        raise ValueError(f"{text!r} is not host:port")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        return SocketAddress(AddressType.IPV6, str(ipaddress.IPv6Address(host[1:-1])), port)
    try:
        return SocketAddress(AddressType.IPV4, str(ipaddress.IPv4Address(host)), port)
    except ValueError:
        pass
    if host.lower().endswith(".onion"):
        label = host.lower().removesuffix(".onion")
        if len(label) == 56:
            if not onion_v3_checksum_ok(host):
                raise ValueError(f"{host!r} fails the Tor v3 checksum")
            return SocketAddress(AddressType.TOR_V3, host.lower(), port)
        if len(label) == 16:
            return SocketAddress(AddressType.TOR_V2, host.lower(), port)
        raise ValueError(f"{host!r} is neither a Tor v2 nor a Tor v3 address")
    address = SocketAddress(AddressType.DNS, host, port)
    address.encode()  # raises ValueError for a name BOLT 7 cannot carry
    return address
