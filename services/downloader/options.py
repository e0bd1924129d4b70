"""The downloader's tunables in one place: defaults for real peers, from the settings where the
operator may change them, and overridable by tests that cannot wait minutes for a timeout."""

from __future__ import annotations

from dataclasses import dataclass, field

from lnsync.config import DownloaderSettings
from lnsync.gossip import features as feat
from services.downloader.sync import SyncSettings

# What we offer in init: gossip_queries, optional. We open no channels, so nothing else matters.
OUR_FEATURES = feat.from_bits([feat.GOSSIP_QUERIES + 1])


@dataclass(frozen=True)
class PeerOptions:
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    init_timeout: float = 10.0
    # A read that waits longer than this (while we are not holding the peer back) drops the peer.
    stall_timeout: float = 300.0
    # Idle this long, we ping; a pong must come within ping_timeout.
    ping_interval: float = 60.0
    ping_timeout: float = 30.0
    # Writes are pongs and queries: tiny. A peer that does not read them this long is dead.
    write_timeout: float = 30.0
    # Watchdog period: timers, pending expiry, sync decisions.
    tick: float = 0.25
    # Gossip with a timestamp from here on is dumped (0: the whole graph) and then relayed live.
    first_timestamp: int = 0
    # Messages per second read from the peer; excess waits (0 disables). Real dumps run at a few
    # thousand per second; verification costs ~0.1 ms a message, so this caps a flooder's CPU.
    rate_limit: float = 20_000.0
    rate_burst: float = 40_000.0
    # Invalid messages in invalid_window seconds before the peer is dropped.
    max_invalid: int = 1000
    invalid_window: float = 60.0
    # Junk (the same message again on one connection, unknown odd types, unsolicited replies)
    # in junk_window seconds before the peer is dropped as a flooder.
    max_junk: int = 10_000
    junk_window: float = 60.0
    # Bytes of pongs we send: at most pong_bytes_rate a second on average, in bursts of
    # pong_bytes_burst (LDK pings often, with small pongs, and stops sending gossip to a peer that
    # does not answer). A ping beyond that is not answered and counts as junk; without the limit
    # every ping asking for 65,531 bytes was 65 kB of upload.
    pong_bytes_rate: float = 32_768.0
    pong_bytes_burst: float = 262_144.0
    # Updates waiting for their channel's announcement: how many, how long.
    pending_max: int = 20_000
    pending_ttl: float = 600.0
    # Recently seen messages remembered, so a reconnect's replayed dump is neither verified nor
    # forwarded again (a mainnet graph is ~170k messages; the newest half is always kept).
    recent_cache: int = 400_000
    backoff_min: float = 1.0
    backoff_max: float = 300.0
    # A connection this long (or one that brought new gossip) resets the backoff.
    healthy_after: float = 60.0
    # While caught up, tell persistence so this often (the point a restart resumes from).
    caught_up_interval: float = 60.0
    sync: SyncSettings = field(default_factory=SyncSettings)

    @classmethod
    def from_settings(cls, d: DownloaderSettings) -> PeerOptions:
        return cls(
            stall_timeout=float(d.stall_timeout),
            ping_interval=min(60.0, d.stall_timeout / 3),
            ping_timeout=min(30.0, d.stall_timeout / 3),
            backoff_min=d.backoff_min,
            backoff_max=max(d.backoff_max, d.backoff_min),
            caught_up_interval=d.caught_up_interval,
            sync=SyncSettings(settle_seconds=d.sync_settle, grace=min(1.0, d.sync_settle / 2)),
        )
