"""Gossip archive readers and writers: real files from lnresearch and Core Lightning, round trips of
every format, and mutated or arbitrary bytes that must only ever raise the typed archive errors."""

from __future__ import annotations

import io
import struct
from collections import Counter
from pathlib import Path

import google_crc32c
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lnsync import bigsize
from lnsync.gossip import messages as m
from lnsync.gossip import signing
from lnsync.gossip.archive import (
    STORE_COMPLETED,
    STORE_DELETED,
    STORE_ENDED,
    ArchiveError,
    ArchiveFormat,
    CorruptRecord,
    GossipStoreWriter,
    IncompleteRecord,
    TruncatedArchive,
    U16Writer,
    UnknownArchiveFormat,
    UnsupportedVersion,
    detect_format,
    encode_gsp,
    read_archive,
    read_archive_bytes,
)

DATA = Path(__file__).resolve().parents[2] / "data"
GSP_10 = DATA / "lnresearch" / "gossip_20250819_10.gsp"
GSP_17 = DATA / "lnresearch" / "gossip_20250819_17.gsp"
STORE_PART1 = DATA / "cln-gossip-store" / "gossip_store-part1"
STORE_MESH = DATA / "cln-gossip-store" / "gossip_store.mesh-3x3"
TOP50 = DATA / "cln2026_top50_resigned_mainnet.bin"

REGTEST = bytes.fromhex("06226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f")


def _types(records) -> Counter[int]:
    return Counter(r.msg_type for r in records)


def _read_path(path: Path, **options: bool):
    with path.open("rb") as f:
        return list(read_archive(f, **options))


# -- real files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt", "counts"),
    [
        (GSP_10, ArchiveFormat.GSP, {258: 723, 257: 102}),
        (GSP_17, ArchiveFormat.GSP, {258: 3434, 257: 497, 256: 1}),
        (STORE_PART1, ArchiveFormat.GOSSIP_STORE, {256: 45, 258: 2}),
        (STORE_MESH, ArchiveFormat.GOSSIP_STORE, {256: 12, 258: 24, 257: 9}),
        (TOP50, ArchiveFormat.U16, {256: 934, 258: 1868, 257: 50}),
    ],
)
def test_real_archives_are_detected_and_read_completely(path: Path, fmt: ArchiveFormat, counts) -> None:
    data = path.read_bytes()
    assert detect_format(data[:70000]) is fmt
    records = _read_path(path)
    assert _types(records) == counts
    # Offsets point at the records and every record decodes as the message its type says.
    for record in records:
        m.decode_gossip(record.raw)
    if fmt is ArchiveFormat.U16:
        assert all(data[r.offset + 2 : r.offset + 2 + len(r.raw)] == r.raw for r in records)


def test_gsp_node_announcement_signatures_verify() -> None:
    """Real mainnet bytes come out intact: every node_announcement's own signature checks."""
    anns = [m.decode_node_announcement(r.raw) for r in _read_path(GSP_17) if r.msg_type == 257]
    assert len(anns) == 497
    assert all(signing.verify(a.node_id, a.signature, signing.sha256d(a.signed_part)) for a in anns)
    assert all(r.timestamp is None for r in _read_path(GSP_10))


def test_gossip_store_mesh_signatures_amounts_and_timestamps() -> None:
    """Core Lightning's 3x3 regtest mesh: 12 channels with their amounts, every signature valid."""
    records = _read_path(STORE_MESH)
    anns = {}
    for r in records:
        if r.msg_type == 256:
            ca = m.decode_channel_announcement(r.raw)
            assert ca.chain_hash == REGTEST
            assert r.funding_sats == 1_000_000
            digest = signing.sha256d(ca.signed_part)
            keys = (ca.node_id_1, ca.node_id_2, ca.bitcoin_key_1, ca.bitcoin_key_2)
            sigs = (ca.node_signature_1, ca.node_signature_2, ca.bitcoin_signature_1, ca.bitcoin_signature_2)
            assert all(signing.verify(k, s, digest) for k, s in zip(keys, sigs, strict=True))
            anns[ca.short_channel_id] = ca
    assert len(anns) == 12
    for r in records:
        assert r.flags & STORE_COMPLETED
        if r.msg_type == 258:
            cu = m.decode_channel_update(r.raw)
            ca = anns[cu.short_channel_id]  # every update follows its channel's announcement
            origin = ca.node_id_2 if cu.direction else ca.node_id_1
            assert signing.verify(origin, cu.signature, signing.sha256d(cu.signed_part))
            assert r.timestamp == cu.timestamp
        elif r.msg_type == 257:
            na = m.decode_node_announcement(r.raw)
            assert signing.verify(na.node_id, na.signature, signing.sha256d(na.signed_part))
            assert r.timestamp == na.timestamp


def test_gossip_store_deleted_records_only_on_request() -> None:
    live = _read_path(STORE_PART1)
    everything = _read_path(STORE_PART1, include_deleted=True)
    deleted = [r for r in everything if r.flags & STORE_DELETED]
    assert len(deleted) == 2
    assert {r.offset for r in live} == {r.offset for r in everything} - {r.offset for r in deleted}
    assert all(r.funding_sats for r in everything if r.msg_type == 256)


# -- round trips -----------------------------------------------------------------------------------

_messages = st.builds(
    lambda t, body: struct.pack(">H", t) + body,
    st.sampled_from([256, 257, 258, 1, 17, 4101, 65535]),
    st.binary(max_size=600),
)
_gossip_messages = st.builds(
    lambda t, body: struct.pack(">H", t) + body, st.sampled_from([256, 257, 258]), st.binary(max_size=600)
)


def expected_funding(entries: list[tuple[bytes, int, bool, int | None]]) -> list[int | None]:
    """The funding of each gossip record as a gossip_store reader must see it: the amount the
    writer added after an announcement, or else a well-formed amount record (type 4101, 8 bytes)
    written right after it — drawn here among the "other" records, and in a real store exactly
    how Core Lightning records an amount."""
    out: list[int | None] = []
    waiting: int | None = None  # the announcement (index in out) that the next record may fund
    for raw, _, _, amount in entries:
        kind = raw[:2]
        if kind == b"\x10\x05" and len(raw) == 10 and waiting is not None:
            out[waiting] = int.from_bytes(raw[2:], "big")
            waiting = None
            continue
        waiting = None
        if kind == b"\x01\x00":
            out.append(amount)
            waiting = len(out) - 1 if amount is None else None
        elif kind in (b"\x01\x01", b"\x01\x02"):
            out.append(None)
    return out


@given(
    st.lists(
        st.tuples(
            _messages,
            st.integers(0, 2**32 - 1),
            st.booleans(),
            st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        ),
        max_size=30,
    ),
    st.sampled_from([15, 16]),
)
@example(  # an "other" record that is a well-formed amount: it funds the announcement before it
    [(b"\x01\x00", 0, False, None), (b"\x10\x05" + bytes(8), 0, False, None)], 15
)
def test_gossip_store_round_trip(entries, version: int) -> None:
    out = io.BytesIO()
    writer = GossipStoreWriter(out, uuid=b"\x42" * 32, version=version)
    for raw, ts, deleted, amount in entries:
        is_ann = raw[:2] == b"\x01\x00"
        writer.add(raw, ts, flags=STORE_DELETED if deleted else 0, funding_sats=amount if is_ann else None)
    data = out.getvalue()
    gossip = [e for e in entries if e[0][:2] in (b"\x01\x00", b"\x01\x01", b"\x01\x02")]
    everything = read_archive_bytes(data, ArchiveFormat.GOSSIP_STORE, include_deleted=True)
    assert [(r.raw, r.timestamp) for r in everything] == [(e[0], e[1]) for e in gossip]
    assert [r.funding_sats for r in everything] == expected_funding(entries)
    live = read_archive_bytes(data, ArchiveFormat.GOSSIP_STORE)
    assert [r.raw for r in live] == [e[0] for e in gossip if not e[2]]
    assert detect_format(data) is ArchiveFormat.GOSSIP_STORE


@given(st.lists(_messages, max_size=40))
def test_u16_and_gsp_round_trip(msgs: list[bytes]) -> None:
    out = io.BytesIO()
    writer = U16Writer(out)
    for raw in msgs:
        writer.add(raw)
    assert [r.raw for r in read_archive_bytes(out.getvalue(), ArchiveFormat.U16)] == msgs
    gsp = encode_gsp(msgs)
    assert detect_format(gsp) is ArchiveFormat.GSP
    records = read_archive_bytes(gsp)
    assert [r.raw for r in records] == msgs
    assert all(r.timestamp is None and r.flags == 0 for r in records)


@given(st.lists(_gossip_messages, min_size=1, max_size=10))
def test_u16_detected_from_a_gossip_first_record(msgs: list[bytes]) -> None:
    data = b"".join(struct.pack(">H", len(x)) + x for x in msgs)
    assert detect_format(data) is ArchiveFormat.U16
    assert [r.raw for r in read_archive_bytes(data)] == msgs


def test_u16_file_whose_length_looks_like_a_store_version() -> None:
    """A first record of 0x0a00 bytes starts with byte 10, a valid store version: the crc decides."""
    big = b"\x01\x01" + bytes(0x0A00 - 2)
    data = struct.pack(">H", len(big)) + big + b"\x00\x04\x01\x02\xaa\xbb"
    assert detect_format(data) is ArchiveFormat.U16
    assert [len(r.raw) for r in read_archive_bytes(data)] == [0x0A00, 4]


def test_empty_archive_has_no_records() -> None:
    assert read_archive_bytes(b"") == []
    assert read_archive_bytes(b"\x10") == []  # a fresh gossip_store: only its version byte
    assert read_archive_bytes(b"GSP\x01") == []


def test_reading_stops_at_the_ended_record() -> None:
    out = io.BytesIO()
    w = GossipStoreWriter(out)
    w.add(b"\x01\x02" + b"a" * 10, 5)
    w.add(struct.pack(">H", STORE_ENDED) + bytes(40), 6)
    w.add(b"\x01\x02" + b"b" * 10, 7)
    assert [r.timestamp for r in read_archive_bytes(out.getvalue())] == [5]


def test_reader_streams_with_bounded_read_ahead() -> None:
    """The reader holds about a chunk at a time: 40 MB of records are never read in one go."""
    record = struct.pack(">H", 138) + b"\x01\x02" + bytes(136)

    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.served = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # type: ignore[override]
            n = min(len(b), 40_000_000 - self.served)
            pattern = (record * (n // len(record) + 2))[self.served % len(record) :][:n]
            b[:n] = pattern
            self.served += n
            return n

    source = Endless()
    reader = read_archive(io.BufferedReader(source, buffer_size=1 << 16), ArchiveFormat.U16)
    for count, r in enumerate(reader, 1):
        assert len(r.raw) == 138
        if count == 100_000:
            break
    assert source.served < 20_000_000


# -- malformed input -------------------------------------------------------------------------------


def _store(*records: tuple[bytes, int, int], version: int = 16) -> bytes:
    out = io.BytesIO()
    w = GossipStoreWriter(out, version=version)
    for raw, ts, flags in records:
        w.add(raw, ts, flags=flags)
    return out.getvalue()


def test_checksum_mismatch_names_the_record_and_keeps_the_ones_before() -> None:
    good = b"\x01\x02" + b"x" * 20
    data = bytearray(_store((good, 1, 0), (good, 2, 0), (good, 3, 0)))
    first = 1 + 12 + 34  # version byte and the uuid record
    second = first + 12 + len(good)
    data[second + 12 + 5] ^= 0x01
    got = []
    with pytest.raises(CorruptRecord) as err:
        got.extend(read_archive(io.BytesIO(bytes(data))))
    assert err.value.offset == second
    assert [r.timestamp for r in got] == [1]
    assert len(read_archive_bytes(bytes(data), verify_crc=False)) == 3


def test_incomplete_record_is_its_own_error() -> None:
    data = bytearray(_store((b"\x01\x02abc", 1, 0), (b"\x01\x02def", 2, 0)))
    last = len(data) - 12 - 5
    data[last] &= ~(STORE_COMPLETED >> 8) & 0xFF
    got = []
    with pytest.raises(IncompleteRecord) as err:
        got.extend(read_archive(io.BytesIO(bytes(data))))
    assert err.value.offset == last
    assert [r.raw for r in got] == [b"\x01\x02abc"]


def test_channel_announcement_held_for_its_amount_is_yielded_before_an_error() -> None:
    ann = b"\x01\x00" + bytes(430)
    data = _store((ann, 1, 0)) + b"\x20\x00\x00"  # then a torn header
    got = []
    with pytest.raises(TruncatedArchive):
        got.extend(read_archive(io.BytesIO(data)))
    assert [r.raw for r in got] == [ann]


@pytest.mark.parametrize("version_byte", [0x08, 0x11, 0x1F])
def test_unsupported_store_versions(version_byte: int) -> None:
    data = bytes([version_byte]) + struct.pack(">HHII", STORE_COMPLETED, 4, 0, 0) + b"\x01\x02ab"
    with pytest.raises(UnsupportedVersion):
        read_archive_bytes(data)
    with pytest.raises(UnsupportedVersion):
        read_archive_bytes(data, ArchiveFormat.GOSSIP_STORE)


def test_unknown_format_and_bad_gsp_lengths() -> None:
    with pytest.raises(UnknownArchiveFormat):
        read_archive_bytes(b"\xffhello world")
    with pytest.raises(CorruptRecord):  # non-canonical BigSize
        read_archive_bytes(b"GSP\x01\xfd\x00\x05" + b"\x01\x02abc")
    with pytest.raises(CorruptRecord):  # longer than any Lightning message
        read_archive_bytes(b"GSP\x01" + bigsize.encode(70000) + bytes(70000))
    with pytest.raises(TruncatedArchive) as err:
        read_archive_bytes(b"GSP\x01\x04\x01\x02ab\xfe\x00")
    assert err.value.offset == 9
    with pytest.raises(CorruptRecord):  # a record too short for a message type
        read_archive_bytes(b"\x00\x01\x01", ArchiveFormat.U16)


@pytest.mark.parametrize("path", [GSP_10, STORE_MESH, TOP50], ids=["gsp", "gossip_store", "u16"])
def test_every_truncation_of_a_real_file_keeps_the_records_before_it(path: Path) -> None:
    data = path.read_bytes()
    fmt = detect_format(data)
    records = read_archive_bytes(data)

    def end(r) -> int:
        prefix = {ArchiveFormat.U16: 2, ArchiveFormat.GOSSIP_STORE: 12}.get(fmt, bigsize.size(len(r.raw)))
        return r.offset + prefix + len(r.raw)

    for cut in range(5, len(data), max(1, len(data) // 300)):
        got = []
        error: TruncatedArchive | None = None
        try:
            got.extend(read_archive(io.BytesIO(data[:cut]), fmt))
        except TruncatedArchive as exc:
            error = exc
        assert [r.raw for r in got] == [r.raw for r in records if end(r) <= cut]
        if error is not None:
            assert all(end(r) <= error.offset < cut for r in got)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_archive_errors(data: bytes) -> None:
    for fmt in (None, *ArchiveFormat):
        try:
            for record in read_archive(io.BytesIO(data), fmt):
                assert len(record.raw) >= 2
        except ArchiveError:
            pass


@settings(max_examples=200)
@given(st.sampled_from([GSP_10, STORE_MESH, TOP50]), st.integers(0, 10**9), st.integers(1, 255))
def test_flipped_bytes_in_real_files_raise_only_archive_errors(path: Path, where: int, mask: int) -> None:
    data = bytearray(path.read_bytes()[:20000])
    data[where % len(data)] ^= mask
    try:
        for record in read_archive(io.BytesIO(bytes(data))):
            assert len(record.raw) >= 2
    except ArchiveError:
        pass


def test_store_crc_is_core_lightnings_chained_crc32c() -> None:
    """The crc chains from the timestamp (ccan crc32c(start, ...)): checked on a real record."""
    data = STORE_MESH.read_bytes()
    _flags, length, crc, ts = struct.unpack_from(">HHII", data, 1)
    assert crc == google_crc32c.extend(ts, data[13 : 13 + length])
    assert crc != google_crc32c.value(data[13 : 13 + length])
