"""Upstream's RGS client vectors decode with our decoder, and our client model reproduces each
labelled outcome (the same vectors are run through the real LDK in tests/interop)."""

from __future__ import annotations

import pytest

from lnsync.chain import chain_hash
from lnsync.rgs.client import ClientError, ClientOptions, RgsClient
from lnsync.rgs.decode import RgsDecodeError, decode
from lnsync.rgs.encode import encode_empty
from tests.interop.rgs_vectors import load_vectors

V = load_vectors()
MAINNET = chain_hash("bitcoin")
VALID = V["vector 1"]
T_VALID = 1642291930


def client(**kw: bool) -> RgsClient:
    # The upstream vectors predate the sorted-node-id rule for v1 (their v1 node order is arbitrary).
    return RgsClient(MAINNET, ClientOptions(require_sorted_node_ids=False, **kw))


def test_all_vectors_present() -> None:
    assert len(V) == 17


def test_valid_binary_decodes_as_documented() -> None:
    blob = decode(VALID)
    assert (blob.version, blob.timestamp, blob.chain_hash) == (1, T_VALID, MAINNET)
    assert len(blob.nodes) == 4
    assert [a.scid for a in blob.announcements] == [619737530008010752, 783241506229452801]
    assert blob.defaults == (40, 1000, 1000, 1, 495_000_000)
    assert [u.flags for u in blob.updates] == [0x3C, 0x1D, 0x00, 0x01]
    first = blob.updates[0]
    assert blob.full_values(first) == (40, 1, 100, 736, 978_679_000)
    assert blob.trailing_bytes == 0


@pytest.mark.parametrize(
    ("now", "channels"),
    [(None, 2), (0, 2), (T_VALID + 7 * 86400, 2), (T_VALID + 7 * 86400 + 1, 0), (T_VALID + 14 * 86400, 0)],
)
def test_valid_binary_time_rules(now: int | None, channels: int) -> None:
    c = client()
    assert c.apply(VALID, now) == T_VALID
    assert len(c.channels) == channels


def test_two_weeks_old_is_rejected_and_chain_mismatch_too() -> None:
    with pytest.raises(ClientError, match="more than two weeks old"):
        client().apply(VALID, T_VALID + 14 * 86400 + 1)
    with pytest.raises(ClientError, match="chain hash does not match"):
        RgsClient(chain_hash("testnet")).apply(VALID, 0)


@pytest.mark.parametrize(("label", "kind"), [("vector 2", "short_read"), ("vector 14", "unknown_version")])
def test_decode_errors(label: str, kind: str) -> None:
    with pytest.raises(RgsDecodeError) as err:
        decode(V[label])
    assert err.value.kind == kind


def test_v2_node_details() -> None:
    blob = decode(V["vector 3"])
    assert blob.version == 2
    node = blob.nodes[0]
    assert node.node_id.hex().startswith("031b84") and node.addresses is not None
    assert len(node.addresses) == 5
    assert node.features == bytes.fromhex("1730")
    assert blob.nodes[1].addresses == []
    c = client()
    c.apply(V["vector 3"], None)
    assert len(c.channels) == 1
    assert len(c.node_info[node.node_id].addresses) == 5


def test_v2_node_without_channels_is_ignored() -> None:
    c = client()
    assert c.apply(V["vector 4"], None) == 1718204400
    assert not c.channels and not c.node_info


def test_v2_additional_data_is_skipped() -> None:
    blob = decode(V["vector 5"])
    assert all(n.extra is not None and len(n.extra) == 255 for n in blob.nodes)
    ann = blob.announcements[0]
    assert ann.funding_sats == 42 and ann.extra is not None and len(ann.extra) == 147
    assert blob.updates[1].extra is not None and len(blob.updates[1].extra) == 17
    assert blob.trailing_bytes == 23
    c = client()
    c.apply(V["vector 5"], None)
    assert c.channels[1].capacity_sats == 42


def test_incremental_updates_need_prior_data() -> None:
    c = client()
    c.apply(V["vector 6"], None)
    assert not c.channels
    c = client()
    c.apply(V["vector 7"], None)
    assert len(c.channels) == 2 and all(ch.directions == [None, None] for ch in c.channels.values())
    c = client()
    c.apply(V["vector 8"], None)
    c.apply(V["vector 9"], None)
    assert all(ch.directions[0] is None and ch.directions[1] is not None for ch in c.channels.values())


def test_incremental_update_changes_one_field() -> None:
    c = client()
    c.apply(V["vector 10"], None)
    before = c.channels[619737530008010752].directions[0]
    assert before is not None and before.fee_proportional_millionths == 736
    c.apply(V["vector 11"], None)
    after = c.channels[619737530008010752].directions[0]
    assert after is not None and after.fee_proportional_millionths == 221
    assert after.fee_base_msat == before.fee_base_msat
    c.apply(V["vector 13"], None)  # duplicate: accepted, nothing changes
    assert c.channels[619737530008010752].directions[0] == after


@pytest.mark.parametrize("version", [1, 2])
def test_our_empty_blob_matches_the_reference_servers(version: int) -> None:
    expected = V[f"constructed empty_delta v{version}"]
    assert encode_empty(MAINNET, 1763424000, version) == expected
    assert len(expected) == 52 + (version - 1)
