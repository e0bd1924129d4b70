"""Initial-sync detection, the pending-update buffer and the per-peer limits, on a fake clock."""

from __future__ import annotations

from lnsync.gossip import queries as q
from services.downloader.limits import EventWindow, TokenBucket
from services.downloader.pending import PendingUpdates
from services.downloader.pipeline import RecentMessages
from services.downloader.sync import Action, RateWindow, SyncSettings, SyncTracker
from tests.downloader.scripted import MAINNET

S = SyncSettings(settle_seconds=10, settled_rate=10, grace=1, range_timeout=60, scid_query_timeout=30)
QUERY = q.QueryChannelRange(MAINNET, 0, 0xFFFFFFFF)


def reply(scids, first=0, count=0xFFFFFFFF, chain=MAINNET):
    return q.ReplyChannelRange(chain, first, count, True, tuple(scids))


class Clock:
    """Drives a tracker: ``run(seconds, rate)`` delivers new messages and polls like a session."""

    def __init__(self, tracker: SyncTracker, known: set[int], can_query: bool = True) -> None:
        self.t = 0.0
        self.tracker = tracker
        self.known = known
        self.can_query = can_query
        self.actions: list[tuple[float, Action]] = []
        self.answer_probes = True

    def run(self, seconds: float, rate: float = 0.0, step: float = 0.25) -> Action | None:
        end = self.t + seconds
        carry = 0.0
        while self.t < end:
            self.t += step
            carry += rate * step
            while carry >= 1:
                carry -= 1
                self.tracker.new_message(self.t)
            action = self.tracker.poll(self.t, self.known.__contains__, self.can_query)
            if action is not None:
                self.actions.append((self.t, action))
                if action is Action.SEND_PROBE and self.answer_probes:
                    self.tracker.pong(self.t + 0.01)
                if action in (Action.COMPLETE, Action.GIVE_UP):
                    return action
        return None


def test_complete_only_after_range_dump_drain_and_a_ping_round_trip():
    tracker = SyncTracker(S, 0.0)
    tracker.range_sent(QUERY, 0.0)
    clock = Clock(tracker, set())
    assert clock.run(5) is None  # no reply yet: waiting, however quiet it is
    tracker.range.on_reply(reply(range(100)), clock.t, S.range_timeout)
    assert tracker.range.done
    clock.known.update(range(100))
    assert clock.run(30, rate=500) is None  # a dump at 500/s never looks settled
    assert clock.run(9.5) is None  # the window still holds the dump's tail
    done = clock.run(5)
    assert done is Action.COMPLETE
    probe_at = next(t for t, a in clock.actions if a is Action.SEND_PROBE)
    assert 30 + 5 + 10 <= probe_at <= 30 + 5 + 10.5  # right after the window drained
    assert clock.actions[-1][0] >= probe_at + S.grace
    assert tracker.missing_at_completion == 0


def test_live_traffic_below_the_threshold_does_not_block_completion():
    tracker = SyncTracker(S, 0.0)
    tracker.range_sent(QUERY, 0.0)
    tracker.range.on_reply(reply([]), 0.0, S.range_timeout)
    clock = Clock(tracker, set())
    assert clock.run(60, rate=5) is Action.COMPLETE  # mainnet-like 5 new messages a second


def test_a_split_range_reply_is_awaited_and_a_silent_range_times_out():
    tracker = SyncTracker(S, 0.0)
    tracker.range_sent(QUERY, 0.0)
    tracker.range.on_reply(reply([1, 2], 0, 700_000), 0.0, S.range_timeout)
    assert tracker.range.open
    clock = Clock(tracker, {1, 2})
    assert clock.run(59) is None
    tracker.range.on_reply(reply([3], 700_000, 0xFFFFFFFF - 700_000), clock.t, S.range_timeout)
    assert tracker.range.done and tracker.range.scids == {1, 2, 3}

    silent = SyncTracker(S, 0.0)
    silent.range_sent(QUERY, 0.0)
    clock = Clock(silent, set())
    assert clock.run(59) is None
    assert clock.run(30) is Action.COMPLETE
    assert silent.range.gave_up == "timeout"


def test_range_replies_for_other_chains_or_blocks_are_refused():
    tracker = SyncTracker(S, 0.0)
    tracker.range_sent(q.QueryChannelRange(MAINNET, 1000, 10), 0.0)
    for bad in (reply([1], chain=bytes(32)), reply([1], 0, 10), reply([1], 2000, 10)):
        try:
            tracker.range.on_reply(bad, 0.0, 60)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
    assert tracker.range.scids == set()


def test_a_stalled_dump_woken_by_the_probe_is_waited_for():
    """LDK's quirk: node announcements come only after the next event, e.g. our probe ping."""
    tracker = SyncTracker(S, 0.0)
    tracker.range_sent(QUERY, 0.0)
    tracker.range.on_reply(reply([1]), 0.0, S.range_timeout)
    clock = Clock(tracker, {1})
    clock.answer_probes = False
    clock.run(10.25)
    assert clock.actions == [(10.0, Action.SEND_PROBE)]
    # the pong arrives, then the woken dump's tail: 50 messages within the grace period
    tracker.pong(10.5)
    for i in range(50):
        tracker.new_message(10.5 + i / 100)
    clock.answer_probes = True
    assert clock.run(1.0) is None
    assert clock.run(30) is Action.COMPLETE
    probes = [t for t, a in clock.actions if a is Action.SEND_PROBE]
    assert len(probes) == 2 and probes[1] > 11


def test_missing_channels_are_queried_once_then_given_up_within_tolerance():
    tracker = SyncTracker(S, 0.0)
    tracker.range_sent(QUERY, 0.0)
    tracker.range.on_reply(reply(range(1000)), 0.0, S.range_timeout)
    known = set(range(5, 1000))
    clock = Clock(tracker, known)
    assert clock.run(15) is None
    assert clock.actions[-1][1] is Action.QUERY_SCIDS
    assert tracker.scids_to_query(known.__contains__) == [0, 1, 2, 3, 4]
    assert tracker.scids_to_query(known.__contains__) == []  # never twice
    assert clock.run(25) is None  # waiting for the answer
    assert clock.run(5) is Action.COMPLETE  # none came: within tolerance (10 of 1000)
    assert tracker.peer_answers_scid_queries is False
    assert tracker.missing_at_completion == 5


def test_answered_scid_queries_let_the_answer_drain_first():
    tracker = SyncTracker(S, 0.0)
    tracker.range_sent(QUERY, 0.0)
    tracker.range.on_reply(reply(range(10)), 0.0, S.range_timeout)
    known = set(range(8))
    clock = Clock(tracker, known)
    clock.run(15)
    assert clock.actions[-1][1] is Action.QUERY_SCIDS
    assert tracker.scids_to_query(known.__contains__) == [8, 9]
    known.update((8, 9))
    tracker.new_message(clock.t)
    tracker.scid_reply_end(clock.t)
    assert clock.run(30) is Action.COMPLETE
    assert tracker.peer_answers_scid_queries is True and tracker.missing_at_completion == 0
    assert [a for _, a in clock.actions].count(Action.SEND_PROBE) == 2


def test_a_peer_that_lists_channels_it_never_sends_is_not_synced():
    tracker = SyncTracker(S, 0.0)
    tracker.range_sent(QUERY, 0.0)
    tracker.range.on_reply(reply(range(500)), 0.0, S.range_timeout)
    clock = Clock(tracker, set(), can_query=False)
    assert clock.run(S.stuck_timeout) is None  # quiet, answers pings, sends nothing: not complete
    assert clock.run(60) is Action.GIVE_UP


def test_rate_window_forgets_old_buckets():
    w = RateWindow(2.0)
    w.add(0.1, 5)
    w.add(1.0)
    assert w.count(1.5) == 6
    assert w.count(2.3) == 1
    assert w.count(10) == 0


def test_pending_updates_are_bounded_and_age_out():
    p = PendingUpdates(max_total=5, ttl=10, max_per_channel=2)
    assert p.add(1, b"a", 0, 0.0) == 0
    assert p.add(1, b"a", 0, 0.0) == 0  # the same bytes twice are held once
    assert p.add(1, b"b", 0, 1.0) == 0
    assert p.add(1, b"c", 0, 2.0) == 1  # per channel bound: "a" goes
    assert [h.raw for h in p.take(1)] == [b"b", b"c"] and len(p) == 0
    for i in range(7):
        p.add(100 + i, bytes([i]), i, float(i))
    assert len(p) == 5 and p.scids() == [102, 103, 104, 105, 106]
    assert p.expire(13.5) == 2 and p.scids() == [104, 105, 106]
    held = p.take(105)
    p.restore(105, held)
    assert 105 in p and len(p) == 3


def test_token_bucket_and_event_window():
    b = TokenBucket(rate=10, burst=5, now=0.0)
    assert [b.take(0.0) for _ in range(5)] == [0.0] * 5
    assert b.take(0.0) == 0.1  # one token short at 10/s
    assert b.take(1.0) == 0.0  # refilled
    assert TokenBucket(0, 0, 0.0).take(0.0) == 0.0  # disabled
    w = EventWindow(limit=3, window=1.0)
    assert not any(w.add(t) for t in (0.0, 0.5, 1.2, 1.9, 2.0))  # never 4 within one second
    assert w.add(2.1)


def test_recent_messages_keep_the_newest_half_and_remember_verdicts():
    r = RecentMessages(capacity=100)
    digests = [r.digest(bytes([i, i])) for i in range(250)]
    assert len(set(digests)) == 250 and r.digest(b"\x00\x00") == digests[0]
    for i, d in enumerate(digests):
        r.put(d, 1, "bad_signature" if i % 7 == 0 else "")
    assert len(r) <= 100
    assert all(r.get(d) is not None for d in digests[-50:])  # the newest half, always
    assert r.get(digests[0]) is None
    assert r.get(digests[245]) == (1, "bad_signature") and r.get(digests[246]) == (1, "")
    assert RecentMessages(100).digest(b"x") != r.digest(b"x")  # keyed per process
