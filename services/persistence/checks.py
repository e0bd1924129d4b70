"""What persistence checks before storing a message: structure, chain and fields, never signatures.

Signatures are the producer's job (a downloader or ``lnsync import`` verifies them before
sending); persistence repeats the cheap checks of :mod:`lnsync.gossip.validate` so that nothing
malformed, for another chain or with impossible fields can reach the store whoever sent it. Like
LDK, it keeps a channel_update whose htlc_minimum_msat exceeds its htlc_maximum_msat (BOLT 7 only
tells readers not to route through it). This is the one place to change when the checks change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lnsync.gossip import messages as m
from lnsync.gossip.validate import (
    channel_updates_pass,
    check_channel_announcement,
    check_channel_update,
    check_node_announcement,
)
from lnsync.rgs import rules


def check_message(raw: bytes, chain_hash: bytes) -> m.GossipMessage:
    """Decode and check ``raw``; raises a GossipError (whose ``reason`` names the problem)."""
    msg = m.decode_gossip(raw)
    if isinstance(msg, m.ChannelUpdate):
        check_channel_update(msg, chain_hash, None, reject_htlc_min_above_max=False)
    elif isinstance(msg, m.ChannelAnnouncement):
        check_channel_announcement(msg, chain_hash, verify_signatures=False)
    else:
        check_node_announcement(msg, verify_signature=False)
    return msg


def check_updates(
    raws: Sequence[bytes], chain_hash: bytes, received_us: Sequence[int], now_us: int
) -> list[m.ChannelUpdate | None]:
    """The common case of a request, column-wise: each of ``raws`` that is a channel_update of
    exactly CHANNEL_UPDATE_SIZE bytes, passes :func:`check_message` and is not dated too far after
    its receipt (``rules.too_far_ahead`` at ``rules.judged_at``) is decoded; every other gives
    None, for :func:`check_message` one by one, which names what is wrong."""
    out: list[m.ChannelUpdate | None] = [None] * len(raws)
    sizes = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))
    at = np.flatnonzero(sizes == m.CHANNEL_UPDATE_SIZE)
    if not len(at):
        return out
    picked = raws if len(at) == len(raws) else [raws[i] for i in at.tolist()]
    joined = b"".join(picked)
    records = m.channel_update_records(joined)
    received = rules.judged_at(np.array(received_us, dtype=np.int64)[at], now_us)
    ok = (
        (records["type"] == m.CHANNEL_UPDATE)
        & channel_updates_pass(records, chain_hash)
        & ~rules.too_far_ahead(records["timestamp"].astype(np.int64), received)
    )
    for i, good, update in zip(
        at.tolist(), ok.tolist(), m.decode_channel_updates(joined, picked), strict=True
    ):
        if good:
            out[i] = update
    return out
