"""A pure model of how LDK's RGS client applies blobs to its network graph.

It follows rust-lightning's ``lightning-rapid-gossip-sync`` processing and the graph rules it relies
on (backdating by 7 days, pruning after 14, duplicate and out-of-date handling, incremental updates
skipped without prior data). The interop tests check it against the real LDK (npm
``lightningdevkit``); the fast property tests then use it to check thousands of sync sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lnsync.rgs import format as f
from lnsync.rgs.decode import DecodedBlob, decode

MAX_VALUE_MSAT = 21_000_000 * 100_000_000 * 1000


class ClientError(Exception):
    """The client rejected the whole blob (LDK returns an error). ``kind`` names the reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Direction:
    last_update: int
    disabled: bool
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    htlc_maximum_msat: int

    def values(self) -> tuple[bool, int, int, int, int, int]:
        return (
            self.disabled,
            self.cltv_expiry_delta,
            self.htlc_minimum_msat,
            self.fee_base_msat,
            self.fee_proportional_millionths,
            self.htlc_maximum_msat,
        )


@dataclass
class Channel:
    node_1: bytes
    node_2: bytes
    features: bytes
    capacity_sats: int | None
    announcement_received_time: int
    directions: list[Direction | None] = field(default_factory=lambda: [None, None])


@dataclass
class NodeInfo:
    features: bytes
    addresses: list[bytes]
    last_update: int


@dataclass
class ClientOptions:
    # LDK >= 0.2 reads the v2 announcement tail as the channel capacity; 0.1.x ignores it.
    parse_funding: bool = True
    # rust-lightning main (2026) rejects announcements whose node ids are not ascending.
    require_sorted_node_ids: bool = True


class RgsClient:
    def __init__(self, chain_hash: bytes, options: ClientOptions | None = None) -> None:
        self.chain_hash = chain_hash
        self.options = options or ClientOptions()
        self.channels: dict[int, Channel] = {}
        self.node_info: dict[bytes, NodeInfo] = {}
        self.last_sync: int | None = None

    # -- applying ---------------------------------------------------------------------------------

    def apply(self, data: bytes, now: int | None) -> int:
        """Apply a blob; return its timestamp. Raises ClientError like LDK's fatal errors."""
        blob = decode(data)  # RgsDecodeError for malformed input, as LDK's DecodeError
        if blob.chain_hash != self.chain_hash:
            raise ClientError(
                "chain", "Rapid Gossip Sync data's chain hash does not match the network graph's"
            )
        if now is not None and blob.timestamp < max(0, now - f.CLIENT_PRUNE_AFTER):
            raise ClientError("stale", "Rapid Gossip Sync data is more than two weeks old")
        backdated = max(0, blob.timestamp - f.CLIENT_BACKDATE)
        node_ids = [n.node_id for n in blob.nodes]

        for ann in blob.announcements:
            n1, n2 = node_ids[ann.node_1], node_ids[ann.node_2]
            if n1 == n2:
                raise ClientError("self_channel", "Channel announcement node had a channel with itself")
            if self.options.require_sorted_node_ids and n1 > n2:
                raise ClientError("unsorted", "node_ids in channel_announcements must be sorted")
            if ann.scid in self.channels:
                continue  # duplicate: ignored, its announcement time is not refreshed
            capacity = ann.funding_sats if self.options.parse_funding else None
            self.channels[ann.scid] = Channel(n1, n2, ann.features, capacity, backdated)

        self._apply_nodes(blob, backdated)
        if not blob.updates:
            return blob.timestamp
        self._apply_updates(blob, backdated)
        self.last_sync = blob.timestamp
        if now is not None:
            self.prune(now)
        return blob.timestamp

    def _apply_nodes(self, blob: DecodedBlob, backdated: int) -> None:
        if blob.version != 2:
            return
        live = self._nodes_with_channels()
        for node in blob.nodes:
            if not (node.reminder or node.addresses is not None or node.features is not None):
                continue
            if node.node_id not in live:
                continue  # "No existing channels for node_announcement"
            old = self.node_info.get(node.node_id)
            if old is not None and old.last_update >= backdated:
                continue  # older or same timestamp: ignored
            self.node_info[node.node_id] = NodeInfo(
                features=node.features if node.features is not None else (old.features if old else b""),
                addresses=node.addresses if node.addresses is not None else (old.addresses if old else []),
                last_update=backdated,
            )

    def _apply_updates(self, blob: DecodedBlob, backdated: int) -> None:
        assert blob.defaults is not None
        for upd in blob.updates:
            if upd.extra is not None:
                continue
            chan = self.channels.get(upd.scid)
            d = upd.direction
            if upd.incremental:
                prior = chan.directions[d] if chan is not None else None
                if prior is None:
                    continue  # no prior data for this direction: skipped
                base = prior.values()[1:]
            else:
                base = blob.defaults
            values = tuple(v if v is not None else b for v, b in zip(upd.values, base, strict=True))
            if chan is None:
                continue  # unknown channel: the graph refuses the update
            cltv, hmin, fbase, fprop, hmax = values
            if hmax > MAX_VALUE_MSAT:
                continue
            if chan.capacity_sats is not None and hmax > chan.capacity_sats * 1000:
                continue
            existing = chan.directions[d]
            if existing is not None and existing.last_update >= backdated:
                continue  # not newer: ignored as duplicate gossip
            chan.directions[d] = Direction(backdated, upd.disabled, cltv, hmin, fbase, fprop, hmax)

    def prune(self, now: int) -> None:
        """What LDK does after each sync and hourly in the background."""
        if now < f.CLIENT_PRUNE_AFTER:
            return
        cutoff = now - f.CLIENT_PRUNE_AFTER
        for scid in list(self.channels):
            chan = self.channels[scid]
            for d in (0, 1):
                direction = chan.directions[d]
                if direction is not None and direction.last_update < cutoff:
                    chan.directions[d] = None
            if (
                chan.directions[0] is None or chan.directions[1] is None
            ) and chan.announcement_received_time < cutoff:
                del self.channels[scid]
        live = self._nodes_with_channels()
        for node_id in list(self.node_info):
            if node_id not in live:
                del self.node_info[node_id]

    def _nodes_with_channels(self) -> set[bytes]:
        out: set[bytes] = set()
        for chan in self.channels.values():
            out.add(chan.node_1)
            out.add(chan.node_2)
        return out

    # -- comparing --------------------------------------------------------------------------------

    def graph(self) -> dict[int, dict[str, object]]:
        """Channels with both directions, in the shape of GossipHistory.live_graph()."""
        out: dict[int, dict[str, object]] = {}
        for scid, chan in self.channels.items():
            d0, d1 = chan.directions
            if d0 is None or d1 is None:
                continue
            out[scid] = {
                "node_1": chan.node_1,
                "node_2": chan.node_2,
                "directions": [d0.values(), d1.values()],
            }
        return out
