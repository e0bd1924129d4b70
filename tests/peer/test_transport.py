"""BOLT 8 transport: the spec's test vectors (handshake acts, keys, key rotation), pyln-proto as the
other side, short reads, broken handshakes and frames, timeouts."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyln.proto.wire import PrivateKey
from pyln.proto.wire import connect as pyln_connect

from lnsync.peer import transport as t

# BOLT 8 appendix A: the initiator's and responder's keys.
INITIATOR_STATIC = bytes.fromhex("11" * 32)
INITIATOR_EPHEMERAL = bytes.fromhex("12" * 32)
RESPONDER_STATIC = bytes.fromhex("21" * 32)
RESPONDER_EPHEMERAL = bytes.fromhex("22" * 32)
RESPONDER_PUB = bytes.fromhex("028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7")
INITIATOR_PUB = bytes.fromhex("034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa")
ACT_ONE = bytes.fromhex(
    "00036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df6086551151f58b8afe6c195782c6a"
)
ACT_TWO = bytes.fromhex(
    "0002466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b93aac583c9ef6eafca3f730ae"
)
ACT_THREE = bytes.fromhex(
    "00b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55a8fc28fef5bd6d71ad0c3822"
    "8dc68b1c466263b47fdf31e560e139ba"
)
SK = bytes.fromhex("969ab31b4d288cedf6218839b27a3e2140827047f2c0f01bf5c04435d43511a9")
RK = bytes.fromhex("bb9020b8965f4df047e07f955f3c4b88418984aadc5cdb35096b9ea8fa5c3442")
# "hello" sent 1001 times: frames 0, 1, 500, 501 (after the first rotation), 1000, 1001 (second)
HELLO_FRAMES = {
    0: "cf2b30ddf0cf3f80e7c35a6e6730b59fe802473180f396d88a8fb0db8cbcf25d2f214cf9ea1d95",
    1: "72887022101f0b6753e0c7de21657d35a4cb2a1f5cde2650528bbc8f837d0f0d7ad833b1a256a1",
    500: "178cb9d7387190fa34db9c2d50027d21793c9bc2d40b1e14dcf30ebeeeb220f48364f7a4c68bf8",
    501: "1b186c57d44eb6de4c057c49940d79bb838a145cb528d6e8fd26dbe50a60ca2c104b56b60e45bd",
    1000: "4a2f3cc3b5e78ddb83dcb426d9863d9d9a723b0337c89dd0b005d89f8d3c05c52b76b29b740f09",
    1001: "2ecd8c8a5629d0d02ab457a0fdd0f7b90a192cd46be5ecb6ca570bfc5e268338b1a16cf4ef2d36",
}


async def stream_pair():
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    return (ra, wa), (rb, wb)


async def test_initiator_matches_bolt8_vectors_and_rotates_keys():
    (ra, wa), (rb, wb) = await stream_pair()
    # the responder is played by hand from the vectors: check act one, answer act two
    initiator = asyncio.create_task(
        t.handshake(ra, wa, INITIATOR_STATIC, RESPONDER_PUB, timeout=5, ephemeral=INITIATOR_EPHEMERAL)
    )
    assert await rb.readexactly(50) == ACT_ONE
    wb.write(ACT_TWO)
    assert await rb.readexactly(66) == ACT_THREE
    noise = await initiator
    assert (noise._conn.sk, noise._conn.rk) == (SK, RK)
    assert noise.remote_pubkey == RESPONDER_PUB
    for _ in range(1002):
        noise.write_message(b"hello")
    await noise.drain()
    frames = [await rb.readexactly(18 + 5 + 16) for _ in range(1002)]
    for i, expected in HELLO_FRAMES.items():
        assert frames[i].hex() == expected, i
    assert noise.bytes_written == 1002 * 39
    wa.close()
    wb.close()


async def test_responder_matches_bolt8_vectors_and_both_sides_talk():
    (ra, wa), (rb, wb) = await stream_pair()
    responder = asyncio.create_task(
        t.handshake(rb, wb, RESPONDER_STATIC, None, timeout=5, ephemeral=RESPONDER_EPHEMERAL)
    )
    initiator = asyncio.create_task(
        t.handshake(ra, wa, INITIATOR_STATIC, RESPONDER_PUB, timeout=5, ephemeral=INITIATOR_EPHEMERAL)
    )
    server, client = await responder, await initiator
    assert server.remote_pubkey == INITIATOR_PUB
    assert (server._conn.rk, server._conn.sk) == (SK, RK)
    # past two key rotations in each direction, with every size up to a full frame
    sizes = [0, 1, 2, 65535, *range(3, 1203)]
    for n in sizes:
        client.write_message(bytes([n % 251]) * n)
    send = asyncio.create_task(client.drain())
    for n in sizes:
        assert await server.read_message() == bytes([n % 251]) * n
    await send
    await server.send(b"\x00\x13\x00\x00")
    assert await client.read_message() == b"\x00\x13\x00\x00"
    for w in (wa, wb):
        w.close()


@pytest.mark.parametrize(
    ("act_two", "message"),
    [
        (ACT_TWO[:-1], "closed the connection during the handshake"),  # short read, then EOF
        (b"\x01" + ACT_TWO[1:], "unsupported handshake version 1"),
        (ACT_TWO[:1] + b"\x04" + ACT_TWO[2:], "bad handshake message"),  # bad key serialization
        (ACT_TWO[:-1] + b"\xaf", "MAC check failed"),  # pyln-proto alone would accept this
    ],
)
async def test_initiator_rejects_bad_act_two(act_two: bytes, message: str):
    (ra, wa), (rb, wb) = await stream_pair()
    initiator = asyncio.create_task(
        t.handshake(ra, wa, INITIATOR_STATIC, RESPONDER_PUB, timeout=5, ephemeral=INITIATOR_EPHEMERAL)
    )
    await rb.readexactly(50)
    wb.write(act_two)
    await wb.drain()
    if len(act_two) < 50:
        wb.close()
    with pytest.raises(t.HandshakeError, match=message):
        await initiator
    wa.close()
    wb.close()


async def test_responder_rejects_a_bad_act_one_mac():
    (_, wa), (rb, wb) = await stream_pair()
    responder = asyncio.create_task(t.handshake(rb, wb, RESPONDER_STATIC, None, timeout=5))
    wa.write(ACT_ONE[:-1] + b"\x6b")
    with pytest.raises(t.HandshakeError, match="MAC check failed"):
        await responder
    wa.close()
    wb.close()


async def test_handshake_times_out_on_silence_and_survives_split_acts():
    (ra, wa), (rb, wb) = await stream_pair()
    with pytest.raises(t.HandshakeError, match=r"no handshake within 0\.2 s"):
        await t.handshake(ra, wa, INITIATOR_STATIC, RESPONDER_PUB, timeout=0.2)
    wa.close()
    wb.close()
    # act two in two segments, then frames one byte at a time: pyln-proto's socket code fails on both
    (ra, wa), (rb, wb) = await stream_pair()
    initiator = asyncio.create_task(
        t.handshake(ra, wa, INITIATOR_STATIC, RESPONDER_PUB, timeout=5, ephemeral=INITIATOR_EPHEMERAL)
    )
    await rb.readexactly(50)
    for part in (ACT_TWO[:25], ACT_TWO[25:]):
        wb.write(part)
        await wb.drain()
        await asyncio.sleep(0.01)
    await rb.readexactly(66)
    noise = await initiator
    # the responder's first frame ("hello" under the initiator's receive key = vector's sk swapped)
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from pyln.proto.wire import LightningConnection

    aead = ChaCha20Poly1305(RK)
    frame = aead.encrypt(LightningConnection.nonce(0), struct.pack(">H", 5), b"") + aead.encrypt(
        LightningConnection.nonce(1), b"hello", b""
    )
    reading = asyncio.create_task(noise.read_message())
    for byte in frame:
        wb.write(bytes([byte]))
        await wb.drain()
    assert await reading == b"hello"
    assert noise.bytes_read == len(frame)
    wa.close()
    wb.close()


async def connected_pair():
    (ra, wa), (rb, wb) = await stream_pair()
    responder = asyncio.create_task(t.handshake(rb, wb, RESPONDER_STATIC, None, timeout=5))
    client = await t.handshake(ra, wa, INITIATOR_STATIC, RESPONDER_PUB, timeout=5)
    return client, await responder, ra, (wa, wb)


async def test_frames_cut_forged_or_too_long_are_transport_errors():
    client, server, reader, writers = await connected_pair()
    server.write_message(b"\x00\x13" + bytes(100))
    await server.drain()
    frame = await reader.readexactly(18 + 102 + 16)  # take the frame off the socket...
    reader.feed_data(frame[:28])  # ...and let the client see only its header and 10 body bytes
    reader.feed_eof()
    with pytest.raises(t.PeerClosed, match="inside a 102-byte message"):
        await client.read_message()
    for w in writers:
        w.close()

    client, server, _, writers = await connected_pair()
    server.write_raw(bytes(18 + 16))
    with pytest.raises(t.FrameError, match="authentication"):
        await client.read_message()
    for w in writers:
        w.close()

    client, server, _, writers = await connected_pair()
    await server.send(bytes(100))
    with pytest.raises(t.FrameError, match="100-byte message; at most 50"):
        await client.read_message(max_message_size=50)
    for w in writers:
        w.close()

    client, server, _, writers = await connected_pair()
    await server.close()
    with pytest.raises(t.PeerClosed, match="between frames"):
        await client.read_message()
    for w in writers:
        w.close()


async def test_interoperates_with_pyln_proto_over_tcp():
    """pyln-proto's own blocking initiator (in a thread) against our responder on a real socket."""
    secret = bytes.fromhex("21" * 32)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader, writer):
        noise = await t.handshake(reader, writer, secret, None, timeout=5)
        msg = await noise.read_message()
        await noise.send(msg[::-1])
        await got.put(noise.remote_pubkey)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def client() -> bytes:
        conn = pyln_connect(PrivateKey(INITIATOR_STATIC), RESPONDER_PUB, "127.0.0.1", port)
        conn.send_message(b"abc")
        reply = bytes(conn.read_message())
        conn.connection.close()
        return reply

    assert await asyncio.to_thread(client) == b"cba"
    assert await got.get() == INITIATOR_PUB
    server.close()
    await server.wait_closed()


async def test_connect_reports_refused_and_unresolvable_hosts():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(t.ConnectFailed, match=rf"cannot connect to 127\.0\.0\.1:{port}"):
        await t.connect("127.0.0.1", port, RESPONDER_PUB, INITIATOR_STATIC)
    with pytest.raises(t.ConnectFailed, match=r"cannot connect to no-such-host\.invalid"):
        await t.connect("no-such-host.invalid", 9735, RESPONDER_PUB, INITIATOR_STATIC)


async def _recorded_stream(messages: list[bytes]) -> tuple[t.NoiseTransport, asyncio.StreamReader, bytes]:
    """A connected client whose reader we feed by hand, and the server's frames of ``messages``."""
    client, server, _, writers = await connected_pair()
    for w in writers:
        w.close()
    frames: list[bytes] = []
    server._writer = type("Recorder", (), {"write": staticmethod(frames.append)})()
    for msg in messages:
        server.write_message(msg)
    reader = asyncio.StreamReader()
    client._reader = reader
    return client, reader, b"".join(frames)


async def _read_all(client: t.NoiseTransport, reader: asyncio.StreamReader, stream: bytes, cuts: list[int]):
    """Feed ``stream`` in reads of the given sizes (cycled), then EOF; every message read until
    the transport fails, and its failure."""

    async def feed() -> None:
        pos, i = 0, 0
        while pos < len(stream):
            reader.feed_data(stream[pos : pos + cuts[i % len(cuts)]])
            pos += cuts[i % len(cuts)]
            i += 1
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    got: list[bytes] = []
    try:
        while True:
            got += await client.read_messages()
    except t.TransportError as e:
        await feeder
        return got, e


# Past a key rotation (500 frames) within the examples, with sizes from empty to a few frames' worth.
_PREFIX = [bytes([n % 7]) * (n % 40) for n in range(480)]


@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=60),
    cuts=st.lists(st.integers(1, 2000), min_size=1, max_size=8),
    corrupt=st.one_of(st.none(), st.integers(0, 10**6)),
)
@settings(max_examples=60)
def test_any_split_of_the_stream_gives_the_same_messages(sizes, cuts, corrupt):
    """However the socket cuts the frames, read_messages yields them in order and whole; a frame
    that fails its MAC (header or body) ends the stream with FrameError right after the messages
    before it, and the end of the stream is PeerClosed."""
    messages = _PREFIX + [bytes([i % 251]) * n for i, n in enumerate(sizes)]

    async def run():
        client, reader, stream = await _recorded_stream(messages)
        if corrupt is None:
            got, error = await _read_all(client, reader, stream, cuts)
            assert got == messages
            assert isinstance(error, t.PeerClosed) and "between frames" in str(error)
            assert client.bytes_read == len(stream)
            return
        at = corrupt % len(stream)
        broken = stream[:at] + bytes([stream[at] ^ 1]) + stream[at + 1 :]
        got, error = await _read_all(client, reader, broken, cuts)
        # the frame holding byte `at`: every message before it arrives intact
        ends = list(itertools.accumulate(t.HEADER_SIZE + len(m) + t.MAC_SIZE for m in messages))
        index = bisect.bisect_right(ends, at)
        assert got == messages[:index]
        assert isinstance(error, t.FrameError) and "authentication" in str(error)

    asyncio.run(run())


async def test_read_message_and_read_messages_share_the_stream():
    messages = [b"\x00\x13" + bytes([n]) * n for n in range(30)]
    client, reader, stream = await _recorded_stream(messages)
    reader.feed_data(stream)
    assert await client.read_message() == messages[0]
    assert await client.read_messages() == messages[1:]
    reader.feed_data(stream[:5])  # not even a header: no message, and the stream ends there
    reader.feed_eof()
    with pytest.raises(t.PeerClosed, match="inside a frame header"):
        await client.read_messages()
