"""The columnar client model (lnsync.rgs.columnar) against the object one (lnsync.rgs.client, checked
against the real LDK by the interop tests): on drawn histories, any full snapshot and any scoped
blob after it leave both holding the same graph (channels with both directions, capacities, node
details); on blobs with bytes changed at random, the columnar model either holds what the object
model holds or declines (columnar.Unusual), never a different graph; and the proof's fast path
decides ordinary generations by itself."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from lnsync.rgs import columnar, ladder, policy, proof
from lnsync.rgs.client import ClientError, RgsClient
from lnsync.rgs.decode import RgsDecodeError
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.model import DeltaParams
from tests.rgs.histories import DAY, MAINNET, START, random_history

PARAMS = DeltaParams(apply_lag=ladder.apply_lag(3 * 3600, 60, 3600))
Held = tuple[dict[int, tuple[object, ...]], dict[bytes, tuple[object, ...]]]


def from_objects(client: RgsClient) -> Held:
    channels = {
        scid: (c.node_1, c.node_2, c.capacity_sats, c.directions[0].values(), c.directions[1].values())
        for scid, c in client.channels.items()
        if c.directions[0] is not None and c.directions[1] is not None
    }
    return channels, {k: (v.features, tuple(v.addresses)) for k, v in client.node_info.items()}


def from_columns(state: columnar.State) -> Held:
    s = state._take(state.complete())
    channels = {}
    for i, scid in enumerate(s.scid.tolist()):
        dirs = tuple((bool(s.disabled[i, d]), *(int(x) for x in s.values[i, d].tolist())) for d in (0, 1))
        capacity = int(s.capacity[i])
        channels[scid] = (
            bytes(s.node_1[i : i + 1].view("V33")[0]),
            bytes(s.node_2[i : i + 1].view("V33")[0]),
            None if capacity < 0 else capacity,
            *dirs,
        )
    return channels, {k: (v[0], v[1]) for k, v in state.nodes.items()}


def both(blobs: list[tuple[bytes, int]]) -> tuple[Held | str, Held | str]:
    """Apply the (blob, now) in turn to both models: what each holds, or why it refused."""
    client, state = RgsClient(MAINNET), columnar.State.empty()
    objects: Held | str
    columns: Held | str
    try:
        for data, now in blobs:
            client.prune(now)
            client.apply(data, now)
        objects = from_objects(client)
    except (ClientError, RgsDecodeError) as exc:
        objects = f"refused: {exc}"
    try:
        for data, now in blobs:
            state = columnar.prune(state, now)
            state = columnar.apply(state, columnar.decode(data), MAINNET, now)
        columns = from_columns(state)
    except columnar.Unusual as exc:
        columns = f"unusual: {exc}"
    return objects, columns


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    day=st.integers(1, 29),
    back=st.integers(0, 24 * 20),
    version=st.sampled_from(policy.VERSIONS),
)
def test_both_models_hold_the_same_graph(seed: int, day: int, back: int, version: int) -> None:
    history = random_history(seed, days=30, nodes=12)
    R = START + day * DAY
    T = max(START, R - back * 3600)
    base = encode(compute_delta(history.delta_input(0, T), PARAMS), version)
    scoped = encode(compute_delta(history.delta_input(T, R), PARAMS), version)
    full = encode(compute_delta(history.delta_input(0, R), PARAMS), version)
    for blobs in ([(full, R)], [(base, T), (scoped, R)]):
        objects, columns = both(blobs)
        assert not isinstance(columns, str), columns  # lnsync's own blobs: decided by the columns
        assert objects == columns


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), version=st.sampled_from(policy.VERSIONS), flips=st.integers(1, 4))
def test_a_damaged_blob_is_held_alike_or_declined(seed: int, version: int, flips: int) -> None:
    history = random_history(seed % 50, days=30, nodes=12)
    R = START + 20 * DAY
    T = R - 2 * DAY
    base = encode(compute_delta(history.delta_input(0, T), PARAMS), version)
    scoped = bytearray(encode(compute_delta(history.delta_input(T, R), PARAMS), version))
    rng = random.Random(seed)
    for _ in range(flips):
        at = rng.randrange(40, len(scoped))  # after the header (chain and time: tested as whole)
        scoped[at] ^= 1 << rng.randrange(8)
    objects, columns = both([(base, T), (bytes(scoped), R)])
    if not isinstance(columns, str):
        assert objects == columns


def test_the_fast_path_decides_ordinary_generations() -> None:
    """The proof of a correct generation needs no object model: the columns prove it."""
    history = random_history(3, days=30)
    R = START + 20 * DAY
    for version in policy.VERSIONS:
        expected = proof.expect(history.delta_input(0, R), version)
        full = encode(compute_delta(history.delta_input(0, R), PARAMS), version)
        kept: dict[int, columnar.State] = {}
        assert proof.prove_full(full, expected, MAINNET, R, version, keep=kept) is None
        assert expected._graph is None and version in kept  # the object form was never built
        R2 = R + DAY
        expected2 = proof.expect(history.delta_input(0, R2), version)
        scoped = encode(compute_delta(history.delta_input(R, R2), PARAMS), version)
        assert (
            proof.prove_chain(full, R, scoped, expected2, MAINNET, R2, version, base_state=kept[version])
            is None
        )
        assert expected2._graph is None
