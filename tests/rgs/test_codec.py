"""Encoder and decoder: arbitrary delta sets round-trip byte for byte; arbitrary bytes only ever
raise RgsDecodeError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnsync.rgs import format as f
from lnsync.rgs.decode import RgsDecodeError, decode
from lnsync.rgs.encode import default_node_features, encode
from lnsync.rgs.model import Announcement, Defaults, DeltaSet, NodeDetails, UpdateRecord
from tests.rgs.histories import MAINNET, node_keys

KEYS = node_keys(40, "codec")
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
features = st.binary(max_size=6)
address = st.one_of(
    st.binary(min_size=6, max_size=6).map(lambda b: b"\x01" + b),
    st.binary(min_size=18, max_size=18).map(lambda b: b"\x02" + b),
    st.binary(min_size=37, max_size=37).map(lambda b: b"\x04" + b),
    st.text("abcdefghij.", min_size=1, max_size=30).map(
        lambda s: b"\x05" + bytes([len(s)]) + s.encode() + b"\x26\x07"
    ),
)
details = st.one_of(
    st.none(),
    st.builds(
        NodeDetails,
        addresses=st.one_of(st.none(), st.lists(address, max_size=4)),
        features=st.one_of(st.none(), st.sampled_from([b"", b"\x88", b"\x08\xa0", b"\x02\x00\x00"])),
    ),
)


@st.composite
def delta_sets(draw: st.DrawFn) -> DeltaSet:
    n_nodes = draw(st.integers(0, 12))
    node_ids = draw(st.permutations(KEYS))[:n_nodes]
    anns = []
    if n_nodes >= 2:
        scids = sorted(draw(st.sets(st.integers(0, 2**63), max_size=10)))
        for scid in scids:
            a, b = draw(st.lists(st.integers(0, n_nodes - 1), min_size=2, max_size=2, unique=True))
            funding = draw(st.one_of(st.none(), st.integers(0, 2**40)))
            anns.append(Announcement(scid, draw(features), a, b, funding))
    keys = sorted(draw(st.sets(st.tuples(st.integers(0, 2**63), st.integers(0, 1)), max_size=20)))
    updates = []
    for scid, direction in keys:
        flags = draw(st.integers(0, 0xFF)) & ~f.UPDATE_DIRECTION | direction
        values = (draw(u16), draw(u64), draw(u32), draw(u32), draw(u64))
        updates.append(UpdateRecord(scid, flags, values))
    return DeltaSet(
        chain_hash=MAINNET,
        timestamp=draw(u32),
        node_ids=node_ids,
        node_details=[draw(details) for _ in node_ids],
        announcements=anns,
        defaults=Defaults(draw(u16), draw(u64), draw(u32), draw(u32), draw(u64)),
        updates=updates,
    )


@settings(max_examples=300, deadline=None)
@given(ds=delta_sets(), version=st.sampled_from([1, 2]))
def test_round_trip(ds: DeltaSet, version: int) -> None:
    data = encode(ds, version)
    blob = decode(data)
    assert blob.trailing_bytes == 0
    assert (blob.version, blob.chain_hash, blob.timestamp) == (version, ds.chain_hash, ds.timestamp)
    assert [n.node_id for n in blob.nodes] == ds.node_ids
    assert [(a.scid, a.features, a.node_1, a.node_2) for a in blob.announcements] == [
        (a.scid, a.features, a.node_1, a.node_2) for a in ds.announcements
    ]
    assert [u.scid for u in blob.updates] == [u.scid for u in ds.updates]
    assert [u.flags for u in blob.updates] == [u.flags for u in ds.updates]
    for got, want in zip(blob.updates, ds.updates, strict=True):
        for i, bit in enumerate(f.FIELD_BITS):
            assert got.values[i] == (want.values[i] if want.flags & bit else None)
    if ds.updates:
        assert blob.defaults == ds.defaults.as_tuple()
    if version == 2:
        assert [a.funding_sats for a in blob.announcements] == [a.funding_sats for a in ds.announcements]
        defaults = default_node_features(ds.node_details)
        assert blob.default_node_features == defaults
        for node, want_d in zip(blob.nodes, ds.node_details, strict=True):
            if want_d is None:
                assert (node.addresses, node.features, node.reminder) == (None, None, False)
            else:
                assert node.addresses == want_d.addresses
                assert node.features == want_d.features
                assert node.reminder == (want_d.addresses is None and want_d.features is None)
    # Encoding is a pure function of the delta set.
    assert encode(ds, version) == data


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=400), prefix=st.sampled_from([b"", b"LDK\x01", b"LDK\x02"]))
def test_decoder_only_raises_its_own_error(data: bytes, prefix: bytes) -> None:
    blob = prefix + (MAINNET + data if prefix else data)
    try:
        decode(blob)
    except RgsDecodeError as exc:
        kind = exc.kind
    else:
        kind = "ok"
    assert kind in {"ok", "unknown_version", "short_read", "invalid_value", "nonsense_count"}


@settings(max_examples=200, deadline=None)
@given(ds=delta_sets(), version=st.sampled_from([1, 2]), cut=st.integers(1, 50))
def test_truncated_blobs_are_short_reads(ds: DeltaSet, version: int, cut: int) -> None:
    data = encode(ds, version)
    if cut >= len(data) - 4:
        return
    with pytest.raises(RgsDecodeError) as err:
        decode(data[:-cut])
    assert err.value.kind in {"short_read", "invalid_value"}
