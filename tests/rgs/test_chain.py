"""The chain invariant, on random histories: a client that applies full(T0), then delta(T0->T1),
delta(T1->T2)... holds exactly the live graph after every sync, never loses a live channel between
syncs when it syncs at a steady cadence of up to 7 days, and recovers everything after any gap.

The client here is lnsync.rgs.client (a model of LDK's client, checked against the real LDK in
tests/interop); the history is lnsync.rgs.history (the store model).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lnsync.rgs.client import RgsClient
from lnsync.rgs.delta import compute_delta, node_addresses
from lnsync.rgs.encode import encode
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.model import DeltaParams
from tests.rgs.histories import DAY, MAINNET, START, random_history

DAYS = 30
END = START + DAYS * DAY
PARAMS = DeltaParams(apply_lag=3600)


def sync(client: RgsClient, history: GossipHistory, last: int, R: int, now: int, version: int) -> int:
    delta = compute_delta(history.delta_input(last, R), PARAMS)
    return client.apply(encode(delta, version), now)


def check_holds_live_graph(client: RgsClient, history: GossipHistory, R: int, version: int) -> None:
    live = history.live_graph(R)
    graph = client.graph()
    missing = live.keys() - graph.keys()
    assert not missing, f"client lost live channels {sorted(missing)[:5]} at {R}"
    for scid, chan in live.items():
        assert graph[scid] == chan, f"channel {scid} differs at {R}"
    # Channels the client holds beyond the live graph can only be channels that died recently:
    # RGS has no removal records, clients forget them within CLIENT_LIFETIME.
    assert all(scid in history.channels for scid in graph.keys() - live.keys())
    if version == 2:
        inp = history.delta_input(0, R)
        nodes = inp.nodes
        for i, node_id in enumerate(nodes.node_id):
            if nodes.has_announcement[i]:
                info = client.node_info.get(node_id)
                assert info is not None, f"node {node_id.hex()} has no details at {R}"
                assert info.features == nodes.features[i]
                assert info.addresses == node_addresses(nodes.addresses[i])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    cadence=st.sampled_from([3 * 3600, DAY, 2 * DAY, 3 * DAY, 4 * DAY, 5 * DAY, 7 * DAY]),
    lag=st.integers(0, 3600),
    version=st.sampled_from([1, 2]),
)
def test_steady_cadence_never_loses_a_live_channel(seed: int, cadence: int, lag: int, version: int) -> None:
    # The client forgets data 7 days after the header of the blob that wrote it: "cadence up to
    # 7 days" means the next sync happens within 7 days of the previous blob's header.
    lag = min(lag, 7 * DAY - cadence)
    history = random_history(seed, days=DAYS)
    client = RgsClient(MAINNET)
    R = START + DAY
    last = sync(client, history, 0, R, R + lag, version)
    check_holds_live_graph(client, history, R, version)
    while R + cadence <= END:
        nxt = R + cadence
        # LDK prunes in the background every hour: just before the next sync nothing that is still
        # live may have expired.
        client.prune(nxt + lag)
        still_live = history.live_graph(R).keys() & history.live_graph(nxt).keys()
        graph = client.graph()
        lost = still_live - graph.keys()
        assert not lost, f"cadence {cadence}: lost {sorted(lost)[:5]} between {R} and {nxt}"
        last = sync(client, history, last, nxt, nxt + lag, version)
        assert last == nxt
        R = nxt
        check_holds_live_graph(client, history, R, version)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    gaps=st.lists(st.integers(600, 20 * DAY), min_size=1, max_size=8),
    version=st.sampled_from([1, 2]),
)
def test_any_gap_recovers_the_live_graph_and_matches_a_fresh_full_sync(
    seed: int, gaps: list[int], version: int
) -> None:
    history = random_history(seed, days=DAYS)
    client = RgsClient(MAINNET)
    R = START + DAY // 2
    last = sync(client, history, 0, R, R, version)
    for gap in gaps:
        if R + gap > END:
            break
        R += gap
        client.prune(R)  # whatever the client forgot in the meantime
        last = sync(client, history, last, R, R, version)
        check_holds_live_graph(client, history, R, version)
    fresh = RgsClient(MAINNET)
    sync(fresh, history, 0, R, R, version)
    live = history.live_graph(R)
    assert fresh.graph() == live
    assert {k: v for k, v in client.graph().items() if k in live} == fresh.graph()
