"""Gossip propagation statistics: definitions and arithmetic, no I/O.

A *delivery* is one peer handing us one message at a time (a row of ``observations``). For one
message (its ``msg_hash``):

* its **first arrival** is the earliest delivery of it by any peer; the message belongs to the
  interval (and report window) its first arrival falls in;
* each peer's **arrival** is that peer's earliest delivery; arrivals later than ``max_delay``
  after the first arrival are *late* and not counted (they are deliveries, but not propagation);
* its **redundancy** ``r`` is the number of peers with a counted arrival;
* arrivals are **ranked** by time (ties by peer number), rank 1 is the first; a peer's **delay**
  is its arrival minus the first arrival;
* ``t50`` / ``t95`` is the delay of the arrival of rank ``ceil(q * r)``: the time until 50 % /
  95 % of the peers that delivered it had done so. Only messages with ``r >= 2`` have a spread.

Per interval, summaries (:class:`KindSummary`, :class:`PeerSummary`) are sums and histograms,
so summaries of many intervals add up (:meth:`KindSummary.add`) to exactly the summary of their
union. Delays are integer microseconds; histograms count values ``v`` with
``edges[i-1] < v <= edges[i]`` in bin ``i`` (bin 0: ``v <= 0``; the last bin: above every edge),
and percentiles over them are nearest-rank, reported as the bin's upper edge — exact whenever the
true value is an edge, otherwise an upper bound within one bin.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

US = 1_000_000
KINDS = {256: "channel_announcement", 257: "node_announcement", 258: "channel_update"}

# Histogram bin upper edges (microseconds): 1-2-5 steps from 1 ms to 20 s, then minutes to a day.
DELAY_EDGES_US: tuple[int, ...] = (
    0,
    *(m * 10**e for e in range(3, 7) for m in (1, 2, 5)),
    10 * US, 20 * US, 30 * US, 60 * US, 120 * US, 300 * US, 600 * US, 1200 * US, 1800 * US,
    3600 * US, 7200 * US, 21600 * US, 43200 * US, 86400 * US,
)  # fmt: skip
BINS = len(DELAY_EDGES_US) + 1


class Delivery(NamedTuple):
    peer: int
    msg: int
    kind: int
    received_us: int  # microseconds since the epoch


def delay_bin(delay_us: int) -> int:
    """The histogram bin of a delay: the number of edges below it."""
    return bisect.bisect_left(DELAY_EDGES_US, delay_us)


def rank_for(q_percent: int, r: int) -> int:
    """Rank ``ceil(q * r)`` of the arrival that reaches ``q`` percent of ``r`` peers (integers only)."""
    return max(1, (q_percent * r + 99) // 100)


def _zeros() -> list[int]:
    return [0] * BINS


def add_lists(a: list[int], b: Sequence[int]) -> list[int]:
    if len(a) < len(b):
        a.extend([0] * (len(b) - len(a)))
    for i, v in enumerate(b):
        a[i] += v
    return a


@dataclass
class KindSummary:
    """One kind's figures over some intervals (see the module docstring)."""

    deliveries: int = 0
    messages: int = 0
    counted: int = 0
    redundancy: list[int] = field(default_factory=list)  # redundancy[k - 1]: messages with r == k
    spread: int = 0
    t50_sum: int = 0
    t95_sum: int = 0
    t50_hist: list[int] = field(default_factory=_zeros)
    t95_hist: list[int] = field(default_factory=_zeros)
    delay_sum: int = 0
    delay_hist: list[int] = field(default_factory=_zeros)

    def add(self, other: KindSummary) -> KindSummary:
        self.deliveries += other.deliveries
        self.messages += other.messages
        self.counted += other.counted
        add_lists(self.redundancy, other.redundancy)
        self.spread += other.spread
        self.t50_sum += other.t50_sum
        self.t95_sum += other.t95_sum
        add_lists(self.t50_hist, other.t50_hist)
        add_lists(self.t95_hist, other.t95_hist)
        self.delay_sum += other.delay_sum
        add_lists(self.delay_hist, other.delay_hist)
        return self


@dataclass
class PeerSummary:
    """One peer's contribution to one kind's messages over some intervals."""

    deliveries: int = 0
    messages: int = 0
    firsts: int = 0
    rank_sum: int = 0
    delay_sum: int = 0

    def add(self, other: PeerSummary) -> PeerSummary:
        self.deliveries += other.deliveries
        self.messages += other.messages
        self.firsts += other.firsts
        self.rank_sum += other.rank_sum
        self.delay_sum += other.delay_sum
        return self


# Summaries keyed by interval start (seconds since the epoch) and kind / (peer, kind).
Kinds = dict[tuple[int, int], KindSummary]
Peers = dict[tuple[int, int, int], PeerSummary]


def interval_of(t_us: int, interval: int) -> int:
    """Start (seconds since the epoch) of the interval holding ``t_us``."""
    return (t_us // US) // interval * interval


def summarise(
    deliveries: Iterable[Delivery], *, interval: int, max_delay_us: int, lo_us: int, hi_us: int
) -> tuple[Kinds, Peers]:
    """Summaries of the intervals in ``[lo_us, hi_us)``: messages whose first arrival lies there,
    and deliveries received there. ``deliveries`` must hold every delivery of those messages (the
    SQL edge computes the same in PostgreSQL; this is its reference and the tests' model)."""
    first: dict[int, int] = {}
    arrivals: dict[int, dict[int, int]] = defaultdict(dict)
    kind_of: dict[int, int] = {}
    kinds: Kinds = defaultdict(KindSummary)
    peers: Peers = defaultdict(PeerSummary)
    rows = list(deliveries)
    for d in rows:
        if d.msg not in first or d.received_us < first[d.msg]:
            first[d.msg] = d.received_us
        kind_of[d.msg] = min(kind_of.get(d.msg, d.kind), d.kind)
        if lo_us <= d.received_us < hi_us:
            start = interval_of(d.received_us, interval)
            kinds[start, d.kind].deliveries += 1
            peers[start, d.peer, d.kind].deliveries += 1
    for d in rows:
        f = first[d.msg]
        if lo_us <= f < hi_us and d.received_us - f <= max_delay_us:
            mine = arrivals[d.msg]
            if d.peer not in mine or d.received_us < mine[d.peer]:
                mine[d.peer] = d.received_us
    for msg, mine in arrivals.items():
        f, kind = first[msg], kind_of[msg]
        start = interval_of(f, interval)
        ranked = sorted((at, peer) for peer, at in mine.items())
        r = len(ranked)
        k = kinds[start, kind]
        k.messages += 1
        k.counted += r
        add_lists(k.redundancy, [0] * (r - 1) + [1])
        delays = [at - f for at, _ in ranked]
        for rank, (delay, (_, peer)) in enumerate(zip(delays, ranked, strict=True), start=1):
            p = peers[start, peer, kind]
            p.messages += 1
            p.firsts += rank == 1
            p.rank_sum += rank
            p.delay_sum += delay
            if rank > 1:
                k.delay_sum += delay
                k.delay_hist[delay_bin(delay)] += 1
        if r >= 2:
            t50, t95 = delays[rank_for(50, r) - 1], delays[rank_for(95, r) - 1]
            k.spread += 1
            k.t50_sum += t50
            k.t95_sum += t95
            k.t50_hist[delay_bin(t50)] += 1
            k.t95_hist[delay_bin(t95)] += 1
    return dict(kinds), dict(peers)


def quantile(hist: Sequence[int], q: float) -> float | None:
    """Nearest-rank ``q`` quantile (seconds) of a delay histogram: the upper edge of the bin
    holding it; ``inf`` above the last edge, ``None`` for an empty histogram."""
    n = sum(hist)
    if not n:
        return None
    target = max(1, math.ceil(q * n - 1e-9))
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= target:
            return DELAY_EDGES_US[i] / US if i < len(DELAY_EDGES_US) else math.inf
    raise AssertionError("unreachable")


def merge_kinds(kinds: Kinds, *, by_kind: bool = True) -> dict[int, KindSummary]:
    """Sum interval summaries per kind (``by_kind=False``: everything under kind 0)."""
    out: dict[int, KindSummary] = defaultdict(KindSummary)
    for (_, kind), s in kinds.items():
        out[kind if by_kind else 0].add(s)
    return dict(out)


def merge_peers(peers: Peers) -> dict[int, PeerSummary]:
    """Sum per-peer summaries over intervals and kinds."""
    out: dict[int, PeerSummary] = defaultdict(PeerSummary)
    for (_, peer, _), s in peers.items():
        out[peer].add(s)
    return dict(out)


@dataclass
class PeerFigures:
    peer: int
    deliveries: int
    messages: int
    coverage: float  # share of all unique messages (of every kind) it delivered in time
    first_share: float  # share of its messages it delivered first
    mean_rank: float
    mean_delay: float  # seconds behind the first arrival
    latency_rank: int = 0  # 1: the lowest mean rank


def kind_figures(s: KindSummary, seconds: float) -> dict[str, object]:
    """What the report says about one kind (or all kinds together)."""
    return {
        "deliveries": s.deliveries,
        "messages": s.messages,
        "duplicates": s.deliveries - s.messages,
        "messages_per_second": s.messages / seconds if seconds else 0.0,
        "deliveries_per_second": s.deliveries / seconds if seconds else 0.0,
        "redundancy_mean": s.counted / s.messages if s.messages else None,
        "redundancy": {str(k): n for k, n in enumerate(s.redundancy, start=1) if n},
        "spread_messages": s.spread,
        "t50_mean": s.t50_sum / s.spread / US if s.spread else None,
        "t95_mean": s.t95_sum / s.spread / US if s.spread else None,
        "t50_p50": quantile(s.t50_hist, 0.5),
        "t50_p95": quantile(s.t50_hist, 0.95),
        "t95_p50": quantile(s.t95_hist, 0.5),
        "t95_p95": quantile(s.t95_hist, 0.95),
        "delay_mean": s.delay_sum / sum(s.delay_hist) / US if sum(s.delay_hist) else None,
        "delay_p50": quantile(s.delay_hist, 0.5),
        "delay_p95": quantile(s.delay_hist, 0.95),
        "delay_p99": quantile(s.delay_hist, 0.99),
    }


def peer_figures(peers: dict[int, PeerSummary], unique_messages: int) -> list[PeerFigures]:
    """Coverage and latency of each peer, fastest (lowest mean arrival rank) first."""
    out = [
        PeerFigures(
            peer=num,
            deliveries=p.deliveries,
            messages=p.messages,
            coverage=p.messages / unique_messages if unique_messages else 0.0,
            first_share=p.firsts / p.messages if p.messages else 0.0,
            mean_rank=p.rank_sum / p.messages if p.messages else math.inf,
            mean_delay=p.delay_sum / p.messages / US if p.messages else math.inf,
        )
        for num, p in peers.items()
    ]
    out.sort(key=lambda f: (f.mean_rank, f.mean_delay, f.peer))
    for i, f in enumerate(out, start=1):
        f.latency_rank = i
    return out
