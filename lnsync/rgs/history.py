"""An in-memory gossip store with exactly the semantics of lnsync's PostgreSQL store.

This is the executable specification of docs/architecture.md ("The store"): persistence's SQL and
lookup's queries are tested against it, the RGS tests and benchmarks use it directly, and it
needs no database. Messages are added with their ``seen`` time; :meth:`GossipHistory.delta_input`
summarises the store for a client's (T, R).

Rules (per channel direction; node announcements follow the same pattern):

* one row per distinct (scid, direction, timestamp); a duplicate only lowers ``seen`` (earliest wins);
* the direction's *latest* is its row with the highest gossip timestamp; a row whose timestamp is not
  above the latest when it arrives is *stale* (stored, never visible to clients, change mask 0);
* when a row becomes the latest, its change mask says which fields differ from the previous latest
  (0x7E for a direction's first row, or when it revives a direction that was dead: its previous
  latest was older than 14 days when it arrived); the direction is *alive since* that first/reviving
  row's ``seen``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lnsync.gossip import messages as m
from lnsync.rgs import format as f
from lnsync.rgs import rules
from lnsync.rgs.model import (
    DIRECTION_CHANGE_BITS,
    ChannelTable,
    DeltaInput,
    NodeTable,
)

_NEVER = 1 << 62  # closed_at of a channel not known to be closed


@dataclass
class _Direction:
    scid: int
    direction: int
    latest: int  # row index of the latest update
    alive_row: int  # row index of the update the direction has been alive since
    chain: list[int] = field(default_factory=list)  # rows that became the latest, in order


@dataclass
class _Channel:
    scid: int
    node_id_1: bytes
    node_id_2: bytes
    features: bytes
    funding_sats: int | None
    seen: int
    closed_at: int | None = None  # when it was found no longer funded on chain (whole seconds)


@dataclass
class _Node:
    latest: int  # row index into the node rows
    first_row: int
    chain: list[int] = field(default_factory=list)


class GossipHistory:
    def __init__(self, chain_hash: bytes) -> None:
        self.chain_hash = chain_hash
        self.channels: dict[int, _Channel] = {}
        self._dirs: dict[tuple[int, int], int] = {}
        self._dir_state: list[_Direction] = []
        # Update rows, columnar (cheap to turn into NumPy arrays).
        self._u_dir = array("q")
        self._u_ts = array("q")
        self._u_seen = array("q")
        self._u_mask = array("B")
        self._u_life = array("B")  # 1 where the row started a life of its direction
        self._u_policy: list[rules.Policy] = []
        self._u_key: dict[tuple[int, int, int], int] = {}
        # Node announcement rows.
        self._nodes: dict[bytes, _Node] = {}
        self._n_node = array("q")
        self._n_ts = array("q")
        self._n_seen = array("q")
        self._n_mask = array("B")
        self._n_data: list[tuple[bytes, bytes]] = []  # (features, addresses)
        self._n_raw: list[bytes] = []  # the message (for the tie rule, rules.node_tie_winner)
        self._n_key: dict[tuple[bytes, int], int] = {}
        self._node_index: dict[bytes, int] = {}
        self._node_list: list[bytes] = []
        self._cache: dict[str, object] = {}

    # -- adding messages ---------------------------------------------------------------------------

    def add_channel_announcement(
        self,
        scid: int,
        node_id_1: bytes,
        node_id_2: bytes,
        seen: int,
        features: bytes = b"",
        funding_sats: int | None = None,
    ) -> bool:
        """Store an announcement; returns False for a duplicate (whose seen may lower the stored one)."""
        existing = self.channels.get(scid)
        if existing is not None:
            existing.seen = min(existing.seen, seen)
            if existing.funding_sats is None and funding_sats is not None:
                existing.funding_sats = funding_sats
            return False
        self.channels[scid] = _Channel(scid, node_id_1, node_id_2, features, funding_sats, seen)
        for node in (node_id_1, node_id_2):
            self._node_idx(node)
        self._cache.clear()
        return True

    def add_channel_update(
        self,
        scid: int,
        direction: int,
        timestamp: int,
        seen: int,
        *,
        disabled: bool = False,
        cltv_expiry_delta: int = 40,
        htlc_minimum_msat: int = 1000,
        fee_base_msat: int = 1000,
        fee_proportional_millionths: int = 1,
        htlc_maximum_msat: int = 10**9,
    ) -> str:
        """Store an update; returns "stored", "stale" or "duplicate"."""
        self._cache.clear()
        key = (scid, direction, timestamp)
        existing = self._u_key.get(key)
        policy: rules.Policy = (
            int(disabled),
            cltv_expiry_delta,
            htlc_minimum_msat,
            fee_base_msat,
            fee_proportional_millionths,
            htlc_maximum_msat,
        )
        dkey = (scid, direction)
        d_index = self._dirs.get(dkey)
        state = self._dir_state[d_index] if d_index is not None else None
        latest = (self._u_ts[state.latest], self._u_policy[state.latest]) if state is not None else None
        decision = rules.decide_update(latest, timestamp, seen, policy, duplicate=existing is not None)
        if existing is not None:
            self._u_seen[existing] = min(self._u_seen[existing], seen)
            return decision.outcome.value
        row = len(self._u_ts)
        self._u_life.append(int(decision.starts_life))
        self._u_ts.append(timestamp)
        self._u_seen.append(seen)
        self._u_mask.append(decision.change_mask)
        self._u_policy.append(policy)
        self._u_key[key] = row
        if state is None:
            d_index = len(self._dir_state)
            self._dirs[dkey] = d_index
            state = _Direction(scid, direction, latest=row, alive_row=row, chain=[row])
            self._dir_state.append(state)
        elif decision.outcome is rules.Outcome.STORED:
            if decision.starts_life:
                state.alive_row = row
            state.latest = row
            state.chain.append(row)
        assert d_index is not None
        self._u_dir.append(d_index)
        return decision.outcome.value

    def add_node_announcement(
        self,
        node_id: bytes,
        timestamp: int,
        seen: int,
        features: bytes = b"",
        addresses: bytes = b"",
        raw: bytes = b"",
    ) -> str:
        self._cache.clear()
        key = (node_id, timestamp)
        existing = self._n_key.get(key)
        node = self._nodes.get(node_id)
        latest = None
        if node is not None:
            latest = (self._n_ts[node.latest], *self._n_data[node.latest], self._n_raw[node.latest])
        decision = rules.decide_node(
            latest, timestamp, features, addresses, raw, duplicate=existing is not None
        )
        if existing is not None:
            self._n_seen[existing] = min(self._n_seen[existing], seen)
            if decision.replaces:
                self._n_data[existing] = (features, addresses)
                self._n_raw[existing] = raw
                self._n_mask[existing] |= decision.change_mask
            return decision.outcome.value
        mask, outcome = decision.change_mask, decision.outcome.value
        row = len(self._n_ts)
        self._n_node.append(self._node_idx(node_id))
        self._n_ts.append(timestamp)
        self._n_seen.append(seen)
        self._n_mask.append(mask)
        self._n_data.append((features, addresses))
        self._n_raw.append(raw)
        self._n_key[key] = row
        if node is None:
            self._nodes[node_id] = _Node(latest=row, first_row=row, chain=[row])
        elif outcome == "stored":
            node.latest = row
            node.chain.append(row)
        return outcome

    def mark_closed(self, scid: int, at: int) -> None:
        """Record that the channel was found no longer funded on chain at ``at`` (the first time counts)."""
        channel = self.channels[scid]
        if channel.closed_at is None:
            channel.closed_at = at
            self._cache.clear()

    def add_message(self, raw: bytes, seen: int, funding_sats: int | None = None) -> str:
        """Decode a wire gossip message and store it (no signature checks: the producer did them);
        like persistence, refuses ("rejected") an update or node_announcement dated too far ahead."""
        msg = m.decode_gossip(raw)
        if not isinstance(msg, m.ChannelAnnouncement) and rules.too_far_ahead(msg.timestamp, seen):
            return "rejected"
        if isinstance(msg, m.ChannelAnnouncement):
            stored = self.add_channel_announcement(
                msg.short_channel_id, msg.node_id_1, msg.node_id_2, seen, msg.features, funding_sats
            )
            return "stored" if stored else "duplicate"
        if isinstance(msg, m.ChannelUpdate):
            return self.add_channel_update(
                msg.short_channel_id, msg.direction, msg.timestamp, seen,
                disabled=msg.disabled, cltv_expiry_delta=msg.cltv_expiry_delta,
                htlc_minimum_msat=msg.htlc_minimum_msat, fee_base_msat=msg.fee_base_msat,
                fee_proportional_millionths=msg.fee_proportional_millionths,
                htlc_maximum_msat=msg.htlc_maximum_msat,
            )  # fmt: skip
        return self.add_node_announcement(msg.node_id, msg.timestamp, seen, msg.features, msg.addresses, raw)

    def _node_idx(self, node_id: bytes) -> int:
        idx = self._node_index.get(node_id)
        if idx is None:
            idx = self._node_index[node_id] = len(self._node_list)
            self._node_list.append(node_id)
        return idx

    # -- reading -----------------------------------------------------------------------------------

    @property
    def update_count(self) -> int:
        return len(self._u_ts)

    def _columns(self) -> dict[str, np.ndarray]:
        cols = self._cache.get("cols")
        if cols is None:
            seen = np.frombuffer(self._u_seen, dtype=np.int64).copy()
            order = np.argsort(seen, kind="stable")
            nseen = np.frombuffer(self._n_seen, dtype=np.int64).copy()
            norder = np.argsort(nseen, kind="stable")
            cols = {
                "u_seen_sorted": seen[order],
                "u_dir_sorted": np.frombuffer(self._u_dir, dtype=np.int64)[order],
                "u_mask_sorted": np.frombuffer(self._u_mask, dtype=np.uint8)[order],
                "n_seen_sorted": nseen[norder],
                "n_node_sorted": np.frombuffer(self._n_node, dtype=np.int64)[norder],
                "n_mask_sorted": np.frombuffer(self._n_mask, dtype=np.uint8)[norder],
            }
            self._cache["cols"] = cols
        return cols  # type: ignore[return-value]

    def _direction_at(self, d: _Direction, R: int) -> tuple[int, int] | None:
        """(latest row, alive-since seen) of a direction considering only rows seen before R."""
        seen = self._u_seen
        if seen[d.latest] < R and seen[d.alive_row] < R:
            return d.latest, seen[d.alive_row]
        latest = None
        for row in reversed(d.chain):
            if seen[row] < R:
                latest = row
                break
        if latest is None:
            return None
        # Walk forward to find the life that `latest` belongs to.
        alive = d.chain[0]
        for row in d.chain:
            if self._u_life[row]:
                alive = row
            if row == latest:
                break
        return latest, seen[alive]

    def _graph(self) -> dict[str, Any]:
        """Columnar view of the announced channels and the current direction and node states,
        rebuilt only after the store changes (queries are then vectorised over it)."""
        g = self._cache.get("graph")
        if g is None:
            scids = sorted(self.channels)
            chans = [self.channels[s] for s in scids]
            dirs = self._dirs
            g = {
                "scid": np.array(scids, dtype=np.uint64),
                "chans": chans,
                "seen": np.array([c.seen for c in chans], dtype=np.int64),
                "closed_at": np.array(
                    [_NEVER if c.closed_at is None else c.closed_at for c in chans], dtype=np.int64
                ),
                "features": [c.features for c in chans],
                "funding": np.array(
                    [-1 if c.funding_sats is None else c.funding_sats for c in chans], dtype=np.int64
                ),
                "node_1": np.array([self._node_index[c.node_id_1] for c in chans], dtype=np.int64),
                "node_2": np.array([self._node_index[c.node_id_2] for c in chans], dtype=np.int64),
                "dirs": np.array(
                    [(dirs.get((s, 0), -1), dirs.get((s, 1), -1)) for s in scids], dtype=np.int64
                ).reshape(len(scids), 2),
                "d_latest": np.array([d.latest for d in self._dir_state], dtype=np.int64),
                "d_alive": np.array([d.alive_row for d in self._dir_state], dtype=np.int64),
                "r_ts": np.frombuffer(self._u_ts, dtype=np.int64).copy(),
                "r_seen": np.frombuffer(self._u_seen, dtype=np.int64).copy(),
                "r_policy": np.array(self._u_policy, dtype=np.uint64).reshape(len(self._u_policy), 6),
                "n_seen": np.frombuffer(self._n_seen, dtype=np.int64).copy(),
                "node_latest": np.array(
                    [self._nodes[n].latest if n in self._nodes else -1 for n in self._node_list],
                    dtype=np.int64,
                ),
                "node_first": np.array(
                    [self._nodes[n].first_row if n in self._nodes else -1 for n in self._node_list],
                    dtype=np.int64,
                ),
            }
            self._cache["graph"] = g
        return g  # type: ignore[return-value]

    def delta_input(self, last_sync: int, reference_time: int) -> DeltaInput:
        """Summarise the store for a client that synced at ``last_sync`` (T), as of ``reference_time`` (R)."""
        T, R = last_sync, reference_time
        cols = self._columns()
        g = self._graph()
        dirs = g["dirs"]
        # A channel found closed on chain before R is not part of R's graph.
        has_dirs = (dirs >= 0).all(axis=1) & (g["seen"] < R) & (g["closed_at"] >= R)
        safe = np.where(dirs >= 0, dirs, 0)
        latest = g["d_latest"][safe] if len(safe) else np.zeros((0, 2), np.int64)
        alive_row = g["d_alive"][safe] if len(safe) else np.zeros((0, 2), np.int64)
        r_seen = g["r_seen"]
        present = np.broadcast_to(has_dirs[:, None], dirs.shape).copy()
        alive_seen = r_seen[alive_row] if len(alive_row) else np.zeros((0, 2), np.int64)
        # Directions whose latest or life start was seen at or after R: walk their history.
        late = present & ((r_seen[latest] >= R) | (alive_seen >= R)) if len(latest) else present
        for i, d in zip(*np.nonzero(late), strict=True):
            at = self._direction_at(self._dir_state[dirs[i, d]], R)
            if at is None:
                present[i, d] = False
            else:
                latest[i, d], alive_seen[i, d] = at
        ts = g["r_ts"][latest] if len(latest) else np.zeros((0, 2), np.int64)
        live = present.all(axis=1) & (ts >= R - f.STALE_AFTER).all(axis=1)
        idx = np.nonzero(live)[0]
        n = len(idx)
        rows = latest[idx]
        policy = g["r_policy"][rows] if n else np.zeros((0, 2, 6), np.uint64)

        changes_by_dir = np.zeros(len(self._dir_state), dtype=np.uint8)
        lo, hi = np.searchsorted(cols["u_seen_sorted"], [T, R], side="left")
        if hi > lo:
            np.bitwise_or.at(changes_by_dir, cols["u_dir_sorted"][lo:hi], cols["u_mask_sorted"][lo:hi])

        # The node table: every node of a live channel, indexed locally.
        used, inverse = np.unique(np.concatenate([g["node_1"][idx], g["node_2"][idx]]), return_inverse=True)
        channels = ChannelTable(
            scid=g["scid"][idx],
            node_1=inverse[:n].astype(np.int32),
            node_2=inverse[n:].astype(np.int32),
            features=[g["features"][i] for i in idx.tolist()],
            funding_sats=g["funding"][idx],
            live_since=np.maximum(g["seen"][idx], alive_seen[idx].max(axis=1))
            if n
            else np.zeros(0, np.int64),
            disabled=policy[..., 0].astype(np.bool_),
            cltv_expiry_delta=policy[..., 1].astype(np.int64),
            htlc_minimum_msat=policy[..., 2],
            fee_base_msat=policy[..., 3].astype(np.int64),
            fee_proportional_millionths=policy[..., 4].astype(np.int64),
            htlc_maximum_msat=policy[..., 5],
            changes=changes_by_dir[dirs[idx]] & np.uint8(DIRECTION_CHANGE_BITS)
            if n
            else np.zeros((0, 2), np.uint8),
        )
        return DeltaInput(self.chain_hash, T, R, channels, self._node_table(used, T, R, cols))

    def _node_table(self, used: np.ndarray, T: int, R: int, cols: dict[str, np.ndarray]) -> NodeTable:
        """The nodes at global indices ``used``, with their latest announcement seen before R."""
        g = self._graph()
        changes_by_node = np.zeros(len(self._node_list), dtype=np.uint8)
        lo, hi = np.searchsorted(cols["n_seen_sorted"], [T, R], side="left")
        if hi > lo:
            np.bitwise_or.at(changes_by_node, cols["n_node_sorted"][lo:hi], cols["n_mask_sorted"][lo:hi])
        n_seen = g["n_seen"]
        latest = g["node_latest"][used]
        first = g["node_first"][used]
        known = latest >= 0
        if len(n_seen):
            has = known & (n_seen[np.where(known, latest, 0)] < R)
            first_seen = n_seen[np.where(known, first, 0)]
        else:
            has, first_seen = np.zeros(len(used), dtype=np.bool_), np.full(len(used), -1, dtype=np.int64)
        # Nodes whose latest announcement was seen at or after R: their latest before R, if any.
        for k in np.nonzero(known & ~has)[0].tolist():
            node = self._nodes[self._node_list[int(used[k])]]
            for row in reversed(node.chain):
                if self._n_seen[row] < R:
                    latest[k], has[k] = row, True
                    break
        data = self._n_data
        rows = latest.tolist()
        return NodeTable(
            node_id=[self._node_list[i] for i in used.tolist()],
            has_announcement=has,
            features=[data[r][0] if h else b"" for r, h in zip(rows, has.tolist(), strict=True)],
            addresses=[data[r][1] if h else b"" for r, h in zip(rows, has.tolist(), strict=True)],
            first_seen=np.where(has, first_seen, -1),
            changes=np.where(has, changes_by_node[used], 0).astype(np.uint8),
        )

    # -- ground truth --------------------------------------------------------------------------------

    def live_graph(self, reference_time: int) -> dict[int, dict[str, object]]:
        """The live channels at R with both directions' values: what a fully synced client holds."""
        inp = self.delta_input(0, reference_time)
        ch = inp.channels
        out: dict[int, dict[str, object]] = {}
        for i, scid in enumerate(ch.scid.tolist()):
            out[scid] = {
                "node_1": inp.nodes.node_id[int(ch.node_1[i])],
                "node_2": inp.nodes.node_id[int(ch.node_2[i])],
                "directions": [ch.direction_values(i, d) for d in (0, 1)],
            }
        return out
