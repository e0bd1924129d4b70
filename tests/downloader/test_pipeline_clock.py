"""The downloader drops (and counts) updates dated more than a day after their receipt."""

from __future__ import annotations

import time

from lnsync.gossip.signing import sign_channel_announcement
from services.downloader.pipeline import GossipPipeline, Outcome
from services.downloader.stats import PeerStats
from tests.downloader.scripted import MemorySink
from tests.gossip_helpers import BTC_A, BTC_B, MAINNET, NODE_A, NODE_B, channel_update

SCID = (700_000 << 40) | (1 << 16) | 1
DAY = 86400


async def test_future_dated_updates_are_counted_and_never_forwarded() -> None:
    sink = MemorySink()
    pipeline = GossipPipeline(MAINNET, sink, PeerStats("peer", "peer@host:9735"))
    now = int(time.time())
    received = now * 1_000_000
    # An update arriving before its announcement waits in pending; released, it is judged too.
    early = channel_update(SCID, direction=1, timestamp=now + 2 * DAY)
    assert (await pipeline.handle(early, received, 0.0)).outcome is Outcome.PENDING
    announcement = sign_channel_announcement(MAINNET, SCID, NODE_A, NODE_B, BTC_A, BTC_B)
    assert (await pipeline.handle(announcement, received, 0.0)).outcome is Outcome.NEW
    far = channel_update(SCID, timestamp=2**32 - 1)
    result = await pipeline.handle(far, received, 0.0)
    assert (result.outcome, result.reason) == (Outcome.INVALID, "timestamp_in_future")
    # An hour ahead is fine; a day ahead of a receipt two days ago is not.
    soon = channel_update(SCID, timestamp=now + 3600)
    assert (await pipeline.handle(soon, received, 0.0)).outcome is Outcome.NEW
    late = channel_update(SCID, timestamp=now - 10)
    result = await pipeline.handle(late, received - 2 * DAY * 1_000_000, 0.0)
    assert result.outcome is Outcome.INVALID
    assert pipeline.stats.invalid == {"timestamp_in_future": 3}
    assert sink.raws == [announcement, soon]
