"""The LDK client model (:mod:`lnsync.rgs.client`) in columns: what the proof of a whole generation
runs (lnsync/rgs/proof.py). Pure code.

:mod:`lnsync.rgs.client` decodes a blob into one Python object per record and applies them one by
one (~30 µs a record): proving a mainnet generation that way cost more than making it. Here a blob
is decoded by a loop that only finds where each record starts (a table lookup per length byte),
then every field of every record is read at once with NumPy, and the client's rules are applied to
whole columns:

* announcements: a channel already held, or announced twice, keeps its first announcement;
* updates: per direction, the first record of the blob the client accepts wins (every record of
  one blob carries the same backdated time, so a later one is "not newer"); a record is accepted
  when its channel is known, an incremental one has prior data, ``htlc_maximum_msat`` fits the
  protocol maximum and the capacity, and what the client holds is older than the blob;
* v2 node entries, nodes only for nodes with channels, first entry wins;
* pruning after the blob as LDK does (14 days).

It is a second implementation of the same rules, written from the format and the client model, not
from the encoder. Anything outside what lnsync's own blobs contain (a wrong chain, a stale blob, an
invalid or unsorted node id, forward-compatibility records, a truncated or non-canonical field,
...) raises :class:`Unusual`: the caller then asks :mod:`lnsync.rgs.client` itself, which knows
every rule and says what the real client would do. The tests check that both agree on drawn
histories and on corrupted blobs.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from lnsync.rgs import format as f
from lnsync.rgs.client import MAX_VALUE_MSAT
from lnsync.rgs.decode import MAX_NODES, MAX_UPDATES

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]
Keys = NDArray[np.bytes_]  # 33-byte node ids as 'S33' (every id has 33 bytes: order and == are bytewise)

_PAD = 16  # zero bytes after the blob, so that reading a field of a truncated record cannot fault
_BIGSIZE_LEN = [1] * 256
_BIGSIZE_LEN[0xFD], _BIGSIZE_LEN[0xFE], _BIGSIZE_LEN[0xFF] = 3, 5, 9
_BIGSIZE_LEN_NP = np.array(_BIGSIZE_LEN, dtype=np.int64)
# Bytes of value fields after an update's flags byte, per flags value.
_FIELDS_LEN = [
    sum(size for bit, size in zip(f.FIELD_BITS, f.FIELD_SIZES, strict=True) if flags & bit)
    for flags in range(256)
]
_FIELD_BITS = np.array(f.FIELD_BITS, dtype=np.uint8)
_FIELD_SIZES = np.array(f.FIELD_SIZES, dtype=np.int64)
_DEFAULTS = struct.Struct(">HQIIQ")
_CAPACITY_CLIP = MAX_VALUE_MSAT // 1000 + 1  # above it every htlc_maximum_msat the client takes fits


class Unusual(Exception):
    """Not a blob this model decides: ask :mod:`lnsync.rgs.client` (the reason is the message)."""


@dataclass
class Blob:
    """A decoded blob, one array per field."""

    version: int
    chain_hash: bytes
    timestamp: int
    node_ids: Keys  # in the blob's order (v2: the flag bits of the first byte cleared)
    # v2 node entries that carry something (index into node_ids, reminder, features, addresses).
    node_entries: list[tuple[int, bool, bytes | None, list[bytes] | None]]
    ann_scid: U64
    ann_node_1: I64
    ann_node_2: I64
    ann_funding: I64  # -1: none sent
    upd_scid: U64
    upd_flags: NDArray[np.uint8]
    upd_has: NDArray[np.bool_]  # (m, 5): which value fields the record carries
    upd_values: U64  # (m, 5), 0 where absent
    defaults: tuple[int, int, int, int, int]


def _be(buf: NDArray[np.uint8], at: I64, width: int) -> U64:
    """Big-endian unsigned integers of ``width`` bytes at each offset."""
    out = np.zeros(len(at), dtype=np.uint64)
    for k in range(width):
        out = (out << np.uint64(8)) | buf[at + k].astype(np.uint64)
    return out


def _bigsize(buf: NDArray[np.uint8], at: I64) -> tuple[U64, I64]:
    """BigSize values at each offset and their lengths; non-canonical encodings are Unusual."""
    first = buf[at]
    length = _BIGSIZE_LEN_NP[first]
    value = first.astype(np.uint64)
    for n, floor in ((3, 0xFD), (5, 0x10000), (9, 0x100000000)):
        sel = length == n
        if sel.any():
            v = _be(buf, at[sel] + 1, n - 1)
            if np.any(v < np.uint64(floor)):
                raise Unusual("non-canonical BigSize")
            value[sel] = v
    return value, length


def _scids(deltas: U64) -> U64:
    scid = np.cumsum(deltas, dtype=np.uint64)
    if len(scid) > 1 and np.any(scid[1:] < scid[:-1]):
        raise Unusual("short channel id overflows u64")
    return scid


def decode(data: bytes) -> Blob:
    """Decode ``data`` into columns, or raise Unusual."""
    try:
        return _decode(data)
    except IndexError:
        raise Unusual("truncated blob") from None


def _decode(data: bytes) -> Blob:
    n = len(data)
    if n < 40 or data[:3] != f.MAGIC or data[3] not in f.VERSIONS:
        raise Unusual("not an RGS v1/v2 blob")
    version = data[3]
    v2 = version == 2
    chain_hash, (timestamp,) = data[4:36], struct.unpack_from(">I", data, 36)
    buf = np.frombuffer(data + bytes(_PAD), dtype=np.uint8)
    bl = _BIGSIZE_LEN
    p = 40
    default_features: list[bytes] = []
    if v2:
        p += 1
        for _ in range(data[40]):
            size = (data[p] << 8) | data[p + 1]
            default_features.append(data[p + 2 : p + 2 + size])
            p += 2 + size
    (node_count,) = struct.unpack_from(">I", data, p)
    p += 4
    if node_count > MAX_NODES:
        raise Unusual("nonsense node count")
    entries: list[tuple[int, bool, bytes | None, list[bytes] | None]] = []
    if not v2:
        starts = p + 33 * np.arange(node_count, dtype=np.int64)
        p += 33 * node_count
        if p > n:
            raise Unusual("truncated blob")
        if node_count and not np.all((buf[starts] == 2) | (buf[starts] == 3)):
            raise Unusual("node id is not a compressed key")
    else:
        start_list = []
        for i in range(node_count):
            first = data[p]
            start_list.append(p)
            p += 33
            addresses = features = None
            if first & f.NODE_HAS_ADDRESSES:
                addresses = []
                for _ in range(data[p]):
                    size = data[p + 1]
                    addresses.append(data[p + 2 : p + 2 + size])
                    p += 1 + size
                p += 1
            marker = (first & f.NODE_FEATURES_MASK) >> f.NODE_FEATURES_SHIFT
            if marker == f.NODE_FEATURES_EXPLICIT:
                size = (data[p] << 8) | data[p + 1]
                features = data[p + 2 : p + 2 + size]
                p += 2 + size
            elif marker:
                if marker - 1 >= len(default_features):
                    raise Unusual("default feature set not defined")
                features = default_features[marker - 1]
            if first & f.NODE_HAS_EXTRA:
                raise Unusual("node entry with a forward-compatibility tail")
            reminder = bool(first & f.NODE_REMINDER)
            if reminder or addresses is not None or features is not None:
                entries.append((i, reminder, features, addresses))
        if p > n:
            raise Unusual("truncated blob")
        starts = np.array(start_list, dtype=np.int64)
    keys = np.lib.stride_tricks.sliding_window_view(buf, 33)[starts]  # (k, 33), no index array
    keys[:, 0] &= f.NODE_KEY_BITS
    node_ids = np.ascontiguousarray(keys).view("S33").reshape(-1)

    # Announcements: the loop finds each one's short channel id delta; the rest is read in columns.
    (count,) = struct.unpack_from(">I", data, p)
    p += 4
    at = array("q")
    append = at.append
    for _ in range(count):
        q = p + 2 + ((data[p] << 8) | data[p + 1])
        append(q)
        q += bl[data[q]]
        q += bl[data[q]]
        b = data[q]
        if b == 0xFF and v2 and data[q + 1] & 0x80:  # a tail (the funding amount) follows
            q += 9
            size = (data[q] << 8) | data[q + 1]
            if size == 0xFFFF:
                raise Unusual("announcement tail of escaped length")
            q += 2 + size
        else:
            q += bl[b]
        p = q
    if p > n:
        raise Unusual("truncated blob")
    a = np.frombuffer(at, dtype=np.int64) if count else np.zeros(0, np.int64)
    deltas, length = _bigsize(buf, a)
    ann_scid = _scids(deltas)
    n1, length1 = _bigsize(buf, a + length)
    n2_at = a + length + length1
    n2, _ = _bigsize(buf, n2_at)
    funding = np.full(len(a), -1, dtype=np.int64)
    if v2:
        tail = (n2 & np.uint64(f.ANNOUNCEMENT_HAS_EXTRA)) != 0
        n2 &= np.uint64(~f.ANNOUNCEMENT_HAS_EXTRA & ((1 << 64) - 1))
        if tail.any():
            tail_at = n2_at[tail] + 9
            tail_len = _be(buf, tail_at, 2).astype(np.int64)
            amount, amount_len = _bigsize(buf, tail_at + 2)
            if np.any(amount_len > tail_len) or np.any(amount >= np.uint64(1 << 63)):
                raise Unusual("announcement tail without a funding amount")
            funding[tail] = amount.astype(np.int64)
    if len(a) and (np.any(n1 >= np.uint64(node_count)) or np.any(n2 >= np.uint64(node_count))):
        raise Unusual("node index out of range")

    # Updates: the loop finds each record's start; fields are read in columns.
    (count,) = struct.unpack_from(">I", data, p)
    p += 4
    if count > MAX_UPDATES:
        raise Unusual("nonsense update count")
    defaults = (0, 0, 0, 0, 0)
    if count:
        defaults = _DEFAULTS.unpack_from(data, p)
        p += _DEFAULTS.size
    fl = _FIELDS_LEN
    at = array("q")
    append = at.append
    previous = -1  # where the previous record's flags are
    for _ in range(count):
        b = data[p]
        if b == 0 and v2 and previous >= 0 and not (data[p + 1] ^ data[previous]) & 1:
            raise Unusual("update record with a forward-compatibility tail")
        append(p)
        previous = p + bl[b]
        p = previous + 1 + fl[data[previous]]
    if p > n:
        raise Unusual("truncated blob")
    u = np.frombuffer(at, dtype=np.int64) if count else np.zeros(0, np.int64)
    deltas, length = _bigsize(buf, u)
    upd_scid = _scids(deltas)
    flags_at = u + length
    flags = buf[flags_at]
    has = (flags[:, None] & _FIELD_BITS) != 0
    sizes = has * _FIELD_SIZES
    offsets = np.cumsum(sizes, axis=1)  # where each field starts, in place (no (m, 5) temporaries)
    offsets -= sizes
    offsets += (flags_at + 1)[:, None]
    del sizes
    values = np.zeros((len(u), 5), dtype=np.uint64)
    for k, size in enumerate(f.FIELD_SIZES):
        sel = has[:, k]
        values[sel, k] = _be(buf, offsets[sel, k], size)
    return Blob(
        version, chain_hash, timestamp, node_ids, entries, ann_scid, n1.astype(np.int64),
        n2.astype(np.int64), funding, upd_scid, flags, has, values, defaults,
    )  # fmt: skip


@dataclass
class State:
    """What a client holds, ascending by short channel id; a direction is absent where ``last`` is -1."""

    scid: U64
    node_1: Keys
    node_2: Keys
    capacity: I64  # -1: unknown
    received: I64  # the announcement's (backdated) time
    last: I64  # (n, 2): the direction's (backdated) update time, -1 for none
    disabled: NDArray[np.bool_]  # (n, 2)
    values: U64  # (n, 2, 5): cltv, htlc_min, fee_base, fee_prop, htlc_max
    # v2 node details: node id -> (features, addresses, backdated time)
    nodes: dict[bytes, tuple[bytes, tuple[bytes, ...], int]]

    @classmethod
    def empty(cls) -> State:
        return cls(
            np.zeros(0, np.uint64), np.zeros(0, "S33"), np.zeros(0, "S33"), np.zeros(0, np.int64),
            np.zeros(0, np.int64), np.full((0, 2), -1, np.int64), np.zeros((0, 2), np.bool_),
            np.zeros((0, 2, 5), np.uint64), {},
        )  # fmt: skip

    def complete(self) -> NDArray[np.bool_]:
        """Channels with both directions (what a client routes over and the proof compares)."""
        out: NDArray[np.bool_] = np.all(self.last >= 0, axis=1)
        return out

    def _take(self, keep: NDArray[np.bool_] | I64) -> State:
        return replace(
            self, scid=self.scid[keep], node_1=self.node_1[keep], node_2=self.node_2[keep],
            capacity=self.capacity[keep], received=self.received[keep], last=self.last[keep],
            disabled=self.disabled[keep], values=self.values[keep],
        )  # fmt: skip


def _node_set(state: State) -> set[bytes]:
    both = np.concatenate([state.node_1, state.node_2])
    return set(np.unique(both).view("V33").tolist()) if len(both) else set()


def apply(state: State, blob: Blob, chain_hash: bytes, now: int | None) -> State:
    """The state after a client holding ``state`` applied ``blob`` at ``now`` (a new State;
    ``state`` is not changed)."""
    if blob.chain_hash != chain_hash:
        raise Unusual("another chain's blob")
    if now is not None and blob.timestamp < max(0, now - f.CLIENT_PRUNE_AFTER):
        raise Unusual("stale blob")
    _check_keys(blob.node_ids)
    backdated = max(0, blob.timestamp - f.CLIENT_BACKDATE)

    if len(blob.ann_scid):
        n1, n2 = blob.node_ids[blob.ann_node_1], blob.node_ids[blob.ann_node_2]
        if np.any(n1 == n2):
            raise Unusual("channel with itself")
        if np.any(n1 > n2):
            raise Unusual("unsorted node ids")
        first = np.ones(len(blob.ann_scid), dtype=np.bool_)
        first[1:] = blob.ann_scid[1:] != blob.ann_scid[:-1]
        new = first & ~np.isin(blob.ann_scid, state.scid)
        k = int(new.sum())
        if k:
            order = np.argsort(np.concatenate([state.scid, blob.ann_scid[new]]), kind="stable")

            def merged(held: np.ndarray, added: np.ndarray) -> np.ndarray:
                # One field at a time: never two whole states at once.
                out: np.ndarray = np.concatenate([held, added])[order]
                return out

            state = State(
                merged(state.scid, blob.ann_scid[new]),
                merged(state.node_1, n1[new]),
                merged(state.node_2, n2[new]),
                merged(state.capacity, blob.ann_funding[new]),  # v1 carries none (-1)
                merged(state.received, np.full(k, backdated, np.int64)),
                merged(state.last, np.full((k, 2), -1, np.int64)),
                merged(state.disabled, np.zeros((k, 2), np.bool_)),
                merged(state.values, np.zeros((k, 2, 5), np.uint64)),
                state.nodes,
            )
        del n1, n2

    if blob.version == 2 and blob.node_entries:
        live = _node_set(state)
        nodes = dict(state.nodes)
        ids = blob.node_ids.view("V33").tolist()
        seen: set[bytes] = set()
        for i, _reminder, features, addresses in blob.node_entries:
            node_id = ids[i]
            if node_id in seen:
                raise Unusual("node entry repeated")
            seen.add(node_id)
            if node_id not in live:
                continue
            old = nodes.get(node_id)
            if old is not None and old[2] >= backdated:
                continue
            nodes[node_id] = (
                features if features is not None else (old[0] if old else b""),
                tuple(addresses) if addresses is not None else (old[1] if old else ()),
                backdated,
            )
        state = replace(state, nodes=nodes)
    if not len(blob.upd_scid):
        return state

    r, d, values, disabled = _winners(state, blob, backdated)
    if len(r):
        last, held_disabled, held_values = state.last.copy(), state.disabled.copy(), state.values.copy()
        last[r, d] = backdated
        held_disabled[r, d] = disabled
        held_values[r, d] = values
        state = replace(state, last=last, disabled=held_disabled, values=held_values)
    if now is not None:
        state = prune(state, now)
    return state


def _winners(state: State, blob: Blob, backdated: int) -> tuple[I64, I64, U64, NDArray[np.bool_]]:
    """The update records the client takes, as (row, direction, values, disabled): per direction
    the first record it accepts. A function of its own, so that its per-record temporaries are
    freed before the state is copied."""
    row = np.searchsorted(state.scid, blob.upd_scid)
    known = row < len(state.scid)
    known[known] = state.scid[row[known]] == blob.upd_scid[known]
    row = np.where(known, row, 0)
    direction = (blob.upd_flags & f.UPDATE_DIRECTION).astype(np.int64)
    incremental = (blob.upd_flags & f.UPDATE_INCREMENTAL) != 0
    held = np.zeros(len(row), dtype=np.int64) - 1
    if len(state.scid):
        held = np.where(known, state.last[row, direction], -1)
        prior = state.values[row, direction]
    else:
        prior = np.zeros((len(row), 5), np.uint64)
    values = np.where(incremental[:, None], prior, np.array(blob.defaults, dtype=np.uint64))
    del prior
    np.copyto(values, blob.upd_values, where=blob.upd_has)
    hmax = values[:, 4]
    capacity = state.capacity[row] if len(state.scid) else np.zeros(len(row), np.int64)
    fits = (hmax <= np.uint64(MAX_VALUE_MSAT)) & (
        (capacity < 0) | (hmax <= np.minimum(capacity, _CAPACITY_CLIP).astype(np.uint64) * np.uint64(1000))
    )
    accepted = known & (~incremental | (held >= 0)) & fits & (held < backdated)
    idx = np.nonzero(accepted)[0]
    key = row[idx] * 2 + direction[idx]
    _, first = np.unique(key, return_index=True)
    idx = idx[first]
    return row[idx], direction[idx], values[idx], (blob.upd_flags[idx] & f.UPDATE_DISABLED) != 0


def prune(state: State, now: int) -> State:
    """What LDK does after each sync and hourly (lnsync.rgs.client.RgsClient.prune)."""
    if now < f.CLIENT_PRUNE_AFTER:
        return state
    cutoff = now - f.CLIENT_PRUNE_AFTER
    old = (state.last >= 0) & (state.last < cutoff)
    if old.any():
        last = state.last.copy()
        last[old] = -1
        state = replace(state, last=last)
    gone = ~state.complete() & (state.received < cutoff)
    if gone.any():
        state = state._take(~gone)
        if state.nodes:
            live = _node_set(state)
            state = replace(state, nodes={k: v for k, v in state.nodes.items() if k in live})
    return state


# Node ids found on the curve (10 µs a check; a mainnet blob names ~17k nodes, each generation
# mostly the same ones): kept for the process, forgotten past a bound.
_VALID_KEYS: set[bytes] = set()
_VALID_KEYS_MAX = 500_000


def _check_keys(node_ids: Keys) -> None:
    from lnsync.gossip.signing import is_valid_pubkey

    unknown = set(node_ids.view("V33").tolist()) - _VALID_KEYS
    if len(_VALID_KEYS) + len(unknown) > _VALID_KEYS_MAX:
        _VALID_KEYS.clear()
    for key in unknown:
        if not is_valid_pubkey(key):
            raise Unusual("invalid node id")
        _VALID_KEYS.add(key)
