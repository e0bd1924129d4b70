"""What persistence checks before storing a message: structure and chain, never signatures.

Signatures are the producer's job (a downloader or ``lnsync import`` verifies them before
sending); persistence repeats the cheap checks so that nothing malformed or for another chain can
reach the store whoever sent it. This is the one place to change when the checks change.
"""

from __future__ import annotations

from lnsync.gossip import messages as m
from lnsync.gossip.errors import WrongChain


def check_message(raw: bytes, chain_hash: bytes) -> m.GossipMessage:
    """Decode ``raw`` and check its chain; raises a GossipError (with a ``reason``) otherwise."""
    msg = m.decode_gossip(raw)
    if not isinstance(msg, m.NodeAnnouncement) and msg.chain_hash != chain_hash:
        kind = "channel_announcement" if isinstance(msg, m.ChannelAnnouncement) else "channel_update"
        raise WrongChain(f"{kind} for chain {msg.chain_hash.hex()}, expected {chain_hash.hex()}")
    return msg
