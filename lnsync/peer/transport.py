"""BOLT 8 (Noise_XK) transport on asyncio: the encrypted pipe to one Lightning peer.

pyln-proto's :class:`~pyln.proto.wire.LightningConnection` holds the handshake state machine and the
key rotation rule; its socket code does not survive short reads or partial sends, so all I/O is
here instead: every read is ``readexactly``, every write is followed by ``drain``, and every
handshake act has a deadline. Two pyln-proto acts do not raise when the MAC check fails (act two on
the initiator, act one on the responder); we check those tags ourselves.

A frame is an 18-byte encrypted length (2 bytes + 16-byte MAC) and then the encrypted message plus
its MAC. The length is a u16, so no peer can make us read more than 65,535 + 16 bytes for one
message; ``max_message_size`` can lower that bound.

Reading takes whatever the socket has (up to ``READ_SIZE``) and decrypts every whole frame in it in
one loop (:meth:`NoiseTransport.read_messages`): a gossip dump is ~260 bytes a message, so that is
one await per few hundred messages instead of two per message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from pyln.proto.wire import LightningConnection, PrivateKey, PublicKey, decryptWithAD, ecdh, hkdf_two_keys

ACT_ONE_SIZE = 50
ACT_TWO_SIZE = 50
ACT_THREE_SIZE = 66
HEADER_SIZE = 18  # encrypted u16 length + MAC
MAC_SIZE = 16
MAX_MESSAGE_SIZE = 65535
# One socket read: asyncio's own read size, larger than any frame (65,535 + 34 bytes).
READ_SIZE = 1 << 18
_U16 = struct.Struct(">H")


class TransportError(Exception):
    """The connection cannot be used any more; ``reason`` is a short stable label for counters."""

    reason = "transport"


class ConnectFailed(TransportError):
    """No TCP connection: refused, unreachable, unresolvable, or no answer in time."""

    reason = "connect"


class HandshakeError(TransportError):
    """The BOLT 8 handshake failed: wrong key, bad version, bad MAC, garbage, or a timeout."""

    reason = "handshake"


class PeerClosed(TransportError):
    """The peer closed the connection (cleanly, or in the middle of a frame)."""

    reason = "closed"


class FrameError(TransportError):
    """A frame failed authentication or announced more than we accept."""

    reason = "bad_frame"


# pyln-proto's nonces (32 zero bits, then the counter as a little-endian u64), built once: a
# direction uses at most 1000 before its key rotates (two a frame, checked after each frame).
_NONCES: tuple[bytes, ...] = tuple(bytes(LightningConnection.nonce(n)) for n in range(1000))
_ROTATE_AT = 1000


class _Direction:
    """One direction's cipher: the AEAD object and nonce counter kept here, per frame, and handed
    back to pyln-proto's ``LightningConnection`` only when its rotation rule applies (every 1000
    nonces): it derives the next key from the chaining key."""

    __slots__ = ("_aead", "_conn", "_key_attr", "_n", "_nonce_attr")

    def __init__(self, conn: LightningConnection, key_attr: str, nonce_attr: str) -> None:
        self._conn = conn
        self._key_attr = key_attr
        self._nonce_attr = nonce_attr
        self._n = getattr(conn, nonce_attr)
        self._aead = ChaCha20Poly1305(getattr(conn, key_attr))

    def _nonce(self) -> bytes:
        n = self._n
        self._n = n + 1
        return _NONCES[n] if n < _ROTATE_AT else bytes(LightningConnection.nonce(n))

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._aead.encrypt(self._nonce(), plaintext, b"")

    def split(self, buf: bytes, length: int, max_size: int, out: list[bytes]) -> tuple[int, int]:
        """Decrypt the whole frames at the start of ``buf`` into ``out``, in one loop (the read
        path's per-frame work is two decryptions and a slice). ``length`` is the message length of
        a frame whose header an earlier call decrypted but whose body had not all arrived (-1:
        none). Returns the bytes used and the same kind of ``length`` for what is left."""
        n, pos, end = self._n, 0, len(buf)
        decrypt, append = self._aead.decrypt, out.append
        try:
            while True:
                if length < 0:
                    if end - pos < HEADER_SIZE:
                        break
                    (length,) = _U16.unpack(decrypt(_NONCES[n], buf[pos : pos + HEADER_SIZE], None))
                    n += 1
                    pos += HEADER_SIZE
                    if length > max_size:
                        raise FrameError(
                            f"the peer announced a {length}-byte message; at most {max_size} accepted"
                        )
                stop = pos + length + MAC_SIZE
                if stop > end:
                    break
                append(decrypt(_NONCES[n], buf[pos:stop], None))
                n += 1
                pos, length = stop, -1
                if n >= _ROTATE_AT:  # n is even here: header and body used one nonce each
                    self._n = n
                    self.rotate()
                    n, decrypt = self._n, self._aead.decrypt
        except InvalidTag:
            raise FrameError("a frame failed authentication (corrupt stream or wrong keys)") from None
        finally:
            self._n = n
        return pos, length

    def rotate(self) -> None:
        """After each frame. pyln-proto's rule: after 1000 nonces (500 messages) derive the next
        key from the chaining key (it looks at both directions; the other one's counter on the
        connection is never 1000, as that direction hands it back only when it rotates)."""
        if self._n < _ROTATE_AT:
            return
        conn = self._conn
        setattr(conn, self._nonce_attr, self._n)
        conn._maybe_rotate_keys()
        self._n = getattr(conn, self._nonce_attr)
        self._aead = ChaCha20Poly1305(getattr(conn, self._key_attr))


class NoiseTransport:
    """An established BOLT 8 connection: whole plaintext messages in and out."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: LightningConnection,
        remote_pubkey: bytes,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self._send = _Direction(conn, "sk", "sn")
        self._recv = _Direction(conn, "rk", "rn")
        self.remote_pubkey = remote_pubkey
        self.bytes_read = 0
        self.bytes_written = 0
        self._buf = b""  # received, not yet a whole frame
        self._length = -1  # the message length of a frame in _buf whose header is decrypted
        self._ready: collections.deque[bytes] = collections.deque()  # decrypted, not handed out
        self._error: TransportError | None = None  # raised once the messages before it are out

    def _closed(self, e: Exception | None) -> PeerClosed:
        if e is not None:
            return PeerClosed(f"connection lost: {e}")
        if self._length >= 0:
            return PeerClosed(f"the peer closed the connection inside a {self._length}-byte message")
        if self._buf:
            return PeerClosed("the peer closed the connection inside a frame header")
        return PeerClosed("the peer closed the connection between frames")

    async def read_messages(self, max_message_size: int = MAX_MESSAGE_SIZE) -> list[bytes]:
        """Every whole message received so far (at least one, waiting for it if need be); raises a
        TransportError subclass on any failure, but only once the messages before it are out."""
        if self._ready:
            ready = list(self._ready)
            self._ready.clear()
            return ready
        while True:
            if self._error is not None:
                raise self._error
            out: list[bytes] = []
            try:
                used, self._length = self._recv.split(self._buf, self._length, max_message_size, out)
            except FrameError as e:
                if not out:
                    raise
                self._error = e  # a frame after these failed: the caller sees it on its next read
                return out
            if used:
                self._buf = self._buf[used:]
                self.bytes_read += used
            if out:
                return out
            try:
                data = await self._reader.read(READ_SIZE)
            except OSError as e:
                raise self._closed(e) from None
            if not data:
                raise self._closed(None)
            self._buf = self._buf + data if self._buf else data

    async def read_message(self, max_message_size: int = MAX_MESSAGE_SIZE) -> bytes:
        """The next whole message; raises a TransportError subclass on any failure."""
        if not self._ready:
            self._ready.extend(await self.read_messages(max_message_size))
        return self._ready.popleft()

    def write_message(self, message: bytes) -> None:
        """Encrypt and queue one message; call :meth:`drain` (or use :meth:`send`) to apply flow control."""
        if len(message) > MAX_MESSAGE_SIZE:
            raise ValueError(f"a {len(message)}-byte message does not fit in a BOLT 8 frame")
        frame = self._send.encrypt(_U16.pack(len(message))) + self._send.encrypt(message)
        self._send.rotate()
        self._writer.write(frame)
        self.bytes_written += len(frame)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError as e:
            raise PeerClosed(f"connection lost while writing: {e}") from None

    async def send(self, message: bytes) -> None:
        self.write_message(message)
        await self.drain()

    def write_raw(self, data: bytes) -> None:
        """Unencrypted bytes straight to the socket (test peers use it to forge broken frames)."""
        self._writer.write(data)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Small frames go out at once: LDK pauses its dump until our pong arrives, and a delayed ACK
    would add ~40 ms to every pause."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _new_connection(
    local_secret: bytes, remote: bytes | None, ephemeral: bytes | None
) -> LightningConnection:
    conn = LightningConnection(
        None,
        remote_pubkey=PublicKey(remote) if remote is not None else None,
        local_privkey=PrivateKey(local_secret),
        is_initiator=remote is not None,
    )
    if ephemeral is not None:  # fixed keys for the BOLT 8 test vectors
        conn.handshake["e"] = PrivateKey(ephemeral)
    return conn


def _check_act_tag(ck_before: bytes, h_before: bytes, our_key: PrivateKey, act: bytes) -> None:
    """Verify the MAC of act one (responder) or act two (initiator), which pyln-proto decrypts
    without raising on failure: the same key derivation, once more, then a real check."""
    their_ephemeral = PublicKey(act[1:34])
    _, temp_key = hkdf_two_keys(ecdh(our_key, their_ephemeral).data, ck_before)
    h = sha256(h_before + act[1:34]).digest()
    try:
        decryptWithAD(temp_key, LightningConnection.nonce(0), h, act[34:])
    except InvalidTag:
        raise HandshakeError(
            "handshake MAC check failed: the peer does not hold the expected node key"
        ) from None


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: LightningConnection
) -> bytes:
    """Run the acts for ``conn``'s role; returns the remote static public key."""
    try:
        if conn.is_initiator:
            writer.write(conn.handshake_act_one_initiator())
            await writer.drain()
            act_two = await reader.readexactly(ACT_TWO_SIZE)
            if act_two[0] != 0:
                raise HandshakeError(f"unsupported handshake version {act_two[0]} in act two")
            ck, h = conn.chaining_key, conn.handshake["h"]
            conn.handshake_act_two_initiator(act_two)
            _check_act_tag(ck, h, conn.handshake["e"], act_two)
            writer.write(conn.handshake_act_three_initiator())
            await writer.drain()
            remote = bytes(conn.remote_pubkey.serializeCompressed())
        else:
            act_one = await reader.readexactly(ACT_ONE_SIZE)
            if act_one[0] != 0:
                raise HandshakeError(f"unsupported handshake version {act_one[0]} in act one")
            ck, h = conn.chaining_key, conn.handshake["h"]
            conn.handshake_act_one_responder(act_one)
            _check_act_tag(ck, h, conn.local_privkey, act_one)
            writer.write(conn.handshake_act_two_responder())
            await writer.drain()
            act_three = await reader.readexactly(ACT_THREE_SIZE)
            if act_three[0] != 0:
                raise HandshakeError(f"unsupported handshake version {act_three[0]} in act three")
            conn.handshake_act_three_responder(act_three)
            remote = bytes(conn.remote_pubkey.serializeCompressed())
    except asyncio.IncompleteReadError as e:
        raise HandshakeError(
            f"the peer closed the connection during the handshake ({len(e.partial)} bytes)"
        ) from None
    except InvalidTag:
        raise HandshakeError("handshake MAC check failed") from None
    except (ValueError, TypeError) as e:  # pyln-proto: bad public key encodings and versions
        raise HandshakeError(f"bad handshake message: {e}") from None
    except OSError as e:
        raise HandshakeError(f"connection lost during the handshake: {e}") from None
    # pyln-proto keeps the chaining key for rotation per direction
    conn.sck = conn.chaining_key
    conn.rck = conn.chaining_key
    return remote


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    local_secret: bytes,
    remote_pubkey: bytes | None,
    *,
    timeout: float,
    ephemeral: bytes | None = None,
) -> NoiseTransport:
    """Run BOLT 8 on an open stream: as initiator if ``remote_pubkey`` is given, else as responder."""
    try:
        conn = _new_connection(local_secret, remote_pubkey, ephemeral)
    except (ValueError, TypeError) as e:
        raise HandshakeError(f"bad key: {e}") from None
    try:
        remote = await asyncio.wait_for(_exchange(reader, writer, conn), timeout)
    except TimeoutError:
        raise HandshakeError(f"no handshake within {timeout:g} s") from None
    return NoiseTransport(reader, writer, conn, remote)


async def connect(
    host: str,
    port: int,
    remote_pubkey: bytes,
    local_secret: bytes,
    *,
    connect_timeout: float = 10.0,
    handshake_timeout: float = 10.0,
) -> NoiseTransport:
    """Open TCP to ``host`` (IPv4, IPv6 or a DNS name) and run the initiator's handshake."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, happy_eyeballs_delay=0.25), connect_timeout
        )
    except TimeoutError:
        raise ConnectFailed(
            f"cannot connect to {host}:{port}: no answer within {connect_timeout:g} s"
        ) from None
    except OSError as e:  # refused, unreachable, DNS failure (socket.gaierror)
        raise ConnectFailed(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
    set_nodelay(writer)
    try:
        return await handshake(reader, writer, local_secret, remote_pubkey, timeout=handshake_timeout)
    except BaseException:
        writer.close()
        raise
