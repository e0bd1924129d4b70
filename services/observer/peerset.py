"""Random peer sets for the observer: which K nodes of the graph to observe, epoch by epoch. Pure.

Candidates are the store's nodes whose announcement carries an address we can dial
(:func:`dialable`): IPv4, IPv6 or DNS. Tor addresses are never chosen: the downloader has no
SOCKS5 dialing, so an onion address could only fail (docs/observer.md, "Random peer sets").

**Slots and buckets.** The set has K slots. Each candidate belongs to exactly one slot's bucket,
fixed by the seed (``hash(seed, node) mod K``), so slots never compete for a node and one slot
changing never moves another. A slot holds, in each of its *generations*, the candidate of its
bucket ranked first by ``hash(seed, slot, generation, node)``, skipping excluded nodes (peers
that refused, stalled or misbehaved). A slot whose bucket has nothing left borrows from the
other buckets' leftovers (best rank first, after every slot that did not need to borrow), so a
small graph still fills K slots.

**Rotation.** Epoch ``e`` is ``floor(t / rotate_interval)``. With ``period = round(1 / share)``
epochs, slot ``s`` starts a new generation at every epoch with ``(e + s) mod period == 0``: about
``share · K`` slots rotate per epoch, each peer stays ``period`` epochs, and which slots rotate
when is staggered. Nothing depends on history: the set is a function of (seed, candidates,
epoch, excluded nodes), so a restart, a second replica or an analyst with the same inputs gets
the same set.

**Attempt budget.** :class:`AttemptBudget` is a token bucket: ``per_minute`` connection attempts,
at most that many in a burst.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lnsync.config import PeerAddress
from lnsync.gossip.addresses import AddressType, decode_addresses
from lnsync.gossip.errors import InvalidAddress

# Address types the downloader can dial, in order of preference.
DIALABLE = (AddressType.IPV4, AddressType.IPV6, AddressType.DNS)

# Why a peer left the set (the ``outcome`` of its epoch row).
ROTATED = "rotated"  # its slot's generation ended
REFUSED = "refused"  # no connection: refused, unreachable, handshake failed
STALLED = "stalled"  # connected, then nothing for observer.stall_timeout
MISBEHAVED = "misbehaved"  # the downloader dropped it (protocol errors, invalid gossip, flooding)
CLOSED = "closed"  # the peer closed a working connection
GONE = "gone"  # no longer a candidate (its new announcement has no dialable address)
STOPPED = "stopped"  # the observer stopped
FAILURES = (REFUSED, STALLED, MISBEHAVED, CLOSED)

# Downloader disconnect reasons (services/downloader: PeerFailure, TransportError) by outcome.
_REFUSED_REASONS = frozenset({"connect", "handshake"})
_STALL_REASONS = frozenset({"stall"})
_CLOSED_REASONS = frozenset({"closed"})


def outcome_of(reason: str) -> str:
    """The outcome a downloader disconnect reason stands for."""
    if reason in _REFUSED_REASONS:
        return REFUSED
    if reason in _STALL_REASONS:
        return STALLED
    if reason in _CLOSED_REASONS:
        return CLOSED
    return MISBEHAVED


def store_verdict(joined: float, last_delivery: float | None, now: float, stall_timeout: float) -> str | None:
    """Judge a peer by what the store saw of it (the peer controller's view: its downloaders run in
    other pods). None while it is fine; REFUSED when nothing arrived in ``stall_timeout`` since it
    joined the set; STALLED when its deliveries stopped for that long."""
    if last_delivery is not None and last_delivery >= joined:
        return STALLED if now - last_delivery > stall_timeout else None
    return REFUSED if now - joined > stall_timeout else None


def dialable(node_id: bytes, addresses: bytes) -> PeerAddress | None:
    """The first address of a node's announcement the downloader can dial, as a peer; None if
    there is none (no address, only Tor, port 0, a malformed field)."""
    try:
        parsed = decode_addresses(addresses).addresses
    except InvalidAddress:
        return None
    for kind in DIALABLE:
        for a in parsed:
            if a.type == kind and a.usable:
                try:
                    return PeerAddress.parse(f"{node_id.hex()}@{a}")
                except ValueError:
                    continue  # e.g. a DNS name PeerAddress refuses
    return None


def _h(*parts: bytes | int | str) -> int:
    d = hashlib.blake2b(digest_size=8, person=b"lnsync-peerset")
    for p in parts:
        raw = p.encode() if isinstance(p, str) else struct.pack(">q", p) if isinstance(p, int) else p
        d.update(struct.pack(">H", len(raw)) + raw)
    return int.from_bytes(d.digest(), "big")


def period_of(share: float) -> int:
    """Epochs each slot's peer is kept: ``round(1 / share)``, at least 1."""
    return max(1, round(1 / share))


def epoch_of(now: float, rotate_interval: float) -> int:
    return math.floor(now / rotate_interval)


def generation(slot: int, epoch: int, period: int) -> int:
    """Slot ``slot``'s generation at ``epoch``; it changes when ``(epoch + slot) % period == 0``."""
    return (epoch + slot) // period


def rotating(k: int, epoch: int, period: int) -> list[int]:
    """Slots that start a new generation at ``epoch``."""
    return [s for s in range(k) if (epoch + s) % period == 0]


@dataclass(frozen=True, slots=True)
class Choice:
    """One slot's peer; ``borrowed``: taken from another bucket (its own had nothing left)."""

    slot: int
    generation: int
    peer: PeerAddress
    borrowed: bool = False


def choose(
    candidates: Mapping[str, PeerAddress],
    *,
    k: int,
    seed: int,
    epoch: int,
    period: int,
    excluded: Iterable[str] = (),
) -> list[Choice]:
    """The set at ``epoch``: at most one peer per slot, by slot; fewer than ``k`` only when fewer
    than ``k`` candidates are left after ``excluded`` (node ids in hex)."""
    if k < 1 or period < 1:
        raise ValueError("k and period must be at least 1")
    gone = set(excluded)
    buckets: dict[int, list[str]] = {}
    for node in candidates:
        if node not in gone:
            buckets.setdefault(_h(seed, node) % k, []).append(node)
    gens = {s: generation(s, epoch, period) for s in range(k)}

    def best(slot: int, nodes: Iterable[str]) -> str:
        return min(nodes, key=lambda n: (_h(seed, slot, gens[slot], n), n))

    picks: dict[int, Choice] = {}
    for s in range(k):
        members = buckets.get(s)
        if members:
            picks[s] = Choice(s, gens[s], candidates[best(s, members)])
    taken = {c.peer.node_id for c in picks.values()}
    for s in range(k):
        if s in picks:
            continue
        rest = [n for n in candidates if n not in gone and n not in taken]
        if not rest:
            continue
        node = best(s, rest)
        picks[s] = Choice(s, gens[s], candidates[node], borrowed=True)
        taken.add(node)
    return [picks[s] for s in sorted(picks)]


class AttemptBudget:
    """A token bucket of connection attempts: ``per_minute`` refill, ``per_minute`` deep."""

    def __init__(self, per_minute: int, now: float) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.tokens = float(per_minute)
        self.at = now
        self.spent = 0
        self.denied = 0

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(float(self.per_minute), self.tokens + (now - self.at) * self.per_minute / 60)
            self.at = now

    def available(self, now: float) -> int:
        self._refill(now)
        return int(self.tokens)

    def take(self, now: float, n: int = 1) -> bool:
        """Spend ``n`` attempts if they are there; False (and nothing spent) if not."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            self.spent += n
            return True
        self.denied += 1
        return False

    def charge(self, now: float, n: int) -> None:
        """Record ``n`` attempts already made (reconnects); the bucket may go below zero."""
        self._refill(now)
        self.tokens -= n
        self.spent += n
