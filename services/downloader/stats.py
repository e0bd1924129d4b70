"""What one downloader knows about its peer, as plain counters.

The session and pipeline update these; ``GetStatus`` and the Prometheus collector
(:mod:`services.downloader.metrics`) read them. Keeping them plain (no Prometheus objects) lets
tests assert on them directly and lets several downloaders live in one process.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lnsync.gossip import control as c
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q

MESSAGE_NAMES: dict[int, str] = {
    c.WARNING: "warning",
    c.INIT: "init",
    c.ERROR: "error",
    c.PING: "ping",
    c.PONG: "pong",
    m.CHANNEL_ANNOUNCEMENT: "channel_announcement",
    m.NODE_ANNOUNCEMENT: "node_announcement",
    m.CHANNEL_UPDATE: "channel_update",
    q.QUERY_SHORT_CHANNEL_IDS: "query_short_channel_ids",
    q.REPLY_SHORT_CHANNEL_IDS_END: "reply_short_channel_ids_end",
    q.QUERY_CHANNEL_RANGE: "query_channel_range",
    q.REPLY_CHANNEL_RANGE: "reply_channel_range",
    q.GOSSIP_TIMESTAMP_FILTER: "gossip_timestamp_filter",
}


def message_name(msg_type: int) -> str:
    """A bounded label: known names, else "unknown_odd" / "unknown_even" (never the number)."""
    return MESSAGE_NAMES.get(msg_type) or ("unknown_odd" if msg_type % 2 else "unknown_even")


# Connection states, as GetStatus reports them.
CONNECTING = "connecting"
INITIAL_SYNC = "initial_sync"
SYNCED = "synced"
BACKOFF = "backoff"
STATES = (CONNECTING, INITIAL_SYNC, SYNCED, BACKOFF)


@dataclass(eq=False)
class PeerStats:
    peer_id: str
    address: str
    connected: bool = False
    state: str = CONNECTING
    initial_sync_complete: bool = False
    received: Counter[str] = field(default_factory=Counter)  # every message, by type name
    forwarded: Counter[str] = field(default_factory=Counter)  # verified gossip sent on, by type
    invalid: Counter[str] = field(default_factory=Counter)  # by GossipError.reason or policy label
    duplicates: int = 0  # gossip already verified (this connection or an earlier one)
    pending: Counter[str] = field(default_factory=Counter)  # held / released / expired / overflow
    peer_messages: Counter[str] = field(default_factory=Counter)  # "error" / "warning" from the peer
    disconnects: Counter[str] = field(default_factory=Counter)  # by reason
    bytes_in: int = 0  # over all connections
    bytes_out: int = 0
    last_message_at: float = 0.0  # unix time of the last message of any type
    connections: int = 0  # successful handshakes
    attempts: int = 0  # connection attempts
    throttled_seconds: float = 0.0
    unacked: Callable[[], int] = lambda: 0  # the sink's window, read live
    pending_now: Callable[[], int] = lambda: 0  # updates held for their announcement, read live
    rejected: Callable[[], Mapping[str, int]] = dict  # refused by persistence, by reason, read live

    @property
    def reconnects(self) -> int:
        return max(0, self.attempts - 1)

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())

    def message_received(self, msg_type: int) -> None:
        self.received[message_name(msg_type)] += 1
        self.last_message_at = time.time()
