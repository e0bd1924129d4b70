"""Outlier flags (services/observer/outliers.py): the rules on small cases, and the report flagging
a channel's burst, a burst of new nodes and a late, incomplete peer in a real store, each flag
linking to the rows behind it."""

from __future__ import annotations

import math
import random

import asyncpg
import pytest

from lnsync.gossip.messages import decode_gossip
from services.observer import outliers, render, report, stats
from services.observer.stats import US, Delivery
from services.persistence.store import Incoming, to_timestamp, write_batch
from tests.persistence.conftest import channel_announcement, channel_update, node_announcement

pytestmark = pytest.mark.timeout(60)

HOUR, DAY = 3600, 86400
T0 = 1_780_000_000 // DAY * DAY  # the report window starts here (a day boundary)


def test_poisson_surprise_matches_the_definition() -> None:
    assert outliers.poisson_surprise(1, 1.0) == pytest.approx(-math.log10(1 - math.exp(-1)))
    tail = 1 - sum(math.exp(-0.5) * 0.5**k / math.factorial(k) for k in range(6))
    assert outliers.poisson_surprise(6, 0.5) == pytest.approx(-math.log10(tail), rel=1e-6)
    assert outliers.poisson_surprise(0, 3.0) == 0.0
    assert 500 < outliers.poisson_surprise(400, 0.01) < math.inf  # no underflow far in the tail


def test_a_jump_is_against_the_entitys_own_history() -> None:
    window = outliers.Window(T0, T0 + DAY, HOUR)
    others = window.history_buckets + window.buckets - 1
    assert outliers.jump(3, 0, others, HOUR) is None  # below MIN_COUNT, however surprising
    assert outliers.jump(12, others, others, HOUR) is not None  # 12 where 1 per interval is usual
    assert outliers.jump(12, 10 * others, others, HOUR) is None  # 12 where 10 are usual
    counts = [outliers.BucketCount("busy", T0, 30, 30 + 23 * 25, 168 * 25),  # always busy
              outliers.BucketCount("quiet", T0 + HOUR, 30, 31, 7)]  # fmt: skip
    flags = outliers.rate_jumps("channel_updates", counts, window, "updates")
    assert [f.subject for f in flags] == ["quiet"] and flags[0].bucket == T0 + HOUR


def test_new_node_bursts_ignore_history_buckets() -> None:
    window = outliers.Window(T0, T0 + DAY, HOUR)
    per_bucket = {T0 - 3 * DAY: 9, T0 + 5 * HOUR: 9, T0 + 6 * HOUR: 1}
    flags = outliers.new_node_bursts(per_bucket, window)
    assert [f.bucket for f in flags] == [T0 + 5 * HOUR]


def peer_pattern(seed: int) -> list[Delivery]:
    """Six hours of messages; peers 1-4 deliver nearly all within seconds, peer 5 a fifth of them,
    peer 6 all of them ten minutes late."""
    rng = random.Random(seed)
    out = []
    for msg in range(600):
        first = (T0 + rng.randrange(6 * HOUR)) * US
        for peer in (1, 2, 3, 4):
            if rng.random() < 0.95:
                out.append(Delivery(peer, msg, 258, first + rng.randrange(3 * US)))
        if rng.random() < 0.2:
            out.append(Delivery(5, msg, 258, first + rng.randrange(3 * US)))
        out.append(Delivery(6, msg, 258, first + 600 * US + rng.randrange(60 * US)))
    return out


def test_systematically_incomplete_and_late_peers() -> None:
    kinds, peers = stats.summarise(peer_pattern(1), interval=HOUR, max_delay_us=HOUR * US, lo_us=T0 * US,
                                   hi_us=(T0 + 7 * HOUR) * US)  # fmt: skip
    flags = outliers.peer_flags(kinds, peers, {5: "five", 6: "six"})
    assert {(f.category, f.subject) for f in flags} == {("peer_incomplete", "five"), ("peer_late", "six")}
    late = next(f for f in flags if f.category == "peer_late")
    assert len(late.rows) == 6 and all(r["mean_delay"] > 600 for r in late.rows)


async def store(conn: asyncpg.Connection, items: list[tuple[bytes, int]]) -> None:  # type: ignore[type-arg]
    batch = [Incoming(decode_gossip(raw), seen * US) for raw, seen in sorted(items, key=lambda x: x[1])]
    await write_batch(conn, batch)


async def test_report_flags_link_to_their_rows(database_url: str) -> None:
    """Channel 7 updates once an hour for eight days, then 20 times in one hour; channel 8 updates
    once an hour throughout; a node a day appears in the history, then 12 within one hour."""
    scid7, scid8 = 700_000 << 40, 800_000 << 40
    items = [
        (channel_announcement(scid7, 1, 2), T0 - 8 * DAY),
        (channel_announcement(scid8, 3, 4), T0 - 8 * DAY),
    ]
    for h in range(-7 * 24, 20):
        t = T0 + h * HOUR + 60
        items += [(channel_update(scid7, 0, t), t), (channel_update(scid8, 0, t), t)]
    burst = T0 + 9 * HOUR
    items += [(channel_update(scid7, 1, burst + 100 + i, fee_ppm=i), burst + 100 + i) for i in range(20)]
    items += [(node_announcement(100 + d, T0 - d * DAY), T0 - d * DAY) for d in range(1, 7)]
    items += [(node_announcement(200 + i, burst + 60 * i), burst + 60 * i) for i in range(12)]
    conn = await asyncpg.connect(database_url)
    try:
        await store(conn, items)
        await conn.copy_records_to_table(
            "observations",
            records=[(d.peer, d.msg, d.kind, to_timestamp(d.received_us), False) for d in peer_pattern(2)],
            columns=("peer_num", "msg_hash", "kind", "received", "first"),
        )
        data = await report.gather(conn, now=T0 + 20 * HOUR, since=20 * HOUR, interval=HOUR, max_delay=HOUR)
    finally:
        await conn.close()
    flags = data["outliers"]["flags"]
    by = {(f["category"], f["subject"]): f for f in flags}
    channel = by["channel_updates", "700000x0x0"]
    assert channel["bucket"] == burst and len(channel["rows"]) == 21  # the hourly one and the 20
    assert {r["direction"] for r in channel["rows"]} == {0, 1}
    assert not any(f["subject"] == "800000x0x0" for f in flags)
    nodes = by["new_nodes", str(burst)]
    assert len(nodes["rows"]) == 12 and nodes["rows"][0]["alias"] == "node200"
    assert {("peer_incomplete", "5"), ("peer_late", "6")} <= set(by)
    assert len(flags) == 4
    page = render.to_html(data)
    for f in flags:
        assert f'<a href="#flag-{f["id"]}">' in page and f'<section id="flag-{f["id"]}">' in page
