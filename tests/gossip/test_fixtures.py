"""Real gossip (data/SOURCE.md): every message parses, every checkable signature verifies, and
mutated copies are rejected with the right error type.

The archive readers live elsewhere (lnsync.gossip.archive); the two tiny readers below are private
to this test so that it checks the codec against the files and nothing else.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import coincurve
import pytest

from lnsync import bigsize
from lnsync.gossip import messages as m
from lnsync.gossip.dispatch import decode_message
from lnsync.gossip.errors import (
    GossipError,
    HtlcMaximumMissing,
    HtlcMaximumTooLarge,
    InvalidAddress,
    InvalidSignature,
    MalformedMessage,
    UnknownChannel,
    UnsortedNodeIds,
    WrongChain,
)
from lnsync.gossip.signing import sha256d
from lnsync.gossip.tlv import decode_tlv_stream
from lnsync.gossip.validate import MAX_VALUE_MSAT, GossipValidator, check_channel_update
from tests.gossip_helpers import MAINNET, TESTNET

DATA = Path(__file__).resolve().parents[2] / "data"
GSP_10 = DATA / "lnresearch" / "gossip_20250819_10.gsp"
GSP_17 = DATA / "lnresearch" / "gossip_20250819_17.gsp"
CLN_TOP50 = DATA / "cln2026_top50_resigned_mainnet.bin"
CLN_KEYMAP = DATA / "cln2026_top50_keymap.tsv"


def _gsp_records(path: Path) -> Iterator[bytes]:
    """GSP: b"GSP\\x01", then [BigSize length][message] records."""
    data = path.read_bytes()
    assert data[:4] == b"GSP\x01"
    pos = 4
    while pos < len(data):
        size, pos = bigsize.decode(data, pos)
        assert pos + size <= len(data)
        yield data[pos : pos + size]
        pos += size


def _u16_records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from(">H", data, pos)
        yield data[pos + 2 : pos + 2 + size]
        pos += 2 + size
    assert pos == len(data)


@cache
def records(path: Path) -> tuple[bytes, ...]:
    return tuple(_gsp_records(path) if path.suffix == ".gsp" else _u16_records(path))


def kinds(raws: tuple[bytes, ...]) -> Counter[str]:
    return Counter(type(decode_message(r)).__name__ for r in raws)


# -- everything parses and verifies ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (GSP_10, {"ChannelUpdate": 723, "NodeAnnouncement": 102}),
        (GSP_17, {"ChannelUpdate": 3434, "NodeAnnouncement": 497, "ChannelAnnouncement": 1}),
        (CLN_TOP50, {"ChannelUpdate": 1868, "ChannelAnnouncement": 934, "NodeAnnouncement": 50}),
    ],
)
def test_all_messages_parse(path, expected):
    raws = records(path)
    assert kinds(raws) == expected
    for raw in raws:
        msg = decode_message(raw)
        assert isinstance(msg, m.ChannelAnnouncement | m.ChannelUpdate | m.NodeAnnouncement)
        assert msg.raw == raw
        if not isinstance(msg, m.NodeAnnouncement):
            assert msg.chain_hash == MAINNET


def test_lnresearch_signatures_verify_where_they_can():
    """Announcements and node announcements all verify. An update can only be checked when its
    channel_announcement is in the files (3 of 4,157); for the others the signer is unknown, which
    the validator reports as UnknownChannel rather than guessing."""
    v = GossipValidator(MAINNET)
    outcome: Counter[str] = Counter()
    for path in (GSP_10, GSP_17):
        for result in v.validate_many(records(path)):
            outcome[result.reason if isinstance(result, GossipError) else type(result).__name__] += 1
    assert outcome == {
        "NodeAnnouncement": 599,
        "ChannelAnnouncement": 1,
        "ChannelUpdate": 3,
        "unknown_channel": 4154,
    }


def test_lnresearch_update_signers_recovered_among_announced_nodes():
    """For updates without their announcement, recover the signing key from the signature and our
    digest: when it is a node that announced itself in the same file, the digest (which covers the
    updates' extension TLVs) must be right, and our verification must agree."""
    checked = with_extension = 0
    for path in (GSP_10, GSP_17):
        msgs = [decode_message(r) for r in records(path)]
        nodes = {x.node_id for x in msgs if isinstance(x, m.NodeAnnouncement)}
        for u in msgs:
            if not isinstance(u, m.ChannelUpdate):
                continue
            digest = sha256d(u.signed_part)
            for recovery_id in (0, 1):
                try:
                    key = coincurve.PublicKey.from_signature_and_message(
                        u.signature + bytes((recovery_id,)), digest, hasher=None
                    ).format()
                except Exception:
                    continue
                if key in nodes:
                    check_channel_update(u, MAINNET, key)
                    checked += 1
                    with_extension += bool(u.excess)
                    break
    assert checked >= 700
    assert with_extension >= 100


def test_cln_top50_all_verify_and_match_the_keymap():
    v = GossipValidator(MAINNET)
    results = v.validate_many(records(CLN_TOP50))
    assert not [r for r in results if isinstance(r, GossipError)]
    assert len(v) == 934
    synthetic = {bytes.fromhex(line.split("\t")[1]) for line in CLN_KEYMAP.read_text().splitlines()}
    announced = {r.node_id for r in results if isinstance(r, m.NodeAnnouncement)}
    endpoints = {
        n for r in results if isinstance(r, m.ChannelAnnouncement) for n in (r.node_id_1, r.node_id_2)
    }
    assert announced == synthetic
    assert endpoints <= synthetic


def test_real_addresses_round_trip_and_extensions_are_tlvs():
    nodes = [
        msg
        for p in (GSP_10, GSP_17)
        for r in records(p)
        if isinstance(msg := decode_message(r), m.NodeAnnouncement)
    ]
    types: Counter[int] = Counter()
    for node in nodes:
        parsed = node.address_list
        assert parsed.encode() == node.addresses
        types.update(a.type for a in parsed.addresses)
    assert types[1] > 300
    assert types[4] > 300
    updates = [msg for r in records(GSP_17) if isinstance(msg := decode_message(r), m.ChannelUpdate)]
    extended = [u for u in updates if u.excess]
    assert len(extended) > 1000
    for u in extended:
        assert 55555 in decode_tlv_stream(u.excess, known=())  # LND's inbound fee record


# -- mutations ------------------------------------------------------------------------------------


def _sample(path: Path, kind: type, count: int, seed: int) -> list[bytes]:
    raws = [r for r in records(path) if isinstance(decode_message(r), kind)]
    return random.Random(seed).sample(raws, min(count, len(raws)))


@pytest.fixture(scope="module")
def cln_validator() -> GossipValidator:
    v = GossipValidator(MAINNET)
    for raw in records(CLN_TOP50):
        if raw[:2] == b"\x01\x00":
            v.remember_channel(
                *(lambda a: (a.short_channel_id, a.node_id_1, a.node_id_2))(decode_message(raw))
            )
    return v


def _known_end(raw: bytes) -> int:
    """Where a message's known fields end (after that only signed extension bytes follow)."""
    msg = decode_message(raw)
    assert isinstance(msg, m.ChannelAnnouncement | m.ChannelUpdate | m.NodeAnnouncement)
    return len(raw) - len(msg.excess)


def test_flipped_signature_bits_are_rejected(cln_validator):
    rng = random.Random(1)
    raws = _sample(CLN_TOP50, m.ChannelAnnouncement, 20, 2) + _sample(CLN_TOP50, m.ChannelUpdate, 40, 3)
    raws += _sample(GSP_17, m.NodeAnnouncement, 40, 4)
    for raw in raws:
        signatures = 4 if raw[1] == 0 else 1
        mutated = bytearray(raw)
        bit = rng.randrange(signatures * 64 * 8)
        mutated[2 + bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(InvalidSignature):
            cln_validator.validate(bytes(mutated))


def test_flipped_body_bits_are_rejected(cln_validator):
    rng = random.Random(5)
    for raw in _sample(CLN_TOP50, m.ChannelUpdate, 40, 6) + _sample(GSP_17, m.NodeAnnouncement, 40, 7):
        mutated = bytearray(raw)
        bit = rng.randrange(66 * 8, len(raw) * 8)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(GossipError) as e:  # usually the signature; sometimes a field breaks first
            cln_validator.validate(bytes(mutated))
        assert e.value.reason != "invalid"


def test_truncations_are_rejected(cln_validator):
    raws = _sample(CLN_TOP50, m.ChannelAnnouncement, 10, 8) + _sample(CLN_TOP50, m.ChannelUpdate, 10, 9)
    raws += _sample(GSP_17, m.NodeAnnouncement, 20, 10) + _sample(GSP_17, m.ChannelUpdate, 20, 11)
    for raw in raws:
        end = _known_end(raw)
        for cut in sorted({0, 1, 2, 65, 66, end - 1, *random.Random(len(raw)).sample(range(len(raw)), 8)}):
            expected = MalformedMessage if cut < end else (InvalidSignature, UnknownChannel)
            with pytest.raises(expected):
                cln_validator.validate(raw[:cut])


def test_wrong_chain_is_rejected(cln_validator):
    for raw in _sample(CLN_TOP50, m.ChannelAnnouncement, 5, 12) + _sample(CLN_TOP50, m.ChannelUpdate, 5, 13):
        at = raw.index(MAINNET)
        with pytest.raises(WrongChain):
            cln_validator.validate(raw[:at] + TESTNET + raw[at + 32 :])


def test_unsorted_node_ids_are_rejected():
    raw = _sample(GSP_17, m.ChannelAnnouncement, 1, 14)[0]
    ann = decode_message(raw)
    assert isinstance(ann, m.ChannelAnnouncement)
    swapped = raw.replace(ann.node_id_1 + ann.node_id_2, ann.node_id_2 + ann.node_id_1)
    with pytest.raises(UnsortedNodeIds):
        GossipValidator(MAINNET).validate(swapped)


def test_bad_address_descriptors_are_rejected():
    singles = [
        r
        for r in records(GSP_17)
        if isinstance(n := decode_message(r), m.NodeAnnouncement)
        and len(n.addresses) == 7
        and n.addresses[0] == 1
    ]
    assert len(singles) > 20
    for raw in singles:
        node = decode_message(raw)
        assert isinstance(node, m.NodeAnnouncement)
        at = raw.index(node.addresses, len(raw) - len(node.addresses) - len(node.excess) - 1)
        for descriptor_type in (b"\x02", b"\x04", b"\x05"):  # the 6 bytes left cannot hold these
            mutated = raw[:at] + descriptor_type + raw[at + 1 :]
            with pytest.raises(InvalidAddress):
                GossipValidator(MAINNET).validate(mutated)


def test_htlc_maximum_missing_or_too_large(cln_validator):
    for raw in _sample(CLN_TOP50, m.ChannelUpdate, 10, 15):
        flags_at = 2 + 64 + 32 + 8 + 4
        with pytest.raises(HtlcMaximumMissing):
            cln_validator.validate(raw[:flags_at] + bytes((raw[flags_at] & ~1,)) + raw[flags_at + 1 :])
        with pytest.raises(MalformedMessage):
            cln_validator.validate(raw[: m.CHANNEL_UPDATE_SIZE - 8])  # the pre-2022 short form
        with pytest.raises(HtlcMaximumTooLarge):
            cln_validator.validate(raw[:130] + struct.pack(">Q", MAX_VALUE_MSAT + 1))
