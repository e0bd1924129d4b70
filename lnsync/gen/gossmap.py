"""Decoder for Core Lightning's compressed gossmap (``GOSSMAP_COMPRESSv1``) and its node map.

Core Lightning ships the real mainnet topology and policies in this form (``devtools/gossmap-compress.c``).
After gzip, the file is ``b"GOSSMAP_COMPRESSv1\\0"`` followed by BigSize numbers:

1. ``channel_count``, then each channel's start node index, then each channel's end node index;
2. disabled directions as ``channel_index * 2 + direction``, ended by the value ``2 * channel_count``;
3. capacities (satoshis): a template (``count`` then the distinct values) and one template index per
   channel;
4. five per-direction arrays in the same template form (one index per direction of each channel,
   direction 0 first): htlc_minimum_msat, htlc_maximum_msat (0 means the capacity, 1 means 99 % of
   it), fee_base_msat, fee_proportional_millionths, cltv_expiry_delta.

Nodes are numbered by decreasing channel count, so index 0 is the best-connected node. Directions
are BOLT directions of the *real* graph: direction 0 is the update from whichever endpoint has the
smaller real node id (the node map gives those ids). A disabled direction may also be one that had
no channel_update at all. Disabled directions carry zeros for their policy.

The node map is text, one ``index:node_id_hex:alias`` line per node.
"""

from __future__ import annotations

import gzip
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

from lnsync import bigsize

HEADER = b"GOSSMAP_COMPRESSv1\0"


class GossmapError(ValueError):
    """A compressed gossmap that cannot be decoded (says where)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """One direction's channel_update fields as the snapshot holds them."""

    disabled: bool
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int


@dataclass(frozen=True, slots=True)
class Gossmap:
    """The decoded snapshot: channel ``i`` joins ``start[i]`` and ``end[i]``; its direction ``d``
    policy is ``policies[2 * i + d]`` (d is the real BOLT direction)."""

    start: list[int]
    end: list[int]
    capacity_sat: list[int]
    policies: list[Policy]

    @property
    def channel_count(self) -> int:
        return len(self.start)

    @property
    def node_count(self) -> int:
        return 1 + max(max(self.start, default=-1), max(self.end, default=-1))


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def number(self) -> int:
        try:
            value, self.offset = bigsize.decode(self.data, self.offset)
        except bigsize.BigSizeError as exc:
            raise GossmapError(f"{exc} at offset {self.offset}") from None
        return value

    def numbers(self, count: int) -> list[int]:
        return [self.number() for _ in range(count)]

    def templated(self, count: int, what: str) -> list[int]:
        at = self.offset
        n_distinct = self.number()
        if n_distinct > len(self.data) - self.offset:  # each value takes at least one byte
            raise GossmapError(f"{what} template of {n_distinct} values larger than the file at offset {at}")
        distinct = self.numbers(n_distinct)
        out = []
        for _ in range(count):
            at = self.offset
            idx = self.number()
            if idx >= len(distinct):
                raise GossmapError(f"{what} index {idx} out of range at offset {at}")
            out.append(distinct[idx])
        return out


def decode_gossmap(compressed: bytes) -> Gossmap:
    """Decode a (gzip-compressed) GOSSMAP_COMPRESSv1 file."""
    try:
        data = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as exc:
        raise GossmapError(f"not gzip data: {exc}") from None
    if not data.startswith(HEADER):
        raise GossmapError("missing GOSSMAP_COMPRESSv1 header")
    r = _Reader(data, len(HEADER))
    n = r.number()
    if n > len(data):  # every channel takes at least one byte per array
        raise GossmapError(f"channel count {n} larger than the file")
    start, end = r.numbers(n), r.numbers(n)
    if any(i >= 2 * n for i in start) or any(i >= 2 * n for i in end):
        raise GossmapError("node index larger than two per channel")
    disabled: set[int] = set()
    while (v := r.number()) < 2 * n:
        disabled.add(v)
    caps = r.templated(n, "capacity")
    hmin = r.templated(2 * n, "htlc_min")
    hmax = r.templated(2 * n, "htlc_max")
    base = r.templated(2 * n, "basefee")
    prop = r.templated(2 * n, "propfee")
    delay = r.templated(2 * n, "delay")
    if r.offset != len(data):
        raise GossmapError(f"{len(data) - r.offset} trailing bytes after the delay array")
    policies = []
    for j in range(2 * n):
        cap_msat = caps[j // 2] * 1000
        maximum = cap_msat if hmax[j] == 0 else cap_msat * 99 // 100 if hmax[j] == 1 else hmax[j]
        policies.append(Policy(j in disabled, delay[j], hmin[j], maximum, base[j], prop[j]))
    return Gossmap(start, end, caps, policies)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: bytes
    alias: str


def parse_node_map(text: str) -> dict[int, NodeInfo]:
    """Parse ``index:node_id:alias`` lines (aliases may themselves contain colons)."""
    out: dict[int, NodeInfo] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise GossmapError(f"node map line {lineno} is not index:node_id:alias")
        try:
            out[int(parts[0])] = NodeInfo(bytes.fromhex(parts[1]), parts[2])
        except ValueError:
            raise GossmapError(f"node map line {lineno} has a bad index or node id") from None
    return out


def load(gossmap_path: Path, node_map_path: Path) -> tuple[Gossmap, dict[int, NodeInfo]]:
    """Read the compressed snapshot and its xz node map from disk."""
    gm = decode_gossmap(gossmap_path.read_bytes())
    text = lzma.decompress(node_map_path.read_bytes()).decode("utf-8", errors="replace")
    return gm, parse_node_map(text)
