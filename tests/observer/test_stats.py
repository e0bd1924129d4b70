"""The observer's pure statistics against a naive reference written straight from the definitions
(services/observer/stats.py docstring), with hypothesis-generated arrival patterns."""

from __future__ import annotations

import math
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from services.observer import stats
from services.observer.stats import US, Delivery

INTERVAL = 60
MAX_DELAY_US = 20 * US
LO, HI = 0, 4 * INTERVAL * US

offsets = st.one_of(st.integers(0, 30 * US), st.sampled_from(stats.DELAY_EDGES_US[:16]))
deliveries = st.lists(
    st.builds(
        lambda peer, msg, start, offset: Delivery(peer, msg, 256 + msg % 3, start + offset),
        st.integers(1, 5),
        st.integers(0, 12),
        st.integers(0, 5 * INTERVAL * US),
        offsets,
    ),
    max_size=80,
)


def naive(rows: list[Delivery]) -> dict[str, object]:
    """Per message: peers' earliest arrivals within MAX_DELAY_US of the first, sorted."""
    by_msg: dict[int, list[Delivery]] = defaultdict(list)
    for d in rows:
        by_msg[d.msg].append(d)
    redundancy: dict[int, int] = defaultdict(int)
    t50s, t95s, delays = [], [], []
    coverage: dict[int, int] = defaultdict(int)
    messages = 0
    for ds in by_msg.values():
        first = min(d.received_us for d in ds)
        if not LO <= first < HI:
            continue
        messages += 1
        earliest: dict[int, int] = {}
        for d in ds:
            if d.received_us - first <= MAX_DELAY_US:
                earliest[d.peer] = min(earliest.get(d.peer, d.received_us), d.received_us)
        arrivals = sorted(t - first for t in earliest.values())
        r = len(arrivals)
        redundancy[r] += 1
        for peer in earliest:
            coverage[peer] += 1
        delays += arrivals[1:]
        if r >= 2:
            t50s.append(arrivals[math.ceil(0.5 * r) - 1])
            t95s.append(arrivals[math.ceil(0.95 * r) - 1])
    return {
        "messages": messages,
        "deliveries": sum(LO <= d.received_us < HI for d in rows),
        "redundancy": dict(redundancy),
        "t50s": sorted(t50s),
        "t95s": sorted(t95s),
        "delays": sorted(delays),
        "coverage": dict(coverage),
    }


def nearest_rank(values: list[int], q: float) -> int:
    return values[max(1, math.ceil(q * len(values))) - 1]


def within_bin(exact: int, reported: float | None) -> bool:
    """The histogram quantile is the upper edge of the bin holding the exact value."""
    assert reported is not None
    return reported == stats.DELAY_EDGES_US[stats.delay_bin(exact)] / US


@settings(max_examples=200, deadline=None)
@given(deliveries)
def test_summaries_match_the_definitions(rows: list[Delivery]) -> None:
    kinds, peers = stats.summarise(rows, interval=INTERVAL, max_delay_us=MAX_DELAY_US, lo_us=LO, hi_us=HI)
    total = stats.merge_kinds(kinds, by_kind=False).get(0, stats.KindSummary())
    ref = naive(rows)
    assert total.messages == ref["messages"]
    assert total.deliveries == ref["deliveries"]
    assert {k: n for k, n in enumerate(total.redundancy, start=1) if n} == ref["redundancy"]
    assert total.t50_sum == sum(ref["t50s"]) and total.t95_sum == sum(ref["t95s"])  # type: ignore[arg-type]
    assert total.delay_sum == sum(ref["delays"])  # type: ignore[arg-type]
    for hist, values in (
        (total.t50_hist, ref["t50s"]),
        (total.t95_hist, ref["t95s"]),
        (total.delay_hist, ref["delays"]),
    ):
        assert isinstance(values, list)
        for q in (0.5, 0.95, 0.99):
            if values:
                assert within_bin(nearest_rank(values, q), stats.quantile(hist, q))
            else:
                assert stats.quantile(hist, q) is None
    merged = stats.merge_peers(peers)
    assert {p: s.messages for p, s in merged.items() if s.messages} == ref["coverage"]
    assert sum(s.firsts for s in merged.values()) == ref["messages"]
    assert sum(s.messages for s in merged.values()) == total.counted


@settings(max_examples=200, deadline=None)
@given(deliveries, st.integers(1, 3))
def test_summaries_of_parts_add_up_to_the_whole(rows: list[Delivery], cut: int) -> None:
    """Summarising [LO, c) and [c, HI) separately (c on an interval boundary) and adding equals
    summarising [LO, HI) at once: what lets stored summaries stand in for pruned raw rows."""
    c = cut * INTERVAL * US
    whole_k, whole_p = stats.summarise(rows, interval=INTERVAL, max_delay_us=MAX_DELAY_US, lo_us=LO, hi_us=HI)
    a_k, a_p = stats.summarise(rows, interval=INTERVAL, max_delay_us=MAX_DELAY_US, lo_us=LO, hi_us=c)
    b_k, b_p = stats.summarise(rows, interval=INTERVAL, max_delay_us=MAX_DELAY_US, lo_us=c, hi_us=HI)
    assert not set(a_k) & set(b_k) and not set(a_p) & set(b_p)
    assert {**a_k, **b_k} == whole_k and {**a_p, **b_p} == whole_p


def test_quantiles_on_edges_are_exact() -> None:
    hist = [0] * stats.BINS
    for v in (0, 0, US, 2 * US, 5 * US):
        hist[stats.delay_bin(v)] += 1
    assert [stats.quantile(hist, q) for q in (0.2, 0.4, 0.6, 0.8, 1.0)] == [0.0, 0.0, 1.0, 2.0, 5.0]
    assert stats.quantile([0] * stats.BINS, 0.5) is None
    assert stats.rank_for(50, 3) == 2 and stats.rank_for(95, 20) == 19 and stats.rank_for(95, 21) == 20


def test_peer_latency_rank_orders_by_mean_arrival_rank() -> None:
    peers = {
        1: stats.PeerSummary(5, 4, 0, 12, 8 * US),
        2: stats.PeerSummary(5, 4, 4, 4, 0),
        3: stats.PeerSummary(),
    }
    figures = stats.peer_figures(peers, unique_messages=8)
    assert [(f.peer, f.latency_rank, f.coverage) for f in figures] == [(2, 1, 0.5), (1, 2, 0.5), (3, 3, 0.0)]
    assert figures[1].mean_delay == 2.0 and figures[1].mean_rank == 3.0
