"""The proof a snapshot generation passes before it is published (issue 26). Pure code.

A blob proves itself by what a client does with it: :mod:`lnsync.rgs.client` (the model of LDK's
client) applies it, and the graph the client then holds is compared with the store's live graph at
the blob's reference time R, read independently of the engine's input:

* **full**: the full snapshot applied to an empty client gives exactly the live graph at R: the
  same channels, both directions' fields, capacities (v2) and node features and addresses (v2);
* **chain**: a client that applied the full snapshot of an earlier R' and then the scoped blob
  served to it holds every live channel at R as the full snapshot gives it, capacities aside
  (channels that died since R' may linger: RGS has no removals, clients forget them), and nothing
  that was not in either.

Each check returns the first difference (smallest short channel id first, then node ids) or None.

Two models of the client do the applying. Given the live graph as an :class:`Expected` (what the
snapshotter and lookup pass), the columnar one (:mod:`lnsync.rgs.columnar`, NumPy over whole
blobs) decides first; when it finds a difference, or a blob outside what it models, the object
model (:mod:`lnsync.rgs.client`, the one checked against the real LDK) applies the blob again and
its verdict and first difference are the ones returned. Given a :class:`Graph`, only the object
model runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lnsync.gossip.scid import scid_str
from lnsync.rgs import columnar
from lnsync.rgs.client import ClientError, RgsClient
from lnsync.rgs.decode import RgsDecodeError
from lnsync.rgs.delta import announced_funding, node_addresses
from lnsync.rgs.model import DeltaInput

log = logging.getLogger(__name__)

# A direction as the client holds it: disabled, cltv, htlc_min, fee_base, fee_prop, htlc_max.
Values = tuple[bool, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class ChannelFacts:
    node_1: bytes
    node_2: bytes
    capacity_sats: int | None  # None: not sent (v1, unknown, or not respected by an update)
    directions: tuple[Values, Values]


@dataclass(frozen=True, slots=True)
class NodeFacts:
    features: bytes
    addresses: tuple[bytes, ...]


@dataclass
class Graph:
    """A routing graph as a client holds it: channels with both directions, announced nodes."""

    channels: dict[int, ChannelFacts]
    nodes: dict[bytes, NodeFacts]  # v2 only (v1 carries no node details)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a blob failed its proof: the check, the version and the first difference."""

    check: str  # "full" or "chain"
    version: int
    what: str  # "channel 800000x1x0", "node 02ab…", or "blob"
    expected: object
    actual: object

    def __str__(self) -> str:
        return f"v{self.version} {self.check}: {self.what}: {describe(self.expected, self.actual)}"


DIRECTION_FIELDS = (
    "disabled",
    "cltv_expiry_delta",
    "htlc_minimum_msat",
    "fee_base_msat",
    "fee_proportional_millionths",
    "htlc_maximum_msat",
)


def describe(expected: object, actual: object) -> str:
    """One short line: how what the client holds differs from what it should."""
    if actual is None:
        return "missing from the client's graph"
    if expected is None:
        return "held by the client but not in the live graph"
    if isinstance(expected, ChannelFacts) and isinstance(actual, ChannelFacts):
        parts = [
            f"{name} {want!r} expected, {got!r} held"
            for name, want, got in (
                ("node_1", expected.node_1.hex(), actual.node_1.hex()),
                ("node_2", expected.node_2.hex(), actual.node_2.hex()),
                ("capacity_sats", expected.capacity_sats, actual.capacity_sats),
            )
            if want != got
        ]
        for d in (0, 1):
            for name, want_v, got_v in zip(
                DIRECTION_FIELDS, expected.directions[d], actual.directions[d], strict=True
            ):
                if want_v != got_v:
                    parts.append(f"direction {d} {name} {want_v} expected, {got_v} held")
        return "; ".join(parts)
    if isinstance(expected, NodeFacts) and isinstance(actual, NodeFacts):
        parts = []
        if expected.features != actual.features:
            parts.append(f"features {expected.features.hex()} expected, {actual.features.hex()} held")
        if expected.addresses != actual.addresses:
            parts.append(
                f"addresses differ ({len(expected.addresses)} expected, {len(actual.addresses)} held)"
            )
        return "; ".join(parts)
    return f"{expected} expected, {actual}"


def expected_graph(inp: DeltaInput, version: int) -> Graph:
    """What an empty client holds after the full snapshot of ``inp``'s live graph in ``version``
    (``inp`` is read for T = 0; its ``changes`` are not used)."""
    ch, nodes = inp.channels, inp.nodes
    funding = announced_funding(ch).tolist() if version == 2 else [-1] * len(ch)
    channels: dict[int, ChannelFacts] = {}
    for i, scid in enumerate(ch.scid.tolist()):
        channels[int(scid)] = ChannelFacts(
            nodes.node_id[int(ch.node_1[i])],
            nodes.node_id[int(ch.node_2[i])],
            funding[i] if funding[i] >= 0 else None,
            (ch.direction_values(i, 0), ch.direction_values(i, 1)),
        )
    announced: dict[bytes, NodeFacts] = {}
    if version == 2:
        for j, node_id in enumerate(nodes.node_id):
            if nodes.has_announcement[j]:
                announced[node_id] = NodeFacts(nodes.features[j], tuple(node_addresses(nodes.addresses[j])))
    return Graph(channels, announced)


def client_graph(client: RgsClient) -> Graph:
    """The graph ``client`` holds (channels with both directions)."""
    channels: dict[int, ChannelFacts] = {}
    for scid, chan in client.channels.items():
        d0, d1 = chan.directions
        if d0 is not None and d1 is not None:
            channels[scid] = ChannelFacts(
                chan.node_1, chan.node_2, chan.capacity_sats, (d0.values(), d1.values())
            )
    nodes = {n: NodeFacts(i.features, tuple(i.addresses)) for n, i in client.node_info.items()}
    return Graph(channels, nodes)


def first_difference(
    expected: Graph, actual: Graph, lingering: frozenset[int] = frozenset(), capacities: bool = True
) -> tuple[str, object, object] | None:
    """(what, expected, actual) of the first difference, or None. Channels in ``lingering`` may be
    held beyond ``expected`` (they died after the client got them); without ``capacities`` those
    are not compared; nodes are compared where ``expected`` has them."""
    for scid in sorted(expected.channels.keys() | actual.channels.keys()):
        want, got = expected.channels.get(scid), actual.channels.get(scid)
        if want == got or (want is None and scid in lingering):
            continue
        if (
            not capacities
            and want is not None
            and got is not None
            and (want.node_1, want.node_2, want.directions) == (got.node_1, got.node_2, got.directions)
        ):
            continue
        return f"channel {scid_str(scid)}", want, got
    for node_id in sorted(expected.nodes):
        want_node, got_node = expected.nodes[node_id], actual.nodes.get(node_id)
        if want_node != got_node:
            return f"node {node_id.hex()}", want_node, got_node
    return None


@dataclass
class Expected:
    """The live graph at R for one version, as both models compare it: columns (ascending by
    short channel id) for :mod:`lnsync.rgs.columnar`, and the :class:`Graph` of the object model,
    built only when that model is asked."""

    inp: DeltaInput
    version: int
    scid: columnar.U64
    node_1: columnar.Keys
    node_2: columnar.Keys
    capacity: columnar.I64  # -1: none (v1, or not sent)
    disabled: np.ndarray  # (n, 2)
    values: np.ndarray  # (n, 2, 5) uint64
    nodes: dict[bytes, tuple[bytes, tuple[bytes, ...]]]  # v2: announced nodes' features, addresses
    _graph: Graph | None = field(default=None, repr=False)

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = expected_graph(self.inp, self.version)
        return self._graph


# How a test names either form of the live graph.
Form = Callable[[DeltaInput, int], "Graph | Expected"]


def expect(inp: DeltaInput, version: int) -> Expected:
    """:func:`expected_graph` in columns (the object form follows on demand)."""
    ch, nodes = inp.channels, inp.nodes
    order = np.argsort(ch.scid, kind="stable")
    ids = np.array(nodes.node_id, dtype="S33") if len(nodes.node_id) else np.zeros(0, "S33")
    capacity = announced_funding(ch) if version == 2 else np.full(len(ch), -1, np.int64)
    values = np.stack(
        [
            ch.cltv_expiry_delta.astype(np.uint64),
            ch.htlc_minimum_msat.astype(np.uint64),
            ch.fee_base_msat.astype(np.uint64),
            ch.fee_proportional_millionths.astype(np.uint64),
            ch.htlc_maximum_msat.astype(np.uint64),
        ],
        axis=2,
    )
    announced: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}
    if version == 2:
        for j in np.nonzero(nodes.has_announcement)[0].tolist():
            announced[nodes.node_id[j]] = (nodes.features[j], tuple(node_addresses(nodes.addresses[j])))
    return Expected(
        inp, version, ch.scid[order], ids[ch.node_1[order]], ids[ch.node_2[order]], capacity[order],
        ch.disabled[order], values[order], announced,
    )  # fmt: skip


def _nodes_match(expected: Expected, state: columnar.State) -> bool:
    held = state.nodes
    for node_id, want in expected.nodes.items():
        got = held.get(node_id)
        if got is None or got[0] != want[0] or got[1] != want[1]:
            return False
    return True


def _complete(state: columnar.State) -> columnar.State:
    """``state``'s channels with both directions (itself when all have both: no copy)."""
    keep = state.complete()
    return state if keep.all() else state._take(keep)


def _full_matches(expected: Expected, state: columnar.State) -> bool:
    s = _complete(state)
    return (
        np.array_equal(s.scid, expected.scid)
        and np.array_equal(s.node_1, expected.node_1)
        and np.array_equal(s.node_2, expected.node_2)
        and np.array_equal(s.capacity, expected.capacity)
        and np.array_equal(s.disabled, expected.disabled)
        and np.array_equal(s.values, expected.values)
        and _nodes_match(expected, s)
    )


def _chain_matches(expected: Expected, state: columnar.State, lingering: columnar.U64) -> bool:
    s = _complete(state)
    row = np.searchsorted(s.scid, expected.scid)
    if np.any(row >= len(s.scid)):
        return False
    return bool(
        np.array_equal(s.scid[row], expected.scid)
        and np.array_equal(s.node_1[row], expected.node_1)
        and np.array_equal(s.node_2[row], expected.node_2)
        and np.array_equal(s.disabled[row], expected.disabled)
        and np.array_equal(s.values[row], expected.values)
        and np.all(np.isin(s.scid[~np.isin(s.scid, expected.scid)], lingering))
        and _nodes_match(expected, s)
    )


def full_state(blob: bytes, chain_hash: bytes, reference_time: int) -> columnar.State:
    """What an empty client holds after the full snapshot ``blob`` at R (columnar.Unusual if the
    columnar model does not decide it)."""
    return columnar.apply(columnar.State.empty(), columnar.decode(blob), chain_hash, reference_time)


def _disagreement(check: str, version: int, reason: str) -> None:
    log.warning("v%d %s proof: the columnar model saw %s; the client model decides", version, check, reason)


def _apply(client: RgsClient, blob: bytes, now: int, check: str, version: int) -> Failure | None:
    try:
        client.apply(blob, now)
    except (ClientError, RgsDecodeError) as exc:
        return Failure(check, version, "blob", "accepted", f"rejected ({exc})")
    return None


def prove_full(
    blob: bytes,
    expected: Graph | Expected,
    chain_hash: bytes,
    reference_time: int,
    version: int,
    keep: dict[int, columnar.State] | None = None,
) -> Failure | None:
    """The full snapshot ``blob`` applied to an empty client at R gives ``expected``. With
    ``keep``, a blob the columnar model proves leaves the client's state in ``keep[version]``
    (the base of the next generation's chain)."""
    if isinstance(expected, Expected):
        try:
            state = full_state(blob, chain_hash, reference_time)
            if _full_matches(expected, state):
                if keep is not None:
                    keep[version] = state
                return None
            reason = "a difference"
        except columnar.Unusual as exc:
            reason = str(exc)
        failure = _prove_full_objects(blob, expected.graph, chain_hash, reference_time, version)
        if failure is None:
            _disagreement("full", version, reason)
        return failure
    return _prove_full_objects(blob, expected, chain_hash, reference_time, version)


def _prove_full_objects(
    blob: bytes, expected: Graph, chain_hash: bytes, reference_time: int, version: int
) -> Failure | None:
    client = RgsClient(chain_hash)
    failed = _apply(client, blob, reference_time, "full", version)
    if failed is not None:
        return failed
    diff = first_difference(expected, client_graph(client))
    return None if diff is None else Failure("full", version, *diff)


def prove_chain(
    base: bytes,
    base_time: int,
    scoped: bytes,
    expected: Graph | Expected,
    chain_hash: bytes,
    reference_time: int,
    version: int,
    base_state: columnar.State | None = None,
) -> Failure | None:
    """The full snapshot ``base`` (applied at ``base_time``, its R), then ``scoped`` (applied at R)
    give ``expected``, up to channels of ``base`` that died since, and up to capacities: a client
    keeps the capacity of a channel's first announcement (RGS never re-announces a channel it
    holds), so one learnt later (a funding check, an archive's amount) or withdrawn (an update
    beyond it) differs legitimately; what it costs the client, an update it refuses, shows in the
    directions. ``base_state``: what the columnar model holds after ``base`` (kept from when it was
    proven), instead of applying it again."""
    if isinstance(expected, Expected):
        try:
            if base_state is None:
                base_state = full_state(base, chain_hash, base_time)
            lingering = base_state.scid[base_state.complete()]
            state = columnar.prune(base_state, reference_time)
            state = columnar.apply(state, columnar.decode(scoped), chain_hash, reference_time)
            if _chain_matches(expected, state, lingering):
                return None
            reason = "a difference"
        except columnar.Unusual as exc:
            reason = str(exc)
        failure = _prove_chain_objects(
            base, base_time, scoped, expected.graph, chain_hash, reference_time, version
        )
        if failure is None:
            _disagreement("chain", version, reason)
        return failure
    return _prove_chain_objects(base, base_time, scoped, expected, chain_hash, reference_time, version)


def _prove_chain_objects(
    base: bytes,
    base_time: int,
    scoped: bytes,
    expected: Graph,
    chain_hash: bytes,
    reference_time: int,
    version: int,
) -> Failure | None:
    client = RgsClient(chain_hash)
    failed = _apply(client, base, base_time, "chain", version)
    if failed is not None:
        return failed
    lingering = frozenset(client_graph(client).channels)
    client.prune(reference_time)  # what LDK does hourly in between
    failed = _apply(client, scoped, reference_time, "chain", version)
    if failed is not None:
        return failed
    diff = first_difference(expected, client_graph(client), lingering, capacities=False)
    return None if diff is None else Failure("chain", version, *diff)
