"""The delta engine on hand-made histories: what is sent, how, and the guarantees the format
promises (deterministic bytes, sorted node ids, one record per direction, sane header times)."""

from __future__ import annotations

import random

import pytest

from lnsync.rgs import format as f
from lnsync.rgs.client import RgsClient
from lnsync.rgs.decode import decode
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode, encode_empty
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.model import DeltaParams
from tests.rgs.histories import DAY, MAINNET, node_keys, random_history

T0 = 1_760_000_000
A, B, C, D = node_keys(4, "engine")
SCID = 850_000 << 40


def channel(h: GossipHistory, scid: int, t: int, n1: bytes = A, n2: bytes = B, **policy: int) -> None:
    h.add_channel_announcement(scid, n1, n2, t)
    for d in (0, 1):
        h.add_channel_update(scid, d, t, t, **policy)  # type: ignore[arg-type]


def delta(h: GossipHistory, last: int, R: int, **params: int):  # type: ignore[no-untyped-def]
    return compute_delta(h.delta_input(last, R), DeltaParams(**params))


def test_full_sync_of_one_channel() -> None:
    h = GossipHistory(MAINNET)
    channel(h, SCID, T0)
    R = T0 + 130
    ds = delta(h, 0, R, timestamp_granularity=60)
    assert len(ds.announcements) == 1 and len(ds.updates) == 2
    assert all(not u.incremental for u in ds.updates)
    assert ds.timestamp == R - R % 60 and R - 60 < ds.timestamp <= R  # rounded down, never later than R
    blob = decode(encode(ds, 1))
    assert blob.timestamp == ds.timestamp and blob.nodes[0].node_id == A


def test_a_channel_becomes_usable_when_its_second_direction_arrives() -> None:
    h = GossipHistory(MAINNET)
    h.add_channel_announcement(SCID, A, B, T0)
    h.add_channel_update(SCID, 0, T0, T0)
    assert len(delta(h, 0, T0 + 10).announcements) == 0  # one direction only: not live yet
    h.add_channel_update(SCID, 1, T0 + 1, T0 + 1)
    h.add_channel_update(SCID, 1, T0 + 2, T0 + 2, fee_base_msat=7)
    ds = delta(h, T0 + 1, T0 + 10)
    assert [a.scid for a in ds.announcements] == [SCID]
    assert [(u.direction, u.incremental) for u in ds.updates] == [(0, False), (1, False)]


def test_changes_since_last_sync_go_out_as_incremental_updates_when_smaller() -> None:
    h = GossipHistory(MAINNET)
    odd = {
        "cltv_expiry_delta": 18,
        "htlc_minimum_msat": 1,
        "fee_base_msat": 7,
        "fee_proportional_millionths": 5,
    }
    channel(h, SCID, T0, **odd)
    for i in range(1, 5):
        channel(h, SCID + (i << 40), T0, n1=C, n2=D)
    R = T0 + 7200
    # Four ordinary channels change their fee rate; the odd one changes only its fee rate too.
    for i in range(1, 5):
        h.add_channel_update(SCID + (i << 40), 0, T0 + 3600, T0 + 3600, fee_proportional_millionths=100 + i)
    h.add_channel_update(SCID, 0, T0 + 3600, T0 + 3600, **{**odd, "fee_proportional_millionths": 200})
    ds = compute_delta(
        h.delta_input(T0 + 1800, R), DeltaParams(reminder_period=8 * DAY, reminder_slot=8 * DAY)
    )
    assert not ds.announcements
    (odd_record,) = [u for u in ds.updates if u.scid == SCID]
    # Relative to the defaults (the ordinary channels' values) a full record would carry four
    # fields; the incremental one carries only the fee rate.
    assert odd_record.incremental and odd_record.flags & f.VALUE_FIELDS_MASK == f.UPDATE_FEE_PROP
    assert odd_record.values[3] == 200
    client = RgsClient(MAINNET)
    client.apply(encode(delta(h, 0, T0 + 1800), 2), T0 + 1800)
    client.apply(encode(ds, 2), R)
    assert client.graph() == h.live_graph(R)


def test_an_identical_rebroadcast_sends_nothing() -> None:
    h = GossipHistory(MAINNET)
    channel(h, SCID, T0)
    h.add_channel_update(SCID, 0, T0 + 3600, T0 + 3600)  # same values, new timestamp
    ds = delta(h, T0 + 1800, T0 + 7200, reminder_period=8 * DAY, reminder_slot=8 * DAY)
    assert ds.updates == [] and ds.announcements == []


def test_the_newest_update_by_gossip_timestamp_wins_over_later_arrivals() -> None:
    h = GossipHistory(MAINNET)
    channel(h, SCID, T0)
    assert h.add_channel_update(SCID, 0, T0 + 500, T0 + 600, fee_base_msat=5) == "stored"
    # Arrives later but is older: stale, must never reach clients.
    assert h.add_channel_update(SCID, 0, T0 + 400, T0 + 700, fee_base_msat=9) == "stale"
    assert h.add_channel_update(SCID, 0, T0 + 500, T0 + 650, fee_base_msat=5) == "duplicate"
    graph = h.live_graph(T0 + 800)
    assert graph[SCID]["directions"][0][3] == 5  # type: ignore[index]
    ds = delta(h, T0 + 610, T0 + 800, reminder_period=8 * DAY, reminder_slot=8 * DAY)
    assert ds.updates == []  # the client synced after the newest update was seen: nothing to send


@pytest.mark.parametrize("version", [1, 2])
def test_nothing_new_is_a_valid_empty_blob(version: int) -> None:
    h = random_history(7, days=10)
    R = 1_750_000_000 + 5 * DAY
    ds = delta(h, R, R)
    assert not ds.updates and not ds.announcements and not ds.node_ids
    assert encode(ds, version) == encode_empty(MAINNET, R, version)


def test_reminders_rotate_through_buckets_and_cover_every_channel_in_one_period() -> None:
    h = GossipHistory(MAINNET)
    scids = [SCID + (i << 40) + i for i in range(200)]
    for s in scids:
        channel(h, s, T0)
    params = DeltaParams(reminder_period=4 * DAY, reminder_slot=6 * 3600)
    reminded: set[int] = set()
    t = T0 + 3600
    for _ in range(16):  # four days in six-hour steps
        ds = compute_delta(h.delta_input(t, t + 6 * 3600), params)
        assert all(u.incremental and not u.flags & f.VALUE_FIELDS_MASK for u in ds.updates)
        reminded.update(u.scid for u in ds.updates)
        t += 6 * 3600
        # keep the channels alive on the network
        for s in scids:
            for d in (0, 1):
                h.add_channel_update(s, d, t, t)
    assert reminded == set(scids)
    one_slot = compute_delta(h.delta_input(t, t + 6 * 3600), params)
    assert 0 < len({u.scid for u in one_slot.updates}) < 40  # about 1/16 of them


def test_node_details_are_sent_when_new_or_changed() -> None:
    h = GossipHistory(MAINNET)
    channel(h, SCID, T0)
    ipv4 = bytes([1, 10, 0, 0, 1, 0x26, 0x07])
    h.add_node_announcement(A, T0, T0, features=b"\x88", addresses=ipv4)
    h.add_node_announcement(B, T0, T0, features=b"\x88", addresses=ipv4)
    h.add_node_announcement(C, T0, T0, features=b"\x02")  # no channel: never sent
    full = delta(h, 0, T0 + 60)
    assert C not in full.node_ids
    assert all(d is not None and d.features == b"\x88" for d in full.node_details)
    moved = bytes([1, 10, 0, 0, 2, 0x26, 0x07])
    h.add_node_announcement(A, T0 + 100, T0 + 100, features=b"\x88", addresses=moved)
    ds = delta(h, T0 + 60, T0 + 200, reminder_period=8 * DAY, reminder_slot=8 * DAY)
    assert ds.node_ids == [A]
    details = ds.node_details[0]
    assert details is not None and details.addresses == [moved] and details.features is None
    blob = decode(encode(ds, 2))
    assert blob.nodes[0].addresses == [moved] and blob.nodes[0].features is None
    assert decode(encode(ds, 1)).nodes[0].node_id == A  # v1: keys only


def test_output_is_deterministic_whatever_the_insertion_order() -> None:
    def build(order_seed: int) -> bytes:
        pick = random.Random(0)
        chans = [(SCID + (i << 40), *sorted(pick.sample(node_keys(6, "det"), 2))) for i in range(12)]
        rng = random.Random(order_seed)
        h = GossipHistory(MAINNET)
        rng.shuffle(chans)
        for scid, n1, n2 in chans:
            h.add_channel_announcement(scid, n1, n2, T0)
        ups = [(scid, d) for scid, _, _ in chans for d in (0, 1)]
        rng.shuffle(ups)
        for scid, d in ups:
            h.add_channel_update(scid, d, T0, T0, fee_proportional_millionths=(scid >> 40) % 3)
        return encode(delta(h, 0, T0 + 10), 2)

    assert build(1) == build(2) == build(3)


def test_blobs_respect_client_rules() -> None:
    h = random_history(3, days=20)
    for last, R in [(0, 1_750_000_000 + 10 * DAY), (1_750_000_000 + 9 * DAY, 1_750_000_000 + 10 * DAY)]:
        ds = delta(h, last, R)
        for ann in ds.announcements:
            assert ds.node_ids[ann.node_1] < ds.node_ids[ann.node_2]
        keys = [(u.scid, u.direction) for u in ds.updates]
        assert keys == sorted(set(keys))  # one record per (scid, direction), in order
        assert all(u.flags & 0x03 == u.flags & (f.UPDATE_DISABLED | f.UPDATE_DIRECTION) for u in ds.updates)
        blob = decode(encode(ds, 2))
        assert 0 < blob.timestamp <= R


def test_unsorted_announcements_are_never_sent() -> None:
    h = GossipHistory(MAINNET)
    channel(h, SCID, T0, n1=B, n2=A)  # B > A: invalid order (validation keeps these out)
    channel(h, SCID + (1 << 40), T0)
    ds = delta(h, 0, T0 + 10)
    assert [a.scid for a in ds.announcements] == [SCID + (1 << 40)]
    assert all(u.scid != SCID for u in ds.updates)


def test_capacity_is_only_sent_when_updates_respect_it() -> None:
    h = GossipHistory(MAINNET)
    h.add_channel_announcement(SCID, A, B, T0, funding_sats=1000)
    h.add_channel_update(SCID, 0, T0, T0, htlc_maximum_msat=1_000_000)
    h.add_channel_update(SCID, 1, T0, T0, htlc_maximum_msat=2_000_000)  # above 1000 sat
    h.add_channel_announcement(SCID + 1, C, D, T0, funding_sats=5000)
    for d in (0, 1):
        h.add_channel_update(SCID + 1, d, T0, T0, htlc_maximum_msat=4_000_000)
    ds = delta(h, 0, T0 + 10)
    assert [a.funding_sats for a in ds.announcements] == [None, 5000]
    assert decode(encode(ds, 2)).announcements[1].funding_sats == 5000


def test_a_channel_spent_before_R_is_not_in_the_graph() -> None:
    """The model's side of migration 008 (lookup's SQL does the same): spent at S, the channel is in
    the graph of every R <= S and in none after; nothing is sent for it any more."""
    h = GossipHistory(MAINNET)
    channel(h, SCID, T0)
    h.mark_closed(SCID, T0 + 1000)
    h.mark_closed(SCID, T0 + 5000)  # the first time counts
    assert SCID in h.live_graph(T0 + 1000)
    assert SCID not in h.live_graph(T0 + 1001)
    ds = delta(h, T0 + 500, T0 + 2000, reminder_period=8 * DAY, reminder_slot=8 * DAY)
    assert ds.updates == [] and ds.announcements == []
