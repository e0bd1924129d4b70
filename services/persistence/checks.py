"""What persistence checks before storing a message: structure, chain and fields, never signatures.

Signatures are the producer's job (a downloader or ``lnsync import`` verifies them before
sending); persistence repeats the cheap checks of :mod:`lnsync.gossip.validate` so that nothing
malformed, for another chain or with impossible fields can reach the store whoever sent it. Like
LDK, it keeps a channel_update whose htlc_minimum_msat exceeds its htlc_maximum_msat (BOLT 7 only
tells readers not to route through it). This is the one place to change when the checks change.
"""

from __future__ import annotations

from lnsync.gossip import messages as m
from lnsync.gossip.validate import check_channel_announcement, check_channel_update, check_node_announcement


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
