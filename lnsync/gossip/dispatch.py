"""Decode any message a gossip peer may send, by its 2-byte type (BOLT 1 "it's ok to be odd").

Known types decode to their dataclass; an unknown *odd* type comes back as
:class:`IgnoredMessage` (BOLT 1: ignore it; the caller may count it); an unknown *even* type
raises :class:`~lnsync.gossip.errors.UnknownMessageType` (BOLT 1: close the connection).
Gossip messages are only decoded here, not validated: see :mod:`lnsync.gossip.validate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lnsync.gossip import control as c
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.errors import MalformedMessage, UnknownMessageType


@dataclass(frozen=True, slots=True)
class IgnoredMessage:
    """A message of an unknown odd type."""

    msg_type: int
    raw: bytes


Message = (
    c.Init
    | c.ErrorMessage
    | c.Ping
    | c.Pong
    | m.ChannelAnnouncement
    | m.ChannelUpdate
    | m.NodeAnnouncement
    | q.QueryShortChannelIds
    | q.ReplyShortChannelIdsEnd
    | q.QueryChannelRange
    | q.ReplyChannelRange
    | q.GossipTimestampFilter
    | IgnoredMessage
)

DECODERS: dict[int, Callable[[bytes], Message]] = {
    c.WARNING: c.decode_warning,
    c.INIT: c.decode_init,
    c.ERROR: c.decode_error,
    c.PING: c.decode_ping,
    c.PONG: c.decode_pong,
    m.CHANNEL_ANNOUNCEMENT: m.decode_channel_announcement,
    m.NODE_ANNOUNCEMENT: m.decode_node_announcement,
    m.CHANNEL_UPDATE: m.decode_channel_update,
    q.QUERY_SHORT_CHANNEL_IDS: q.decode_query_short_channel_ids,
    q.REPLY_SHORT_CHANNEL_IDS_END: q.decode_reply_short_channel_ids_end,
    q.QUERY_CHANNEL_RANGE: q.decode_query_channel_range,
    q.REPLY_CHANNEL_RANGE: q.decode_reply_channel_range,
    q.GOSSIP_TIMESTAMP_FILTER: q.decode_gossip_timestamp_filter,
}


def decode_message(raw: bytes) -> Message:
    """Decode one whole wire message (type first); raises only GossipError subclasses."""
    msg_type = m.message_type(raw)
    if len(raw) > m.MAX_MESSAGE_SIZE:
        raise MalformedMessage(f"message of {len(raw)} bytes is longer than a BOLT 8 frame")
    decoder = DECODERS.get(msg_type)
    if decoder is not None:
        return decoder(raw)
    if msg_type % 2:
        return IgnoredMessage(msg_type, raw)
    raise UnknownMessageType(msg_type)
