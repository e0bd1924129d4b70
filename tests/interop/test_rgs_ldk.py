"""Our blobs through the REAL LDK client (npm lightningdevkit, LDK's WASM build).

* Full snapshots of the real-topology fixture (934 channels), v1 and v2: accepted, and LDK's graph
  equals the ground truth channel by channel (both directions' fees, cltv, htlc min/max, enabled;
  v2 node features and addresses).
* Chains of deltas on random histories: after every sync LDK's graph equals the live graph and
  equals our client model (lnsync.rgs.client) field for field, so the fast model-based property
  tests in tests/rgs/test_chain.py speak for LDK too.
"""

from __future__ import annotations

import struct

import pytest

from lnsync.chain import chain_hash
from lnsync.gossip.messages import decode_gossip
from lnsync.rgs.client import ClientOptions, RgsClient
from lnsync.rgs.delta import compute_delta, node_addresses
from lnsync.rgs.encode import encode, encode_empty
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.model import DeltaParams
from tests.conftest import ROOT
from tests.ldk import GraphDump, LdkRgsClient
from tests.rgs.histories import DAY, START, random_history

pytestmark = pytest.mark.interop

MAINNET = chain_hash("bitcoin")
FIXTURE = ROOT / "data" / "cln2026_top50_resigned_mainnet.bin"
# LDK 0.1.x (the npm build) ignores the v2 capacity and does not require sorted node ids.
LDK01 = ClientOptions(parse_funding=False, require_sorted_node_ids=False)


def fixture_history() -> tuple[GossipHistory, int]:
    data = FIXTURE.read_bytes()
    history = GossipHistory(MAINNET)
    latest = 0
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from(">H", data, pos)
        raw = data[pos + 2 : pos + 2 + n]
        pos += 2 + n
        msg = decode_gossip(raw)
        ts = getattr(msg, "timestamp", 0)
        latest = max(latest, ts)
        history.add_message(raw, seen=ts or 1)
    return history, latest


def ldk_view(dump: GraphDump) -> dict[int, dict[str, object]]:
    """LDK's channels with both directions, in the shape of GossipHistory.live_graph()."""
    out: dict[int, dict[str, object]] = {}
    for scid, ch in dump.channels.items():
        if ch.one_to_two is None or ch.two_to_one is None:
            continue
        out[scid] = {
            "node_1": ch.node_one,
            "node_2": ch.node_two,
            "directions": [
                (
                    not d.enabled,
                    d.cltv_expiry_delta,
                    d.htlc_minimum_msat,
                    d.fee_base_msat,
                    d.fee_proportional_millionths,
                    d.htlc_maximum_msat,
                )
                for d in (ch.one_to_two, ch.two_to_one)
            ],
        }
    return out


def assert_same_as_model(dump: GraphDump, model: RgsClient) -> None:
    assert set(dump.channels) == set(model.channels)
    for scid, ch in dump.channels.items():
        mine = model.channels[scid]
        assert (ch.node_one, ch.node_two) == (mine.node_1, mine.node_2)
        for got, want in ((ch.one_to_two, mine.directions[0]), (ch.two_to_one, mine.directions[1])):
            assert (got is None) == (want is None), scid
            if got is not None and want is not None:
                assert got.last_update == want.last_update
                assert (not got.enabled, got.cltv_expiry_delta, got.htlc_minimum_msat) == (
                    want.disabled,
                    want.cltv_expiry_delta,
                    want.htlc_minimum_msat,
                )
                assert (got.fee_base_msat, got.fee_proportional_millionths, got.htlc_maximum_msat) == (
                    want.fee_base_msat,
                    want.fee_proportional_millionths,
                    want.htlc_maximum_msat,
                )
    with_info = {n: node.announcement for n, node in dump.nodes.items() if node.announcement is not None}
    assert set(with_info) == set(model.node_info)
    for node_id, ann in with_info.items():
        info = model.node_info[node_id]
        assert ann.features == info.features
        assert [a.raw for a in ann.addresses] == info.addresses
        assert ann.last_update == info.last_update


@pytest.mark.parametrize("version", [1, 2])
def test_full_snapshot_of_the_real_topology(ldk_client: LdkRgsClient, version: int) -> None:
    history, latest = fixture_history()
    R = latest + 3600
    delta = compute_delta(history.delta_input(0, R))
    blob = encode(delta, version)
    with ldk_client.new_graph("bitcoin") as graph:
        result = graph.apply(blob, now=R)
        assert result.accepted, result.error_message
        assert result.timestamp == R
        dump = graph.dump()
    truth = history.live_graph(R)
    assert len(truth) >= 930  # a direction whose update is older than 14 days at R is dead
    assert ldk_view(dump) == truth
    if version == 2:
        inp = history.delta_input(0, R)
        announced = {
            node_id: i for i, node_id in enumerate(inp.nodes.node_id) if inp.nodes.has_announcement[i]
        }
        assert len(announced) == 50
        for node_id, i in announced.items():
            ann = dump.nodes[node_id].announcement
            assert ann is not None
            assert ann.features == inp.nodes.features[i]
            assert [a.raw for a in ann.addresses] == node_addresses(inp.nodes.addresses[i])


@pytest.mark.parametrize(
    ("seed", "cadence", "version"), [(1, DAY, 1), (2, DAY, 2), (3, 6 * 3600, 2), (4, 3 * DAY, 2)]
)
def test_delta_chains_match_the_live_graph_and_our_client_model(
    ldk_client: LdkRgsClient, seed: int, cadence: int, version: int
) -> None:
    history = random_history(seed, days=20)
    params = DeltaParams(apply_lag=3600)
    model = RgsClient(MAINNET, LDK01)
    R = START + DAY
    last = 0
    with ldk_client.new_graph("bitcoin") as graph:
        while R <= START + 20 * DAY:
            blob = encode(compute_delta(history.delta_input(last, R), params), version)
            now = R + 600
            result = graph.apply(blob, now=now)
            assert result.accepted, result.error_message
            last = model.apply(blob, now)
            assert result.timestamp == last == R
            dump = graph.dump()
            assert_same_as_model(dump, model)
            live = history.live_graph(R)
            view = ldk_view(dump)
            assert {k: v for k, v in view.items() if k in live} == live
            R += cadence


@pytest.mark.parametrize("version", [1, 2])
def test_nothing_new_blobs_are_accepted(ldk_client: LdkRgsClient, version: int) -> None:
    R = START + 10 * DAY
    with ldk_client.new_graph("bitcoin") as graph:
        result = graph.apply(encode_empty(MAINNET, R, version), now=R)
        assert result.accepted and result.timestamp == R
