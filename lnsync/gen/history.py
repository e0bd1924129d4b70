"""The gossip history as a discrete-event simulation: what each node and channel publishes, when it
is signed (the message timestamp) and when a well-connected node receives it.

Every channel direction and every node runs a small timeline (a generator of timestamps and
contents). A heap merges them in timestamp order. Each message gets a propagation delay, and a
second heap releases messages in received-time order once no earlier one can still come. That
is safe because a message is never received before its own timestamp. Memory is proportional to
the graph and to the messages in flight, never to the length of the history.

The result is a stream of :class:`Planned` messages: the fields to encode (a ``Job`` tuple) and
the received time. Signing is left to :mod:`lnsync.gen.build`, so it can run in other processes.

The cadence (all rates per direction over the window):

* channel_update directions that are enabled in the snapshot: 80 % refresh about daily (same
  content, new timestamp), 14 % every 2 to 6 days, 6 % change fees many times a day (2 to 100
  times, median 6; a third of them move htlc_maximum_msat too). 12 % of the daily and slow ones
  change their fees once. 8 % go disabled and come back 1 to 3 times (5 minutes to 2 days later).
* directions disabled in the snapshot, which may also have had no update at all: 45 % publish
  nothing, 35 % stay disabled (refreshed every 3 to 13 days), 20 % are enabled until a random
  time in the window.
* channels: the snapshot's channels exist at the end. 0.5 % a day of them are opened during the
  window (announced 6 blocks after funding). Extra channels, parallel to existing ones, are closed
  during the window (0.4 % a day), half of them after a last disabling update.
* node_announcements: 30 % about daily, 45 % every 2 to 6 days, 25 % once or twice in two weeks;
  5 % of nodes with an IPv4 address move to a new one. A node announces only after one of its
  channels has been announced (BOLT 7).
* Channels and nodes that exist when the window opens start with their last message before it,
  placed in the day before the window, so every channel is announced and has its policy in the
  stream, which therefore starts at most one day before the window.
* Received time: 2 s + a log-normal delay (median about 45 s, 95 % under about 4 min); 0.5 %
  arrive 30 minutes to 6 hours late. A channel_announcement arrives shortly before its first update.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lnsync.gen.gossmap import Policy
from lnsync.gen.nodes import NodeProfile, make_profile, moved
from lnsync.gen.topology import Channel, Topology
from lnsync.gossip.signing import pubkey_of

DAY = 86400
# 2026-02-03 00:00:00 UTC: the day Core Lightning's topology snapshot was taken.
DEFAULT_END_TIME = 1770076800
_BLOCK_840000_TIME = 1713571767  # mined 2024-04-20 00:09:27 UTC
_FIRST_LN_BLOCK = 505_000  # January 2018: mainnet Lightning channels start here
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_LOG_45 = math.log(45)

# A message before encoding and signing (lnsync.gen.build turns it into bytes), one of:
#   ("c", scid, node_id_1, node_id_2, node_secret_1, node_secret_2, bitcoin_secret_1, bitcoin_secret_2)
#   ("u", origin_secret, scid, timestamp, channel_flags, cltv_expiry_delta, htlc_minimum_msat,
#    fee_base_msat, fee_proportional_millionths, htlc_maximum_msat)
#   ("n", node_secret, node_id, timestamp, features, rgb_color, alias, addresses)
# Plain tuples: they are made a million times and pickled to the signing workers.
Job = tuple[Any, ...]


def block_height_at(t: float) -> int:
    """Mainnet block height at Unix time ``t`` (ten-minute blocks from a known anchor)."""
    return 840_000 + math.floor((t - _BLOCK_840000_TIME) / 600)


def derive_secret(seed: int, *label: object) -> bytes:
    """A secp256k1 secret key determined by the seed and a label (e.g. ``"node", 17``)."""
    counter = 0
    while True:
        text = "/".join(str(p) for p in ("lnsync-gen", seed, *label, counter))
        secret = hashlib.sha256(text.encode()).digest()
        if 0 < int.from_bytes(secret, "big") < _SECP256K1_ORDER:
            return secret
        counter += 1


@dataclass(slots=True)
class Planned:
    """One message to encode: ``job`` holds its fields, ``received_at`` when it arrived."""

    received_at: float
    job: Job
    funding_sats: int | None = None


# -- the actors ------------------------------------------------------------------------------------


class _Node:
    __slots__ = ("announced_at", "index", "last_recv", "last_ts", "node_id", "secret", "waiting")

    def __init__(self, index: int, secret: bytes) -> None:
        self.index = index
        self.secret = secret
        self.node_id = pubkey_of(secret)
        self.announced_at: float | None = None  # when its first channel_announcement arrived
        self.waiting: tuple[int, NodeProfile] | None = None  # a node_announcement held back until then
        self.last_recv = -math.inf
        self.last_ts = 0


class _Chan:
    __slots__ = ("ann_recv", "btc", "capacity_sat", "nodes", "scid")

    def __init__(self, scid: int, nodes: tuple[_Node, _Node], btc: tuple[bytes, bytes], capacity_sat: int):
        self.scid = scid
        self.nodes = nodes
        self.btc = btc
        self.capacity_sat = capacity_sat
        self.ann_recv: float | None = None


class _Direction:
    __slots__ = ("chan", "direction", "last_recv", "origin")

    def __init__(self, chan: _Chan, origin: _Node, other: _Node) -> None:
        self.chan = chan
        self.origin = origin
        self.direction = 0 if origin.node_id < other.node_id else 1
        self.last_recv = -math.inf


# -- timelines -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cadence:
    """How often a direction or node republishes: about ``period`` seconds, or Poisson at ``rate``."""

    period: float = DAY
    spread: float = 0.05  # relative jitter of each interval
    rate_per_day: float = 0.0  # > 0: frequent fee updates (exponential intervals)

    @property
    def mean_interval(self) -> float:
        return DAY / self.rate_per_day if self.rate_per_day else self.period

    def next_interval(self, rng: random.Random) -> float:
        if self.rate_per_day:
            return max(30.0, rng.expovariate(self.rate_per_day / DAY))
        return max(600.0, self.period * (1 + rng.uniform(-self.spread, self.spread)))


def _draw_cadence(rng: random.Random) -> _Cadence:
    r = rng.random()
    if r < 0.80:
        return _Cadence(DAY * rng.uniform(0.92, 1.08), 0.04)
    if r < 0.94:
        return _Cadence(DAY * rng.uniform(2, 6), 0.2)
    return _Cadence(rate_per_day=min(100.0, max(2.0, rng.lognormvariate(math.log(6), 0.8))))


def _tweak_fees(rng: random.Random, p: Policy) -> Policy:
    """A different but plausible fee setting (what the policy was before a change)."""
    ppm = p.fee_proportional_millionths
    ppm = rng.choice((1, 10, 50, 100)) if ppm == 0 else max(0, round(ppm * rng.choice((0.5, 0.75, 1.3, 2.0))))
    base = p.fee_base_msat if rng.random() < 0.8 else rng.choice((0, 1000))
    return _replace_fees(p, base, ppm, p.htlc_maximum_msat)


def _replace_fees(p: Policy, base: int, ppm: int, hmax: int) -> Policy:
    return Policy(p.disabled, p.cltv_expiry_delta, p.htlc_minimum_msat, hmax, base, ppm)


def _direction_timeline(
    rng: random.Random,
    final: Policy,
    capacity_msat: int,
    cadence: _Cadence,
    first: float,
    second: float | None,
    stop: float,
    specials: list[tuple[float, str]],
    disabled_from_start: bool,
) -> Iterator[tuple[int, bool, Policy]]:
    """(timestamp, disabled, policy) of each channel_update of one direction, strictly increasing.

    The first update is at ``first``, the next regular one at ``second`` (default: one interval
    later). ``specials`` are timed state changes, each published at once: ``off``/``on``
    (disabled and back), ``change`` (switch to the final fees), ``disable`` (disabled until the end).
    """
    specials = sorted(specials)
    disabled = disabled_from_start
    policy = _tweak_fees(rng, final) if any(kind == "change" for _, kind in specials) else final
    vary_htlc_max = cadence.rate_per_day > 0 and rng.random() < 0.3
    last = 0
    due = first
    while True:
        if specials and specials[0][0] <= due:
            t, kind = specials.pop(0)
            if kind == "change":
                policy = final
            else:
                disabled = kind != "on"
        else:
            t = due
            if cadence.rate_per_day and t > first:  # a fee manager at work
                if t + cadence.mean_interval > stop and not specials:  # the last one
                    policy = final
                else:
                    ppm = final.fee_proportional_millionths
                    ppm = round(ppm * rng.lognormvariate(0, 0.35)) if ppm else rng.choice((0, 0, 1, 2, 5))
                    hmax = final.htlc_maximum_msat
                    if vary_htlc_max:  # liquidity tools move htlc_maximum_msat too
                        hmax = int(capacity_msat * rng.uniform(0.1, 0.99)) // 1000 * 1000
                        hmax = max(final.htlc_minimum_msat, hmax)
                    policy = _replace_fees(final, final.fee_base_msat, ppm, hmax)
        if t > stop:
            return
        due = t + cadence.next_interval(rng) if second is None or t > first else max(second, t + 1)
        last = max(int(t), last + 1)
        yield last, disabled, policy


def _node_timeline(
    rng: random.Random, profile: NodeProfile, start: float, stop: float
) -> Iterator[tuple[int, NodeProfile]]:
    """(timestamp, content) of each node_announcement of one node; the first is before ``start``."""
    r = rng.random()
    if r < 0.30:
        cadence = _Cadence(DAY * rng.uniform(0.9, 1.1), 0.05)
    elif r < 0.75:
        cadence = _Cadence(DAY * rng.uniform(2, 6), 0.2)
    else:
        cadence = _Cadence(DAY * rng.uniform(7, 13), 0.1)
    move_at = start + rng.uniform(0, stop - start) if rng.random() < 0.05 else math.inf
    t, second = _initial_times(rng, start, cadence.period)
    last = 0
    while t <= stop:
        if t >= move_at:
            profile = moved(rng, profile)
            t, move_at = move_at, math.inf
        last = max(int(t), last + 1)
        yield last, profile
        t = max(second, t + 1) if second is not None else t + cadence.next_interval(rng)
        second = None
        if t > move_at:
            t = move_at


def _initial_times(rng: random.Random, start: float, period: float) -> tuple[float, float | None]:
    """When something that republishes every ``period`` seconds last did so before ``start``, and
    when it does so next if that is not one period later.

    The last one is kept within the day before the window (so the history starts at most a day
    early); the time to the next one is uniform over a period, as for a random phase.
    """
    if period <= DAY:
        return start - rng.uniform(0, period), None
    return start - rng.uniform(0, DAY), start + rng.uniform(0, period)


# -- the simulation --------------------------------------------------------------------------------


class _Delays:
    """Seconds from a message's timestamp until a well-connected node has it, drawn in bulk."""

    def __init__(self, seed: int) -> None:
        key = int.from_bytes(hashlib.sha256(f"lnsync-gen/{seed}/delays".encode()).digest()[:16], "big")
        self._gen = np.random.Generator(np.random.PCG64(key))
        self._buf: list[float] = []

    def __call__(self) -> float:
        if not self._buf:
            n = 1 << 16
            usual = 2 + np.minimum(1800.0, self._gen.lognormal(_LOG_45, 0.9, n))
            late = self._gen.uniform(1800, 6 * 3600, n)
            self._buf = np.where(self._gen.random(n) < 0.005, late, usual).tolist()
        return self._buf.pop()


def _default_policy(capacity_sat: int) -> Policy:
    return Policy(False, 80, 1000, capacity_sat * 990, 1000, 1)


class _Simulation:
    def __init__(self, topology: Topology, seed: int, start: float, end: float) -> None:
        self.rng = random.Random(f"lnsync-gen/{seed}")
        self.delay = _Delays(seed)
        self.seed = seed
        self.start = start
        self.end = end
        self.events: list[tuple[float, int, Iterator[Any], Any]] = []
        self.out: list[tuple[float, int, Job, int | None]] = []
        self.seq = 0
        self.scids: set[int] = set()
        self.nodes = {n: _Node(n, derive_secret(seed, "node", n)) for n in topology.nodes}
        for n in topology.nodes:
            node = self.nodes[n]
            profile = make_profile(self.rng, node.node_id, topology.aliases[n])
            self._push(_node_timeline(self.rng, profile, start, end), node)
        self._plan_channels(topology)

    # scheduling helpers

    def _push(self, timeline: Iterator[Any], actor: Any) -> None:
        item = next(timeline, None)
        if item is not None:
            self.seq += 1
            heapq.heappush(self.events, (item[0], self.seq, timeline, (actor, item)))

    def _emit(self, recv: float, job: Job, funding: int | None = None) -> None:
        self.seq += 1
        heapq.heappush(self.out, (recv, self.seq, job, funding))

    def _scid(self, height: int) -> int:
        while True:
            tx = self.rng.randint(1, 3500)
            out = 0 if self.rng.random() < 0.6 else 1 if self.rng.random() < 0.9 else self.rng.randint(2, 3)
            scid = (height << 40) | (tx << 16) | out
            if scid not in self.scids:
                self.scids.add(scid)
                return scid

    def _old_height(self) -> int:
        tip = block_height_at(self.start) - 6
        age = self.rng.expovariate(1 / 84_000)  # mean age about 1.6 years
        if age > tip - _FIRST_LN_BLOCK:
            age = self.rng.uniform(0, tip - _FIRST_LN_BLOCK)
        return tip - int(age)

    # channels

    def _plan_channels(self, topology: Topology) -> None:
        rng = self.rng
        days = (self.end - self.start) / DAY
        usable = [c for c in topology.channels if not (c.policy_a.disabled and c.policy_b.disabled)]
        n_open = min(len(usable), round(0.005 * days * len(topology.channels)))
        opened = {c.index for c in rng.sample(usable, n_open)}
        for c in topology.channels:
            if c.index in opened:
                t_open = rng.uniform(self.start + 600, self.end - 600)
                height = block_height_at(t_open) - rng.randint(6, 9)
                self._add_channel(c, ("chan", c.index), height, t_open, self.end)
            else:
                self._add_channel(c, ("chan", c.index), self._old_height(), None, self.end)
        for k in range(round(0.004 * days * len(topology.channels)) if usable else 0):
            src = rng.choice(usable)
            pa = src.policy_a if not src.policy_a.disabled else src.policy_b
            pb = src.policy_b if not src.policy_b.disabled else src.policy_a
            clone = Channel(-1, src.node_a, src.node_b, src.capacity_sat, pa, pb)
            t_close = rng.uniform(self.start, self.end)
            self._add_channel(clone, ("closed", k), self._old_height(), None, t_close)

    def _add_channel(
        self, c: Channel, key: tuple[str, int], height: int, t_open: float | None, stop: float
    ) -> None:
        rng = self.rng
        a, b = self.nodes[c.node_a], self.nodes[c.node_b]
        btc = (derive_secret(self.seed, *key, "a"), derive_secret(self.seed, *key, "b"))
        chan = _Chan(self._scid(height), (a, b), btc, c.capacity_sat)
        closing = stop < self.end
        closer = rng.randrange(2) if closing and rng.random() < 0.5 else -1
        begin = self.start if t_open is None else t_open + 900  # state changes happen after this
        timelines = 0
        for side, (origin, other, policy, other_policy) in enumerate(
            ((a, b, c.policy_a, c.policy_b), (b, a, c.policy_b, c.policy_a))
        ):
            specials: list[tuple[float, str]] = []
            disabled_from_start = False
            if policy.disabled:
                r = rng.random()
                if r < 0.45:
                    continue  # never published an update for this side
                policy = other_policy if not other_policy.disabled else _default_policy(c.capacity_sat)
                if r < 0.80:
                    disabled_from_start = True
                else:
                    specials.append((rng.uniform(begin, stop), "disable"))
            if disabled_from_start:  # kept alive against pruning, no more
                cadence = _Cadence(DAY * rng.uniform(3, 13), 0.2)
            else:
                cadence = _draw_cadence(rng)
                if not cadence.rate_per_day and rng.random() < 0.12:
                    specials.append((rng.uniform(begin, stop), "change"))
                if rng.random() < 0.08:
                    until = min([stop, *(t for t, k in specials if k == "disable")])
                    specials.extend(self._flaps(begin, until))
            if side == closer:
                specials.append((stop - rng.uniform(30, 1800), "off"))
            if t_open is None:
                first, second = _initial_times(rng, self.start, cadence.mean_interval)
            else:
                first, second = t_open + rng.uniform(0, 300 if side == 0 else 900), None
            timeline = _direction_timeline(
                rng,
                policy,
                c.capacity_sat * 1000,
                cadence,
                first,
                second,
                stop,
                specials,
                disabled_from_start,
            )
            self._push(timeline, _Direction(chan, origin, other))
            timelines += 1
        if not timelines:  # announced, but neither side ever published an update
            t = t_open if t_open is not None else self.start - rng.uniform(0, DAY)
            self._push(iter([(t,)]), chan)

    def _flaps(self, begin: float, stop: float) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        free_from = begin
        for _ in range(self.rng.randint(1, 3)):
            if free_from >= stop - 600:
                break
            off = self.rng.uniform(free_from, stop)
            on = off + min(2 * DAY, max(300.0, self.rng.lognormvariate(math.log(3600), 1.2)))
            if on >= stop - 60:
                break
            out += [(off, "off"), (on, "on")]
            free_from = on + 60
        return out

    # running

    def _announce(self, chan: _Chan, recv: float) -> None:
        chan.ann_recv = recv
        n1, n2 = chan.nodes
        b1, b2 = chan.btc
        if n2.node_id < n1.node_id:
            n1, n2, b1, b2 = n2, n1, b2, b1
        job = ("c", chan.scid, n1.node_id, n2.node_id, n1.secret, n2.secret, b1, b2)
        self._emit(recv, job, chan.capacity_sat)
        for node in chan.nodes:
            if node.announced_at is None:
                node.announced_at = recv
                if node.waiting is not None:
                    ts, profile = node.waiting
                    node.waiting = None
                    self._node_announcement(node, max(ts, int(recv + self.rng.uniform(5, 600))), profile)

    def _node_announcement(self, node: _Node, ts: int, profile: NodeProfile) -> None:
        assert node.announced_at is not None
        ts = node.last_ts = max(ts, node.last_ts + 1)
        recv = max(ts + self.delay(), node.announced_at + 0.01, node.last_recv + 0.001)
        node.last_recv = recv
        p = profile
        self._emit(recv, ("n", node.secret, node.node_id, ts, p.features, p.rgb_color, p.alias, p.addresses))

    def _channel_update(self, d: _Direction, ts: int, disabled: bool, p: Policy) -> None:
        chan = d.chan
        recv = max(ts + self.delay(), d.last_recv + 0.001)
        if chan.ann_recv is None:
            self._announce(chan, recv - min(self.rng.uniform(0.2, 8), 0.5 * (recv - ts)))
        assert chan.ann_recv is not None
        recv = max(recv, chan.ann_recv + 0.01)
        d.last_recv = recv
        flags = d.direction | (2 if disabled else 0)
        job = ("u", d.origin.secret, chan.scid, ts, flags, p.cltv_expiry_delta, p.htlc_minimum_msat,
               p.fee_base_msat, p.fee_proportional_millionths, p.htlc_maximum_msat)  # fmt: skip
        self._emit(recv, job)

    def run(self) -> Iterator[Planned]:
        events, out = self.events, self.out
        while events:
            ts, _, timeline, (actor, item) = heapq.heappop(events)
            if ts > self.end:
                break
            if isinstance(actor, _Direction):
                self._channel_update(actor, item[0], item[1], item[2])
                self._push(timeline, actor)
            elif isinstance(actor, _Node):
                if actor.announced_at is None:
                    actor.waiting = item  # resumes when one of its channels is announced
                    self._push(timeline, actor)
                    continue
                self._node_announcement(actor, item[0], item[1])
                self._push(timeline, actor)
            else:
                self._announce(actor, ts + self.delay())
            # Every message still to come is received at or after ``ts``: release the ones before.
            while out and out[0][0] <= ts:
                recv, _, job, funding = heapq.heappop(out)
                yield Planned(recv, job, funding)
        while out:
            recv, _, job, funding = heapq.heappop(out)
            if recv > self.end:
                break
            yield Planned(recv, job, funding)


def plan_history(topology: Topology, *, seed: int, days: float, end_time: float) -> Iterator[Planned]:
    """The messages of ``days`` days ending at ``end_time`` (plus each channel's and node's last
    message from the day before the window), in received-time order."""
    if days <= 0:
        raise ValueError("days must be positive")
    return _Simulation(topology, seed, end_time - days * DAY, end_time).run()
