"""BOLT 1 setup and control messages: ``init``, ``error``, ``warning``, ``ping``, ``pong``.

Each message is a small frozen dataclass with ``encode()`` (whole wire message, type first) and a
``decode_*`` function that raises only :class:`~lnsync.gossip.errors.GossipError` subclasses.
Bytes after the known fields of ``error``/``warning``/``ping``/``pong`` are an extension stream
that BOLT 1 lets readers ignore, so they are ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lnsync.gossip import features as feat
from lnsync.gossip.addresses import SocketAddress, decode_address
from lnsync.gossip.errors import InvalidTlvStream
from lnsync.gossip.fields import expect_type, u16_prefixed
from lnsync.gossip.tlv import decode_tlv_stream, encode_tlv_stream

WARNING = 1
INIT = 16
ERROR = 17
PING = 18
PONG = 19

_U16 = struct.Struct(">H")
_TYPE_LEN = struct.Struct(">HH")
# A ping asking for this many pong bytes or more must not be answered (BOLT 1).
PONG_BYTES_IGNORE_FROM = 65532

_INIT_NETWORKS = 1
_INIT_REMOTE_ADDR = 3


@dataclass(frozen=True, slots=True)
class Init:
    """``init``: the features a peer offers and, optionally, the chains it cares about."""

    global_features: bytes = b""
    features: bytes = b""
    networks: tuple[bytes, ...] | None = None  # None: no networks TLV at all
    remote_addr: bytes | None = None  # one raw address descriptor, as the peer sent it

    @property
    def combined_features(self) -> bytes:
        """BOLT 1: the two bitmaps are one logical feature map."""
        return feat.combine(self.global_features, self.features)

    @property
    def remote_address(self) -> SocketAddress | None:
        """The address the peer sees us at; raises InvalidAddress if it sent an unusable one."""
        return None if self.remote_addr is None else decode_address(self.remote_addr)

    def wants_chain(self, chain_hash: bytes) -> bool:
        """False only if the peer listed its networks and ours is not among them."""
        return self.networks is None or chain_hash in self.networks

    def encode(self) -> bytes:
        tlvs: dict[int, bytes] = {}
        if self.networks is not None:
            tlvs[_INIT_NETWORKS] = b"".join(self.networks)
        if self.remote_addr is not None:
            tlvs[_INIT_REMOTE_ADDR] = self.remote_addr
        return (
            _TYPE_LEN.pack(INIT, len(self.global_features))
            + self.global_features
            + _U16.pack(len(self.features))
            + self.features
            + encode_tlv_stream(tlvs)
        )


def decode_init(raw: bytes) -> Init:
    expect_type(raw, INIT, "init", 6)
    global_features, pos = u16_prefixed(raw, 2, "init globalfeatures")
    local_features, pos = u16_prefixed(raw, pos, "init features")
    tlvs = decode_tlv_stream(raw, (_INIT_NETWORKS, _INIT_REMOTE_ADDR), pos)
    networks = None
    if _INIT_NETWORKS in tlvs:
        chains = tlvs[_INIT_NETWORKS]
        if len(chains) % 32:
            raise InvalidTlvStream(f"init networks TLV is {len(chains)} bytes, not a multiple of 32")
        networks = tuple(chains[i : i + 32] for i in range(0, len(chains), 32))
    return Init(global_features, local_features, networks, tlvs.get(_INIT_REMOTE_ADDR))


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """``error`` (or, with ``warning=True``, ``warning``): a peer telling us what went wrong."""

    channel_id: bytes = bytes(32)
    data: bytes = b""
    warning: bool = False

    @property
    def text(self) -> str:
        """``data`` safe to log: verbatim if printable ASCII (BOLT 1), else hex."""
        if all(32 <= b <= 126 for b in self.data):
            return self.data.decode("ascii")
        return "0x" + self.data.hex()

    @property
    def all_channels(self) -> bool:
        return self.channel_id == bytes(32)

    def encode(self) -> bytes:
        if len(self.channel_id) != 32:
            raise ValueError("channel_id is 32 bytes")
        return (
            _U16.pack(WARNING if self.warning else ERROR)
            + self.channel_id
            + _U16.pack(len(self.data))
            + self.data
        )


def _decode_error_like(raw: bytes, msg_type: int, name: str) -> ErrorMessage:
    expect_type(raw, msg_type, name, 36)
    data, _ = u16_prefixed(raw, 34, f"{name} data")
    return ErrorMessage(raw[2:34], data, warning=msg_type == WARNING)


def decode_error(raw: bytes) -> ErrorMessage:
    return _decode_error_like(raw, ERROR, "error")


def decode_warning(raw: bytes) -> ErrorMessage:
    return _decode_error_like(raw, WARNING, "warning")


@dataclass(frozen=True, slots=True)
class Ping:
    num_pong_bytes: int
    ignored: bytes = b""

    @property
    def wants_pong(self) -> bool:
        return self.num_pong_bytes < PONG_BYTES_IGNORE_FROM

    def pong(self) -> Pong | None:
        """The answer BOLT 1 requires (zeros, as many as asked), or None if it forbids one."""
        return Pong(bytes(self.num_pong_bytes)) if self.wants_pong else None

    def encode(self) -> bytes:
        return _TYPE_LEN.pack(PING, self.num_pong_bytes) + _U16.pack(len(self.ignored)) + self.ignored


def decode_ping(raw: bytes) -> Ping:
    expect_type(raw, PING, "ping", 6)
    (num_pong_bytes,) = _U16.unpack_from(raw, 2)
    ignored, _ = u16_prefixed(raw, 4, "ping ignored")
    return Ping(num_pong_bytes, ignored)


@dataclass(frozen=True, slots=True)
class Pong:
    ignored: bytes = b""

    def encode(self) -> bytes:
        return _TYPE_LEN.pack(PONG, len(self.ignored)) + self.ignored


def decode_pong(raw: bytes) -> Pong:
    expect_type(raw, PONG, "pong", 4)
    ignored, _ = u16_prefixed(raw, 2, "pong ignored")
    return Pong(ignored)
