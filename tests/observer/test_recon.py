"""The reconciliation estimate (services/observer/recon.py): a small case worked out by hand, its
properties over hypothesis-generated deliveries, and the SQL edge equal to the pure reference on
real PostgreSQL."""

from __future__ import annotations

import random

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.observer import queries, recon
from services.observer.recon import US, SizedDelivery
from services.persistence.store import to_timestamp

T0 = 1_780_000_200  # a boundary of every interval below
MODEL = recon.SketchModel(short_id_bits=32, capacity_margin=0.25)


def hand_case() -> list[SizedDelivery]:
    """Peer 1 and peer 2 (seconds after T0):

    * m1 (channel_update, 138 B): peer 1 at 1, peer 2 at 3;
    * m2 (channel_update, 138 B): peer 1 at 2, peer 2 at 12;
    * m3 (node_announcement, 150 B): peer 2 at 5 only;
    * m4 (channel_update, 138 B): peer 2 at 14, peer 1 at 25 and again at 26.
    """
    s = [(1, 1, 258, 1, 138), (2, 1, 258, 3, 138), (1, 2, 258, 2, 138), (2, 2, 258, 12, 138),
         (2, 3, 257, 5, 150), (2, 4, 258, 14, 138), (1, 4, 258, 25, 138), (1, 4, 258, 26, 138)]  # fmt: skip
    return [SizedDelivery(p, msg, kind, (T0 + t) * US, size) for p, msg, kind, t, size in s]


def test_hand_checked_case() -> None:
    links, floods = recon.tally(hand_case(), [10, 60])
    # Peer 1 (connected 1..26 s), 10-s rounds: m1 common (both in round 0); m2 theirs only (peer 1
    # in round 0, the others in round 1), waits 8 s; m3 ours only, waits 5 s; m4 ours only (round 1
    # vs round 2), waits 6 s. Round 0 differs by 2 (m2, m3), round 1 by 1 (m4).
    one = links[1, 10]
    assert (one.ours_only, one.theirs_only, one.common) == (2, 1, 1)
    assert one.rounds == {2: 1, 1: 1}
    assert one.transfer_bytes == 138 and one.delay_sum_us == 19 * US and one.delay_max_us == 8 * US
    assert (floods[1].deliveries, floods[1].bytes) == (4, 4 * 138)  # the duplicate of m4 counts
    f = recon.link_figures(one, floods[1], MODEL)
    # capacity(2) = ceil(2.5) + 1 = 4 -> 16 B; capacity(1) = ceil(1.25) + 1 = 3 -> 12 B.
    assert f["sketch_bytes"] == 28
    assert f["id_bytes"] == 3 * 4
    assert f["header_bytes"] == 2 * 3 * 36
    assert f["transfer_bytes"] == 138 + 34
    assert f["recon_bytes"] == 28 + 12 + 216 + 172
    assert f["flood_bytes"] == 4 * (138 + 34)
    assert f["saving"] == pytest.approx(1 - 428 / 688)
    assert f["delay_mean"] == pytest.approx(19 / 3) and f["delay_max"] == 8
    # 60-s rounds: only m3 (ours only, 55 s before the round ends) differs; one active round.
    wide = links[1, 60]
    assert (wide.ours_only, wide.theirs_only, wide.common, wide.rounds) == (1, 0, 3, {1: 1})
    assert wide.delay_sum_us == 55 * US
    # Peer 2 is connected 3..14 s: m1 and m2 were first had (by peer 1) before it, so they do not
    # count; m3 and m4 are theirs only, in rounds 0 and 1.
    two = links[2, 10]
    assert (two.ours_only, two.theirs_only, two.common, two.rounds) == (0, 2, 0, {1: 2})
    assert two.transfer_bytes == 150 + 138 and two.delay_sum_us == 11 * US
    table = recon.figures(links, floods, [10, 60], MODEL)
    total = table["intervals"][0]
    assert total["interval"] == 10 and total["ours_only"] == 2 and total["theirs_only"] == 3
    assert total["flood_bytes"] == 688 + 564 + 4 * 34
    assert total["delay_max"] == 8 and total["delay_mean"] == pytest.approx(30 / 5)
    assert [row["peer"] for row in table["links"]] == [1, 2, 1, 2]


def test_capacity_and_sizes() -> None:
    assert [MODEL.capacity(d) for d in (0, 1, 4, 5)] == [1, 3, 6, 8]
    assert recon.SketchModel(short_id_bits=12, capacity_margin=0).sketch_bytes(3) == 6  # 4 x 12 bits
    assert recon.size_of(256, None) == 432 and recon.size_of(258, None) == 138
    assert recon.size_of(258, 200) == 200


times = st.integers(0, 300 * US)
deliveries = st.lists(
    st.tuples(st.integers(1, 4), st.integers(0, 30), times, st.sampled_from((138, 150, 432))),
    min_size=1,
    max_size=120,
)


def sized(rows: list[tuple[int, int, int, int]]) -> list[SizedDelivery]:
    return [SizedDelivery(p, msg, 258, T0 * US + t, size) for p, msg, t, size in rows]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), times), min_size=1, max_size=40), st.integers(1, 4))
def test_sketches_cost_less_than_flooding_when_differences_are_small(
    messages: list[tuple[int, int]], peers: int
) -> None:
    """Every peer delivers every message (within seconds of the others): differences come only from
    round boundaries, and a sketch never costs more than flooding did."""
    rng = random.Random(len(messages) * 7 + peers)
    rows = [
        SizedDelivery(p, msg, 258, T0 * US + t + rng.randrange(5 * US), 138)
        for msg, t in messages
        for p in range(1, peers + 2)
    ]
    links, floods = recon.tally(rows, [1, 10, 60])
    for (peer, _), link in links.items():
        f = recon.link_figures(link, floods[peer], MODEL)
        assert f["sketch_bytes"] <= f["flood_bytes"]
        assert link.ours_only + link.theirs_only <= floods[peer].deliveries


@settings(max_examples=150, deadline=None)
@given(deliveries)
def test_every_counted_message_is_classified_once(rows: list[tuple[int, int, int, int]]) -> None:
    """Per link: ours + theirs + common = the messages first had in the peer's span; every active
    round holds at least one of them; the sketch whenever (differences + rounds) <= deliveries."""
    data = sized(rows)
    links, floods = recon.tally(data, [1, 10, 60])
    for (peer, interval), link in links.items():
        mine = [d.received_us for d in data if d.peer == peer]
        first, last = min(mine), max(mine)
        had: dict[int, dict[int, int]] = {}
        for d in data:
            at = had.setdefault(d.msg, {})
            at[d.peer] = min(at.get(d.peer, d.received_us), d.received_us)
        in_span = sum(first <= min(at.values()) <= last for at in had.values())
        assert link.ours_only + link.theirs_only + link.common == in_span
        assert sum(link.rounds.values()) <= in_span
        assert sum(d * n for d, n in link.rounds.items()) == link.ours_only + link.theirs_only
        assert link.delay_max_us <= interval * US
        f = recon.link_figures(link, floods[peer], MODEL)
        if link.ours_only + link.theirs_only + sum(link.rounds.values()) <= floods[peer].deliveries:
            assert f["sketch_bytes"] <= f["flood_bytes"]


@settings(max_examples=150, deadline=None)
@given(deliveries)
def test_two_peers_see_one_difference_from_both_ends(rows: list[tuple[int, int, int, int]]) -> None:
    """With two peers connected over the same span, each is the other's 'us': what peer 1 alone had
    is exactly what peer 2 lacked, round by round."""
    data = [d for d in sized(rows) if d.peer <= 2]
    data += [SizedDelivery(p, 99, 258, T0 * US + t, 138) for p in (1, 2) for t in (0, 300 * US)]
    links, _ = recon.tally(data, [1, 10, 60])
    for interval in (1, 10, 60):
        a, b = links[1, interval], links[2, interval]
        assert (a.ours_only, a.theirs_only, a.common) == (b.theirs_only, b.ours_only, b.common)
        assert a.rounds == b.rounds and a.delay_sum_us == b.delay_sum_us


def random_sized(seed: int, messages: int = 200, peers: int = 5) -> list[SizedDelivery]:
    rng = random.Random(seed)
    out = []
    for msg in range(messages):
        kind = rng.choice((256, 257, 258, 258))
        first = (T0 + rng.randrange(3600)) * US + rng.randrange(US)
        for peer in rng.sample(range(1, peers + 1), rng.randint(1, peers)):
            at = first + rng.choice((0, rng.randrange(2 * US), rng.randrange(120 * US)))
            size = None if rng.random() < 0.1 else rng.randrange(138, 600)
            out.append(SizedDelivery(peer, msg * 7919 - 10**6, kind, at, size))
            if rng.random() < 0.1:
                out.append(SizedDelivery(peer, msg * 7919 - 10**6, kind, at + rng.randrange(30 * US), size))
    return out


async def test_sql_equals_the_reference(database_url: str) -> None:
    rows = random_sized(3)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            "observations",
            records=[(d.peer, d.msg, d.kind, to_timestamp(d.received_us), False, d.size) for d in rows],
            columns=("peer_num", "msg_hash", "kind", "received", "first", "size"),
        )
        lo, hi = T0, T0 + 1800
        async with conn.transaction():
            links, floods = await queries.reconciliation(conn, lo, hi, [1, 10, 60, 600])
        inside = [d for d in rows if lo * US <= d.received_us < hi * US]
        assert len(inside) < len(rows)  # the window cuts some deliveries off
        ref_links, ref_floods = recon.tally(inside, [1, 10, 60, 600])
        assert floods == ref_floods
        assert links == ref_links
        assert sum(link.theirs_only for link in links.values()) > 0
    finally:
        await conn.close()
