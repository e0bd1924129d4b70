"""The demo peer's gossip: a bundled real-topology graph, re-timed to now and kept changing.

The bundled dataset (``data/cln2026_top50_resigned_mainnet.bin``, see ``data/SOURCE.md``) is real
mainnet topology re-signed with keys anyone can derive (node secret = sha256(b"node-<i>")), but its
timestamps are from early 2026, and stores and clients prune gossip that old. So the demo peer
re-signs every channel_update and node_announcement with its timestamps squeezed, in the same order,
into the last two days, and then keeps changing a few channels' fees every few seconds so that
deltas appear.

The current messages are written to a state file after every change: a restarted demo serves the
bytes it served before, so the stack behind it does not store the whole graph a second time.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from collections.abc import Iterable
from pathlib import Path

from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.archive import ArchiveFormat, read_archive
from lnsync.gossip.scid import scid_str
from lnsync.gossip.signing import pubkey_of, signed_message

# Shipped inside the package (an installed lnsync and the image have no data/ folder); data/ in the
# repository links to it.
DEFAULT_DATASET = Path(__file__).resolve().parent / "cln2026_top50_resigned_mainnet.bin"
# The bundled dataset's nodes are numbered 0..49; see data/SOURCE.md. A larger dataset made the
# same way (the whole re-signed mainnet topology: 17,324 nodes, or a part of it) numbers its nodes
# below MAX_DATASET_NODES.
DATASET_NODES = 50
MAX_DATASET_NODES = 100_000
# Re-timed gossip spans this window, ending a minute ago.
RECENT_WINDOW = 2 * 86400
# A saved state whose newest message is older than this is re-timed from the dataset again.
STALE_AFTER = 7 * 86400
_U16 = struct.Struct(">H")


class DemoDataError(Exception):
    """The dataset or the state file cannot be served (unreadable, or keys we cannot derive)."""


def dataset_secrets(count: int = DATASET_NODES) -> dict[bytes, bytes]:
    """node id -> secret key for the dataset's nodes (the derivation data/SOURCE.md documents)."""
    secrets = (hashlib.sha256(f"node-{i}".encode()).digest() for i in range(count))
    return {pubkey_of(s): s for s in secrets}


def resign_update(cu: m.ChannelUpdate, secret: bytes, timestamp: int, fee_proportional: int) -> bytes:
    """``cu`` with a new timestamp and proportional fee, signed again (every other byte kept)."""
    body = m.encode_channel_update_body(
        cu.chain_hash, cu.short_channel_id, timestamp, cu.channel_flags, cu.cltv_expiry_delta,
        cu.htlc_minimum_msat, cu.fee_base_msat, fee_proportional, cu.htlc_maximum_msat, cu.message_flags,
    ) + cu.excess  # fmt: skip
    return signed_message(m.CHANNEL_UPDATE, (secret,), body)


def resign_node(na: m.NodeAnnouncement, secret: bytes, timestamp: int) -> bytes:
    body = (
        m.encode_node_announcement_body(
            na.node_id,
            timestamp,
            features=na.features,
            rgb_color=na.rgb_color,
            alias=na.alias,
            addresses=na.addresses,
        )
        + na.excess
    )
    return signed_message(m.NODE_ANNOUNCEMENT, (secret,), body)


def secrets_for(node_ids: set[bytes]) -> dict[bytes, bytes]:
    """The dataset secrets of ``node_ids``: the first DATASET_NODES, then on until every one is
    found (or MAX_DATASET_NODES were tried: the rest then fail the graph's check)."""
    secrets = dataset_secrets()
    missing = node_ids - secrets.keys()
    i = DATASET_NODES
    while missing and i < MAX_DATASET_NODES:
        secret = hashlib.sha256(f"node-{i}".encode()).digest()
        node_id = pubkey_of(secret)
        secrets[node_id] = secret
        missing.discard(node_id)
        i += 1
    return secrets


def _node_ids(raws: list[bytes]) -> set[bytes]:
    """The node ids of ``raws``' channel and node announcements."""
    nodes: set[bytes] = set()
    for raw in raws:
        msg = m.decode_gossip(raw)
        if isinstance(msg, m.ChannelAnnouncement):
            nodes.update((msg.node_id_1, msg.node_id_2))
        elif isinstance(msg, m.NodeAnnouncement):
            nodes.add(msg.node_id)
    return nodes


class DemoGraph:
    """The latest announcement, updates and node announcements of every channel and node."""

    def __init__(self, secrets: dict[bytes, bytes]) -> None:
        self.secrets = secrets
        self.channels: dict[int, m.ChannelAnnouncement] = {}
        self.updates: dict[tuple[int, int], m.ChannelUpdate] = {}
        self.nodes: dict[bytes, m.NodeAnnouncement] = {}

    # -- loading and saving -------------------------------------------------------------------------

    @classmethod
    def from_messages(cls, raws: Iterable[bytes], secrets: dict[bytes, bytes]) -> DemoGraph:
        g = cls(secrets)
        for raw in raws:
            msg = m.decode_gossip(raw)
            if isinstance(msg, m.ChannelAnnouncement):
                g.channels[msg.short_channel_id] = msg
            elif isinstance(msg, m.ChannelUpdate):
                key = (msg.short_channel_id, msg.direction)
                old = g.updates.get(key)
                if old is None or old.timestamp < msg.timestamp:
                    g.updates[key] = msg
            else:
                old_node = g.nodes.get(msg.node_id)
                if old_node is None or old_node.timestamp < msg.timestamp:
                    g.nodes[msg.node_id] = msg
        g._check()
        return g

    @classmethod
    def read(cls, path: Path, secrets: dict[bytes, bytes] | None = None) -> DemoGraph:
        """The graph in ``path``; without ``secrets``, those of as many dataset nodes as it has."""
        try:
            with path.open("rb") as f:
                raws = [r.raw for r in read_archive(f, ArchiveFormat.U16)]
            if secrets is None:
                secrets = secrets_for(_node_ids(raws))
            return cls.from_messages(raws, secrets)
        except DemoDataError:
            raise
        except Exception as exc:  # any parse failure: the file is not something we can serve
            raise DemoDataError(f"{path}: {exc}") from None

    @classmethod
    def load(cls, dataset: Path, state: Path | None, now: int) -> tuple[DemoGraph, bool]:
        """The saved state if it is recent enough, else the dataset re-timed to ``now``.

        Returns the graph and whether it came from the state file.
        """
        if state is not None and state.exists():
            try:
                saved = cls.read(state)
                if saved.newest_timestamp() >= now - STALE_AFTER:
                    return saved, True
            except DemoDataError:
                pass  # a damaged state file is replaced by a fresh one from the dataset
        graph = cls.read(dataset)
        graph.retime(now)
        return graph, False

    def _check(self) -> None:
        if not self.channels:
            raise DemoDataError("no channel_announcement in the demo data")
        for scid, d in self.updates:
            if scid not in self.channels:
                raise DemoDataError(f"channel_update for unannounced channel {scid_str(scid)}")
            if self._origin(scid, d) not in self.secrets:
                raise DemoDataError(f"no key for the origin of {scid_str(scid)}/{d}")
        for node_id in self.nodes:
            if node_id not in self.secrets:
                raise DemoDataError(f"no key for node {node_id.hex()}")

    def save(self, path: Path) -> None:
        """Write the current messages as ``[u16 length][message]`` records, atomically."""
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            for raw in self.messages():
                f.write(_U16.pack(len(raw)) + raw)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    # -- changing -----------------------------------------------------------------------------------

    def _origin(self, scid: int, direction: int) -> bytes:
        ann = self.channels[scid]
        return ann.node_id_2 if direction else ann.node_id_1

    def newest_timestamp(self) -> int:
        stamps = [u.timestamp for u in self.updates.values()] + [n.timestamp for n in self.nodes.values()]
        return max(stamps, default=0)

    def retime(self, now: int) -> None:
        """Re-sign everything with timestamps mapped, order kept, into the last RECENT_WINDOW."""
        stamps = [u.timestamp for u in self.updates.values()] + [n.timestamp for n in self.nodes.values()]
        oldest, newest = min(stamps), max(stamps)
        span = max(1, newest - oldest)
        end = now - 60

        def mapped(ts: int) -> int:
            return end - (newest - ts) * RECENT_WINDOW // span

        for key, cu in self.updates.items():
            raw = resign_update(
                cu, self.secrets[self._origin(*key)], mapped(cu.timestamp), cu.fee_proportional_millionths
            )
            self.updates[key] = m.decode_channel_update(raw)
        for node_id, na in self.nodes.items():
            self.nodes[node_id] = m.decode_node_announcement(
                resign_node(na, self.secrets[node_id], mapped(na.timestamp))
            )

    def change_fees(self, count: int, now: int, rng: random.Random) -> list[bytes]:
        """New channel_updates for ``count`` random directions: another proportional fee, a fresh
        timestamp (always later than the update it replaces). Returns the new messages."""
        keys = rng.sample(sorted(self.updates), min(count, len(self.updates)))
        out = []
        for key in keys:
            cu = self.updates[key]
            fee = max(0, round(cu.fee_proportional_millionths * rng.uniform(0.8, 1.25)) + rng.randint(-3, 3))
            if fee == cu.fee_proportional_millionths:
                fee += 1
            raw = resign_update(cu, self.secrets[self._origin(*key)], max(now, cu.timestamp + 1), fee)
            self.updates[key] = m.decode_channel_update(raw)
            out.append(raw)
        return out

    # -- serving ------------------------------------------------------------------------------------

    def channel_messages(self, scid: int) -> list[bytes]:
        """The channel's announcement and its updates (what one scid query brings)."""
        out = [self.channels[scid].raw]
        out.extend(self.updates[(scid, d)].raw for d in (0, 1) if (scid, d) in self.updates)
        return out

    def messages(self) -> list[bytes]:
        """Everything, in dump order: each channel with its updates, then the node announcements."""
        out: list[bytes] = []
        for scid in sorted(self.channels):
            out.extend(self.channel_messages(scid))
        out.extend(n.raw for n in self.nodes.values())
        return out

    def matching(self, flt: q.GossipTimestampFilter) -> list[bytes]:
        """What a ``gossip_timestamp_filter`` asks for (BOLT 7): updates and node announcements in
        the window, each channel's announcement before its first update (an announcement counts as
        dated by its updates)."""
        out: list[bytes] = []
        for scid in sorted(self.channels):
            ups = [u.raw for d in (0, 1) if (u := self.updates.get((scid, d))) and flt.matches(u.timestamp)]
            if ups:
                out.append(self.channels[scid].raw)
                out.extend(ups)
        out.extend(n.raw for n in self.nodes.values() if flt.matches(n.timestamp))
        return out

    def scids_in_blocks(self, first_block: int, end_block: int) -> list[int]:
        """Channels funded in blocks [first_block, end_block), ascending."""
        return [s for s in sorted(self.channels) if first_block <= s >> 40 < end_block]

    def node_messages(self, node_ids: Iterable[bytes]) -> list[bytes]:
        return [self.nodes[n].raw for n in node_ids if n in self.nodes]
