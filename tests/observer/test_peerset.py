"""The random peer set's pure rules (services/observer/peerset.py): dialable addresses only, seeded
and reproducible choice, bounded rotation, replacement of excluded peers, the attempt budget."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from lnsync.config import PeerAddress
from lnsync.gossip.addresses import AddressType, SocketAddress, encode_addresses
from lnsync.gossip.signing import pubkey_of
from services.observer import peerset as ps

ONION = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion"


def node(i: int) -> bytes:
    return pubkey_of(hashlib.sha256(f"peerset-{i}".encode()).digest())


def graph(n: int) -> dict[str, PeerAddress]:
    out = {}
    for i in range(n):
        p = PeerAddress(node(i), "127.0.0.1", 10_000 + i)
        out[p.node_id] = p
    return out


def test_only_dialable_addresses_make_candidates() -> None:
    key = node(1)
    ipv4 = SocketAddress(AddressType.IPV4, "10.0.0.1", 9735)
    ipv6 = SocketAddress(AddressType.IPV6, "2001:db8::1", 9736)
    dns = SocketAddress(AddressType.DNS, "node.example.com", 9737)
    tor = SocketAddress(AddressType.TOR_V3, ONION, 9735)
    assert ps.dialable(key, b"") is None
    assert ps.dialable(key, encode_addresses([tor])) is None  # no SOCKS5 dialing: never Tor
    assert ps.dialable(key, encode_addresses([SocketAddress(AddressType.IPV4, "10.0.0.1", 0)])) is None
    assert ps.dialable(key, b"\x01\x0a\x00") is None  # truncated
    got = ps.dialable(key, encode_addresses([ipv4, ipv6, tor]))
    assert got is not None and (got.host, got.port, got.pubkey) == ("10.0.0.1", 9735, key)
    got = ps.dialable(key, encode_addresses([ipv6, tor]))
    assert got is not None and (got.host, got.port) == ("2001:db8::1", 9736)
    got = ps.dialable(key, encode_addresses([tor, dns]))
    assert got is not None and (got.host, got.port) == ("node.example.com", 9737)


def test_outcomes_of_downloader_reasons() -> None:
    assert ps.outcome_of("connect") == ps.outcome_of("handshake") == ps.REFUSED
    assert ps.outcome_of("stall") == ps.STALLED
    assert ps.outcome_of("closed") == ps.CLOSED
    for reason in ("protocol", "peer_error", "bad_frame", "sync_incomplete", "flooding"):
        assert ps.outcome_of(reason) == ps.MISBEHAVED


sizes = st.integers(min_value=0, max_value=60)
ks = st.integers(min_value=1, max_value=12)
seeds = st.integers(min_value=0, max_value=2**63 - 1)
epochs = st.integers(min_value=0, max_value=10**7)
periods = st.integers(min_value=1, max_value=8)


@given(sizes, ks, seeds, epochs, periods, st.data())
def test_choice_is_a_bounded_function_of_its_inputs(
    n: int, k: int, seed: int, epoch: int, period: int, data: st.DataObject
) -> None:
    cands = graph(n)
    excluded = data.draw(st.sets(st.sampled_from(sorted(cands)))) if cands else set()
    got = ps.choose(cands, k=k, seed=seed, epoch=epoch, period=period, excluded=excluded)
    nodes = [c.peer.node_id for c in got]
    # K at most, distinct, candidates only, never an excluded one, and as many as possible.
    assert len(nodes) == len(set(nodes)) == min(k, n - len(excluded))
    assert set(nodes) <= set(cands) - excluded
    assert [c.slot for c in got] == sorted({c.slot for c in got}) and all(0 <= c.slot < k for c in got)
    # Reproducible: the same inputs in another order give the same set.
    shuffled = dict(reversed(list(cands.items())))
    assert ps.choose(shuffled, k=k, seed=seed, epoch=epoch, period=period, excluded=excluded) == got


@given(st.integers(min_value=1, max_value=8), seeds, epochs, periods)
def test_rotation_replaces_only_the_rotating_slots(k: int, seed: int, epoch: int, period: int) -> None:
    cands = graph(40 * k)  # buckets large enough that no slot borrows
    before = ps.choose(cands, k=k, seed=seed, epoch=epoch, period=period)
    after = ps.choose(cands, k=k, seed=seed, epoch=epoch + 1, period=period)
    assert not any(c.borrowed for c in before + after)
    changed = {a.slot for a, b in zip(before, after, strict=True) if a.peer != b.peer}
    rotating = set(ps.rotating(k, epoch + 1, period))
    assert changed <= rotating
    # About share x K slots rotate per epoch; over one period every slot rotates exactly once.
    assert len(rotating) <= -(-k // period)
    per_slot = [sum(s in ps.rotating(k, e, period) for e in range(epoch, epoch + period)) for s in range(k)]
    assert per_slot == [1] * k


@given(st.integers(min_value=1, max_value=8), seeds, epochs, periods, st.data())
def test_an_excluded_peer_is_replaced_in_its_own_slot(
    k: int, seed: int, epoch: int, period: int, data: st.DataObject
) -> None:
    cands = graph(40 * k)
    before = ps.choose(cands, k=k, seed=seed, epoch=epoch, period=period)
    failed = data.draw(st.sampled_from(before))
    after = ps.choose(cands, k=k, seed=seed, epoch=epoch, period=period, excluded={failed.peer.node_id})
    assert len(after) == k
    diff = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(diff) == 1 and diff[0][0] == failed and diff[0][1].slot == failed.slot
    assert diff[0][1].peer.node_id != failed.peer.node_id


def test_seeds_do_differ() -> None:
    cands = graph(200)
    sets = {frozenset(c.peer for c in ps.choose(cands, k=8, seed=s, epoch=5, period=4)) for s in range(10)}
    assert len(sets) == 10


def test_every_candidate_can_be_chosen() -> None:
    cands = graph(30)
    seen = set()
    for epoch in range(400):
        seen |= {c.peer.node_id for c in ps.choose(cands, k=3, seed=7, epoch=epoch, period=1)}
    assert seen == set(cands)


@given(
    st.integers(min_value=1, max_value=120),
    st.lists(st.tuples(st.floats(min_value=0, max_value=30), st.integers(1, 3)), max_size=200),
)
def test_budget_never_allows_more_than_per_minute_in_any_minute(
    per_minute: int, steps: list[tuple[float, int]]
) -> None:
    budget = ps.AttemptBudget(per_minute, 0.0)
    now, taken = 0.0, []
    for gap, n in steps:
        now += gap
        if budget.take(now, n):
            taken += [now] * n
    for t in taken:
        in_window = sum(1 for u in taken if t - 60 < u <= t)
        assert in_window <= 2 * per_minute  # a full bucket plus a minute's refill
    assert len(taken) <= per_minute + per_minute * now / 60 + 1e-9
    assert budget.spent == len(taken)


def test_budget_refills_and_reconnects_are_charged() -> None:
    budget = ps.AttemptBudget(6, 0.0)
    assert all(budget.take(0.0) for _ in range(6))
    assert not budget.take(0.0) and budget.denied == 1
    assert budget.take(10.0)  # one attempt per 10 s
    assert not budget.take(10.0)
    budget.charge(10.0, 3)  # reconnects made anyway: the next new connection waits longer
    assert not budget.take(40.0) and budget.take(50.0)  # -3 tokens: 40 s to the next one


times = st.floats(min_value=0, max_value=1e6)


@given(times, st.one_of(st.none(), times), times, st.floats(min_value=1, max_value=3600))
def test_store_verdict(joined: float, last: float | None, later: float, stall: float) -> None:
    now = joined + later
    verdict = ps.store_verdict(joined, last, now, stall)
    delivered = last is not None and last >= joined
    if verdict is None:  # fine: something arrived recently enough, or it is too early to say
        assert (delivered and last is not None and now - last <= stall) or (
            not delivered and now - joined <= stall
        )
    elif verdict == ps.REFUSED:
        assert not delivered and now - joined > stall
    else:
        assert verdict == ps.STALLED and delivered and last is not None and now - last > stall
