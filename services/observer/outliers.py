"""Patterns nobody asked about: outliers the report flags on its own, decided here without I/O.

Two rules, each applied in one place:

* **A count jumps against its own history** (:func:`jump`): an entity's count ``n`` in one bucket
  (an interval of the report) is compared with its *baseline*, its count over the other buckets of
  the window and the ``HISTORY`` before it, as a Poisson rate per bucket (at least
  ``RATE_FLOOR`` per bucket, so an entity with no history is not flagged for its first message).
  It is flagged when ``n >= MIN_COUNT`` and the chance of ``n`` or more at that rate is below
  ``ALPHA``; the score is ``-log10`` of that chance. Used for channels (channel_updates per channel),
  nodes (node_announcements per node) and new nodes (nodes first seen per bucket, one entity).
* **A peer is systematically off** (:func:`peer_flags`): per interval, each peer's coverage and
  mean delay are compared with the other peers' by the modified z-score (0.6745 x deviation /
  median absolute deviation, Iglewicz and Hoaglin; beyond ``Z_LIMIT`` is an outlier; delays on a log
  scale). A peer is flagged *incomplete* or *late* when it is an outlier in at least half of the
  (at least ``MIN_INTERVALS``) intervals it delivered in.

Each flag carries the rows behind it (``rows``); the report links every flag to them.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.observer import stats

HISTORY = 7 * 86400  # seconds before the window that count as an entity's own history
MIN_COUNT = 4  # fewer in a bucket is never a jump (a new channel brings two updates at once)
ALPHA = 1e-6  # chance below which a count is a jump
RATE_FLOOR_PER_DAY = 1.0  # the baseline rate is at least this many per day
Z_LIMIT = 3.5
MIN_INTERVALS = 3
MAD_FLOOR = {"coverage": 0.02, "delay": 0.1}  # coverage share; log10 of seconds
LIMIT = 20  # flags per category, highest scores first


@dataclass
class Flag:
    category: str  # channel_updates, node_announcements, new_nodes, peer_incomplete, peer_late
    subject: str  # the channel, node, peer or bucket it is about
    score: float  # -log10 of the chance (jumps), or the share of intervals off (peers)
    summary: str
    bucket: int | None = None  # the bucket's start (seconds), for jumps
    rows: list[dict[str, Any]] = field(default_factory=list)


def poisson_surprise(n: int, rate: float) -> float:
    """``-log10 P(X >= n)`` for X Poisson with mean ``rate`` (> 0); 0 for n <= 0."""
    if n <= 0:
        return 0.0
    log_term = -rate + n * math.log(rate) - math.lgamma(n + 1)  # log P(X = n)
    total, k, term = 0.0, n, log_term
    while True:  # sum P(X = k) for k >= n, in log space relative to the first term
        total += math.exp(term - log_term)
        k += 1
        term += math.log(rate) - math.log(k)
        if term - log_term < -40 or k > n + 10_000:
            break
    return -(log_term + math.log(total)) / math.log(10)


def jump(n: int, baseline: int, baseline_buckets: int, bucket_seconds: int) -> float | None:
    """The score of ``n`` in one bucket against a baseline count over other buckets, or None when
    it is no jump (see the module docstring)."""
    if n < MIN_COUNT:
        return None
    rate = max(baseline / max(baseline_buckets, 1), RATE_FLOOR_PER_DAY * bucket_seconds / 86400)
    score = poisson_surprise(n, rate)
    return score if score > -math.log10(ALPHA) else None


@dataclass(frozen=True)
class Window:
    """The report window's buckets and the history before it."""

    start: int
    end: float
    bucket: int

    @property
    def buckets(self) -> int:
        return max(1, math.ceil((self.end - self.start) / self.bucket))

    @property
    def history_buckets(self) -> int:
        return HISTORY // self.bucket


@dataclass(frozen=True)
class BucketCount:
    """One entity's count in one bucket, with its window total and its history count."""

    entity: str
    bucket: int
    n: int
    window_total: int
    history: int


def rate_jumps(category: str, counts: Iterable[BucketCount], window: Window, what: str) -> list[Flag]:
    """Flags for entities whose count in a bucket jumps against their own history."""
    flags = []
    others = window.history_buckets + window.buckets - 1
    for c in counts:
        baseline = c.history + c.window_total - c.n
        score = jump(c.n, baseline, others, window.bucket)
        if score is not None:
            text = (
                f"{c.n} {what} in one interval, against {baseline / others:.2f} per interval in its history"
            )
            flags.append(Flag(category, c.entity, score, text, bucket=c.bucket))
    return _top(flags)


def new_node_bursts(per_bucket: Mapping[int, int], window: Window) -> list[Flag]:
    """Flags for buckets of the window in which unusually many nodes were first seen; ``per_bucket``
    covers the history and the window."""
    total = sum(per_bucket.values())
    flags = []
    for bucket, n in per_bucket.items():
        if bucket < window.start:
            continue
        score = jump(n, total - n, window.history_buckets + window.buckets - 1, window.bucket)
        if score is not None:
            flags.append(Flag("new_nodes", str(bucket), score, f"{n} nodes first seen in one interval",
                              bucket=bucket))  # fmt: skip
    return _top(flags)


def _top(flags: list[Flag]) -> list[Flag]:
    flags.sort(key=lambda f: (-f.score, f.subject, f.bucket or 0))
    return flags[:LIMIT]


def modified_z(values: Mapping[int, float], floor: float) -> dict[int, float]:
    """Modified z-score of each value against all of them (median absolute deviation >= floor)."""
    med = statistics.median(values.values())
    mad = max(statistics.median(abs(v - med) for v in values.values()), floor)
    return {k: 0.6745 * (v - med) / mad for k, v in values.items()}


def peer_flags(kinds: stats.Kinds, peers: stats.Peers, names: Mapping[int, str]) -> list[Flag]:
    """Peers whose coverage is systematically low or whose delays are systematically high."""
    unique: dict[int, int] = defaultdict(int)
    for (start, _), s in kinds.items():
        unique[start] += s.messages
    per: dict[int, dict[int, stats.PeerSummary]] = defaultdict(lambda: defaultdict(stats.PeerSummary))
    for (start, peer, _), p in peers.items():
        per[start][peer].add(p)
    rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for start in sorted(per):
        present = {peer: p for peer, p in per[start].items() if p.deliveries and unique[start]}
        if len(present) < 3:
            continue
        coverage = {peer: p.messages / unique[start] for peer, p in present.items()}
        delay = {peer: math.log10(p.delay_sum / p.messages / stats.US + 0.01) for peer, p in present.items()
                 if p.messages}  # fmt: skip
        z_cov = modified_z(coverage, MAD_FLOOR["coverage"])
        z_delay = modified_z(delay, MAD_FLOOR["delay"]) if len(delay) >= 3 else {}
        for peer, p in present.items():
            rows[peer].append({
                "interval_start": start,
                "coverage": coverage[peer],
                "median_coverage": statistics.median(coverage.values()),
                "coverage_z": z_cov[peer],
                "mean_delay": p.delay_sum / p.messages / stats.US if p.messages else None,
                "delay_z": z_delay.get(peer),
            })  # fmt: skip
    flags = []
    for peer, rs in rows.items():
        if len(rs) < MIN_INTERVALS:
            continue
        low = sum(1 for r in rs if r["coverage_z"] < -Z_LIMIT)
        slow = sum(1 for r in rs if r["delay_z"] is not None and r["delay_z"] > Z_LIMIT)
        for category, n, what in (("peer_incomplete", low, "coverage far below"),
                                  ("peer_late", slow, "delays far above")):  # fmt: skip
            if n and 2 * n >= len(rs):
                text = f"{what} the other peers' in {n} of its {len(rs)} intervals"
                flags.append(Flag(category, names.get(peer, str(peer)), n / len(rs), text, rows=rs))
    return _top(flags)


def as_json(flags: Sequence[Flag]) -> list[dict[str, Any]]:
    """Flags as the report's plain data, numbered (``id``) so the HTML can link to their rows."""
    return [{"id": i, **vars(f)} for i, f in enumerate(flags, start=1)]
