"""The graph the generator builds on: Core Lightning's 2026-02-03 mainnet snapshot, or a connected
part of it.

Policies are attached to the node that publishes them, not to a BOLT direction: the generator gives
every node a fresh key, which changes which endpoint is ``node_id_1``, so directions are worked out
again from the new keys.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

from lnsync.gen.gossmap import Gossmap, NodeInfo, Policy, load

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "cln-gossmap"
DEFAULT_GOSSMAP = DATA_DIR / "gossip-store-2026-02-03.compressed"
DEFAULT_NODE_MAP = DATA_DIR / "gossip-store-2026-02-03-node-map.xz"


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel of the snapshot: ``index`` is its position there (stable across scales)."""

    index: int
    node_a: int
    node_b: int
    capacity_sat: int
    policy_a: Policy  # published by node_a
    policy_b: Policy  # published by node_b


@dataclass(frozen=True, slots=True)
class Topology:
    """Channels and the aliases of their nodes; node numbers are the snapshot's (0 = most channels)."""

    channels: list[Channel]
    aliases: dict[int, str]

    @property
    def nodes(self) -> list[int]:
        return sorted(self.aliases)


def from_gossmap(gm: Gossmap, node_map: dict[int, NodeInfo]) -> Topology:
    """Every channel of the snapshot, each direction's policy attached to its publisher.

    The snapshot's direction 0 is published by the endpoint with the smaller *real* node id, which
    the node map gives.
    """
    channels = []
    for i, (a, b) in enumerate(zip(gm.start, gm.end, strict=True)):
        if a == b or a not in node_map or b not in node_map:
            continue
        first, second = gm.policies[2 * i], gm.policies[2 * i + 1]
        a_is_node_1 = node_map[a].node_id < node_map[b].node_id
        pa, pb = (first, second) if a_is_node_1 else (second, first)
        channels.append(Channel(i, a, b, gm.capacity_sat[i], pa, pb))
    nodes = {n for c in channels for n in (c.node_a, c.node_b)}
    return Topology(channels, {n: node_map[n].alias for n in sorted(nodes)})


@functools.lru_cache(maxsize=4)
def load_snapshot(gossmap_path: Path = DEFAULT_GOSSMAP, node_map_path: Path = DEFAULT_NODE_MAP) -> Topology:
    """The whole snapshot (cached: decoding it takes about a second)."""
    return from_gossmap(*load(gossmap_path, node_map_path))


def select(topology: Topology, scale: float) -> Topology:
    """About ``scale`` of the channels, as a connected graph among the best-connected nodes.

    Scale 1 (or more) keeps the whole snapshot, small islands included. Below 1, nodes are taken in
    the snapshot's order (most channels first) until the channels among them reach the target; then
    only the largest connected component of that graph is kept.
    """
    if not scale > 0:
        raise ValueError("scale must be positive")
    if scale >= 1:
        return topology
    target = max(1, math.ceil(scale * len(topology.channels)))
    by_rank = sorted(topology.channels, key=lambda c: max(c.node_a, c.node_b))
    limit = max(by_rank[target - 1].node_a, by_rank[target - 1].node_b)
    kept = [c for c in by_rank if max(c.node_a, c.node_b) <= limit]

    parent: dict[int, int] = {}

    def root(n: int) -> int:
        parent.setdefault(n, n)
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for c in kept:
        parent[root(c.node_a)] = root(c.node_b)
    sizes: dict[int, int] = {}
    for c in kept:
        sizes[root(c.node_a)] = sizes.get(root(c.node_a), 0) + 1
    main = max(sizes, key=lambda r: (sizes[r], -r))
    channels = sorted((c for c in kept if root(c.node_a) == main), key=lambda c: c.index)
    nodes = {n for c in channels for n in (c.node_a, c.node_b)}
    return Topology(channels, {n: topology.aliases[n] for n in sorted(nodes)})
