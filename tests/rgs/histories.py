"""Random but realistic gossip histories for the RGS property tests (deterministic per seed).

Channels open at random times (some updates arrive before their announcement), directions refresh
about daily with unchanged values, some change fees or get disabled, some channels close (stop
updating and die two weeks later), stale and duplicate deliveries happen, nodes announce and
change addresses or features. Events are added in ``seen`` order, as commits would be.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from lnsync.chain import chain_hash
from lnsync.gossip import messages as m
from lnsync.gossip.signing import pubkey_of
from lnsync.rgs.history import GossipHistory

START = 1_750_000_000
DAY = 86400
MAINNET = chain_hash("bitcoin")


def node_keys(n: int, salt: str = "") -> list[bytes]:
    return sorted(pubkey_of(hashlib.sha256(f"node-{salt}-{i}".encode()).digest()) for i in range(n))


@dataclass
class Event:
    seen: int
    kind: str
    args: tuple[object, ...]
    kwargs: dict[str, object]


def random_events(
    seed: int,
    *,
    nodes: int = 12,
    channels: int = 30,
    days: int = 30,
    start: int = START,
    node_ties: float = 0.0,
) -> list[Event]:
    """The history's messages in ``seen`` order (duplicates and stale arrivals included); with
    ``node_ties``, that share of node_announcements has a rival with the same timestamp and other
    addresses, arriving before or after it (lnsync.rgs.rules.node_tie_winner decides)."""
    rng = random.Random(seed)
    keys = node_keys(nodes, str(seed))
    events: list[Event] = []
    end = start + days * DAY

    def add(seen: int, kind: str, *args: object, **kwargs: object) -> None:
        events.append(Event(seen, kind, args, kwargs))

    for i in range(channels):
        a, b = sorted(rng.sample(range(nodes), 2))
        scid = ((600_000 + i * 7) << 40) | (rng.randrange(3000) << 16) | rng.randrange(4)
        opened = (
            start + rng.randrange(0, days * DAY * 2 // 3)
            if rng.random() < 0.5
            else start - rng.randrange(DAY)
        )
        closes = opened + rng.randrange(2 * DAY, days * DAY) if rng.random() < 0.25 else end + DAY
        ann_seen = opened + (rng.randrange(7200) if rng.random() < 0.2 else 0)  # late announcements
        funding = rng.choice([None, 1_000_000, 5_000_000])
        htlc_max_choices = [990_000_000] if funding == 1_000_000 else [990_000_000, 4_950_000_000]
        add(ann_seen, "ann", scid, keys[a], keys[b], features=b"", funding_sats=funding)
        for d in (0, 1):
            policy = {
                "cltv_expiry_delta": rng.choice([40, 80, 144]),
                "htlc_minimum_msat": rng.choice([1, 1000]),
                "fee_base_msat": rng.choice([0, 1000]),
                "fee_proportional_millionths": rng.randrange(1, 2000),
                "htlc_maximum_msat": rng.choice(htlc_max_choices),
                "disabled": False,
            }
            t = opened + rng.randrange(600)
            frequent = rng.random() < 0.15
            while t < min(closes, end):
                if rng.random() < (0.6 if frequent else 0.08):
                    policy["fee_proportional_millionths"] = rng.randrange(1, 2000)
                if rng.random() < 0.03:
                    policy["disabled"] = not policy["disabled"]
                if rng.random() < 0.02:
                    policy["cltv_expiry_delta"] = rng.choice([18, 40, 144])
                seen = t + rng.randrange(1, 300)
                add(seen, "upd", scid, d, t, **policy)
                if rng.random() < 0.05:  # the same update again from another peer, seen earlier or later
                    add(seen + rng.randrange(-100, 100), "upd", scid, d, t, **policy)
                if rng.random() < 0.03:  # a stale update arrives late
                    add(seen + rng.randrange(1, 600), "upd", scid, d, t - rng.randrange(1, 3600), **policy)
                t += rng.randrange(3600, 2 * 3600) if frequent else rng.randrange(DAY // 2, 2 * DAY)
    for i, key in enumerate(keys):
        if rng.random() < 0.2:
            continue  # never announced
        t = start - DAY + rng.randrange(DAY)
        features = bytes([0x88, 0xA0 | (i % 4)])
        addresses = bytes([1, 10, 0, 0, i % 250 + 1, 0x26, 0x07])
        while t < end:
            add(t + rng.randrange(60), "node", key, t, features=features, addresses=addresses)
            if node_ties and rng.random() < node_ties:
                rival = bytes([1, 10, 1, rng.randrange(256), i % 250 + 1, 0x26, 0x07])
                add(t + rng.randrange(-30, 600), "node", key, t, features=features, addresses=rival)
            t += rng.randrange(DAY, 6 * DAY)
            if rng.random() < 0.3:
                addresses = bytes([1, 10, 0, rng.randrange(256), i % 250 + 1, 0x26, 0x07])
            if rng.random() < 0.1:
                features = bytes([0x88, rng.randrange(256)])

    return sorted(events, key=lambda e: e.seen)


def random_history(seed: int, **kwargs: int) -> GossipHistory:
    history = GossipHistory(MAINNET)
    for ev in random_events(seed, **kwargs):
        if ev.kind == "ann":
            history.add_channel_announcement(*ev.args[:3], ev.seen, **ev.kwargs)  # type: ignore[arg-type]
        elif ev.kind == "upd":
            scid, d, ts = ev.args
            history.add_channel_update(scid, d, ts, ev.seen, **ev.kwargs)  # type: ignore[arg-type]
        else:
            key, ts = ev.args
            history.add_node_announcement(key, ts, ev.seen, **ev.kwargs)  # type: ignore[arg-type]
    return history


def event_message(ev: Event) -> bytes:
    """The event as a wire message (with zero signatures: the store does not check them)."""
    zero = b"\0" * 64
    if ev.kind == "ann":
        scid, n1, n2 = ev.args
        body = m.encode_channel_announcement_body(MAINNET, scid, n1, n2, n1, n2, ev.kwargs["features"])  # type: ignore[arg-type]
        return m.with_type(m.CHANNEL_ANNOUNCEMENT, zero * 4, body)
    if ev.kind == "upd":
        scid, d, ts = ev.args
        k = ev.kwargs
        body = m.encode_channel_update_body(
            MAINNET, scid, ts, d | (2 if k["disabled"] else 0), k["cltv_expiry_delta"],  # type: ignore[arg-type,operator]
            k["htlc_minimum_msat"], k["fee_base_msat"], k["fee_proportional_millionths"],  # type: ignore[arg-type]
            k["htlc_maximum_msat"],  # type: ignore[arg-type]
        )  # fmt: skip
        return m.with_type(m.CHANNEL_UPDATE, zero, body)
    key, ts = ev.args
    body = m.encode_node_announcement_body(
        key,
        ts,
        features=ev.kwargs["features"],
        addresses=ev.kwargs["addresses"],  # type: ignore[arg-type]
    )
    return m.with_type(m.NODE_ANNOUNCEMENT, zero, body)
