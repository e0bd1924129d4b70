"""node_announcements with equal timestamps and different content (issue 25): whatever the order
they arrive in, the model ends with the same node, the one lnsync.rgs.rules.node_tie_winner picks
(the greater raw message). tests/persistence/test_store_rules.py checks the SQL writer against it.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from lnsync.gossip import messages as m
from lnsync.rgs import rules
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.model import DeltaParams
from tests.rgs.histories import MAINNET, node_keys

T0 = 1_760_000_000
A, B = node_keys(2, "ties")
SCID = 850_000 << 40
ADDRESSES = [bytes([1, 10, 0, 0, i, 0x26, 0x07]) for i in range(1, 5)]


def node_announcement(timestamp: int, features: bytes, addresses: bytes) -> bytes:
    body = m.encode_node_announcement_body(A, timestamp, features=features, addresses=addresses)
    return m.with_type(m.NODE_ANNOUNCEMENT, b"\0" * 64, body)


def served(arrivals: list[bytes]) -> bytes:
    """The full v2 blob (node A's details included) after ``arrivals``, one a second."""
    h = GossipHistory(MAINNET)
    h.add_channel_announcement(SCID, A, B, T0)
    for d in (0, 1):
        h.add_channel_update(SCID, d, T0, T0)
    for i, raw in enumerate(arrivals):
        h.add_message(raw, T0 + 10 + i)
    R = T0 + 1000
    return encode(compute_delta(h.delta_input(0, R), DeltaParams()), 2)


@given(
    anns=st.lists(
        st.tuples(
            st.integers(0, 2), st.sampled_from([b"", b"\x88", b"\x02\x88"]), st.sampled_from(ADDRESSES)
        ),
        min_size=1,
        max_size=6,
    ),
    order=st.randoms(use_true_random=False),
)
def test_any_arrival_order_serves_the_same_node(
    anns: list[tuple[int, bytes, bytes]], order: random.Random
) -> None:
    raws = [node_announcement(T0 + 100 * ts, features, addresses) for ts, features, addresses in anns]
    shuffled = list(raws)
    order.shuffle(shuffled)
    latest = max(m.decode_node_announcement(r).timestamp for r in raws)
    winner = max(r for r in raws if m.decode_node_announcement(r).timestamp == latest)
    assert served(raws) == served(shuffled) == served([winner])


def test_the_greater_raw_message_wins_a_tie() -> None:
    low, high = sorted(node_announcement(T0, b"", a) for a in ADDRESSES[:2])
    assert rules.node_tie_winner(low, high) and not rules.node_tie_winner(high, low)
    assert not rules.node_tie_winner(high, high)  # the same message again is a duplicate
    h = GossipHistory(MAINNET)
    assert h.add_message(high, T0) == "stored"
    assert h.add_message(low, T0 + 1) == "duplicate"  # loses: nothing changes
    h = GossipHistory(MAINNET)
    assert h.add_message(low, T0) == "stored"
    assert h.add_message(high, T0 + 1) == "stored"  # wins: replaces the content
