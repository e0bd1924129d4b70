"""The column-wise channel_update decode and checks (a receiver's hot path) against the per-message
ones they twin: decode_channel_update, check_channel_update, and persistence's check_message with
rules.too_far_ahead."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lnsync.gossip import messages as m
from lnsync.gossip.errors import GossipError
from lnsync.gossip.validate import MAX_VALUE_MSAT, channel_updates_pass, check_channel_update
from lnsync.rgs import rules
from lnsync.rgs.rules import judged_at
from services.persistence.checks import check_message, check_updates
from tests.gossip_helpers import MAINNET, chains, signatures, u8, u16, u32, u64

NOW_US = 1_800_000_000_000_000

_updates = st.builds(
    lambda prefix, signature, chain, scid, ts, mflags, cflags, cltv, hmin, fbase, fprop, hmax, excess: (
        prefix
        + signature
        + m.encode_channel_update_body(chain, scid, ts, cflags, cltv, hmin, fbase, fprop, hmax, mflags)
        + excess
    ),
    st.sampled_from([b"\x01\x02"] * 6 + [b"\x01\x01", b"\x00\x02"]),
    signatures,
    chains | st.just(MAINNET),
    u64,
    # timestamps near the receipt times below, so that "too far ahead" goes both ways
    u32 | st.sampled_from([NOW_US // 1_000_000 + rules.MAX_AHEAD + d for d in (-1, 0, 1, 2)]),
    st.sampled_from([0, 1, 2, 3, 5]) | u8,
    u8,
    u16,
    u64,
    u32,
    u32,
    st.sampled_from([MAX_VALUE_MSAT, MAX_VALUE_MSAT + 1, 0]) | u64,
    st.just(b"") | st.just(b"") | st.binary(max_size=3),
)
_requests = st.lists(
    st.tuples(
        _updates | st.binary(max_size=140),
        st.sampled_from([0, -5, NOW_US, NOW_US + 10**9]) | st.integers(1, 2 * NOW_US),
    ),
    min_size=1,
    max_size=30,
)


def _one_by_one(raw: bytes, received: int) -> m.GossipMessage | None:
    """What persistence's per-message path keeps (None: rejected)."""
    try:
        msg = check_message(raw, MAINNET)
    except GossipError:
        return None
    received = received if received > 0 else NOW_US
    if isinstance(msg, m.ChannelUpdate) and rules.too_far_ahead(
        msg.timestamp, min(received, NOW_US) // 1_000_000
    ):
        return None
    return msg


@settings(max_examples=300, deadline=None)
@given(request=_requests)
def test_column_wise_checks_keep_what_the_per_message_checks_keep(request: list[tuple[bytes, int]]) -> None:
    raws = [r for r, _ in request]
    got = check_updates(raws, MAINNET, [t for _, t in request], NOW_US)
    for raw, received, fast in zip(raws, (t for _, t in request), got, strict=True):
        slow = _one_by_one(raw, received)
        if fast is not None:
            assert fast == slow  # what it decodes is what the per-message path decodes
        elif len(raw) == m.CHANNEL_UPDATE_SIZE:
            # The fast path leaves only what the per-message path rejects or is not a channel_update.
            assert not isinstance(slow, m.ChannelUpdate)


@settings(max_examples=300, deadline=None)
@given(
    raws=st.lists(
        _updates.filter(lambda r: len(r) == m.CHANNEL_UPDATE_SIZE and r[:2] == b"\x01\x02"),
        min_size=1,
        max_size=20,
    )
)
def test_records_and_field_checks_match_the_decoder_and_check_channel_update(raws: list[bytes]) -> None:
    joined = b"".join(raws)
    records = m.channel_update_records(joined)
    passed = channel_updates_pass(records, MAINNET)
    for raw, record, decoded, ok in zip(
        raws, records, m.decode_channel_updates(joined, raws), passed, strict=True
    ):
        msg = m.decode_channel_update(raw)
        assert decoded == msg
        assert record["type"] == m.CHANNEL_UPDATE
        for name in m.ChannelUpdate._fields[:-1]:
            value = record[name]
            assert (value.tobytes() if isinstance(value, np.void) else int(value)) == getattr(msg, name)
        try:
            check_channel_update(msg, MAINNET, None, reject_htlc_min_above_max=False)
        except GossipError:
            assert not ok
        else:
            assert ok


def test_a_plain_channel_update_takes_the_column_wise_path() -> None:
    from tests.gossip_helpers import channel_update

    raws = [channel_update(timestamp=NOW_US // 1_000_000), channel_update(excess=b"\x00")]
    got = check_updates(raws, MAINNET, [NOW_US, NOW_US], NOW_US)
    assert got[0] == m.decode_channel_update(raws[0])
    assert got[1] is None  # fields after htlc_maximum_msat: one by one


@settings(max_examples=300, deadline=None)
@given(
    received=st.lists(st.integers(-(1 << 40), 1 << 52), max_size=20),
    now=st.integers(1, 1 << 52),
)
def test_the_time_a_message_is_judged_at_is_one_rule_for_both_paths(received: list[int], now: int) -> None:
    """The column-wise path judges a request's receipt times as an array, the per-message path one
    by one: the same rule (the producer's time, now when it gives none, never after now)."""
    column = judged_at(np.array(received, dtype=np.int64), now).tolist()
    assert column == [judged_at(r, now) for r in received]
    for r, t in zip(received, column, strict=True):
        assert t == (min(r, now) if r > 0 else now) // 1_000_000
