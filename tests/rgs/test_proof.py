"""The publisher's proof (lnsync.rgs.proof) on drawn histories: what the engine makes from a correct
store always passes, for full snapshots and for "full at an earlier R, then the scoped blob served
to it"; a blob made from a store that differs from the truth (a fee changed, a channel gone) fails
with the first differing channel. Each check runs with the live graph in both forms: as columns
(proof.expect: the columnar model decides, the object model describes a failure) and as objects
(proof.expected_graph: the object model alone)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnsync.gossip.scid import scid_str
from lnsync.rgs import ladder, policy, proof
from lnsync.rgs.decode import decode
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.model import DeltaInput, DeltaParams
from tests.rgs.histories import DAY, MAINNET, START, random_history

INTERVAL = 3 * 3600
PARAMS = DeltaParams(apply_lag=ladder.apply_lag(INTERVAL, 60, 3600))


FORMS = pytest.mark.parametrize("form", [proof.expect, proof.expected_graph], ids=["columns", "objects"])


def graph_of(truth: proof.Graph | proof.Expected) -> proof.Graph:
    return truth.graph if isinstance(truth, proof.Expected) else truth


def blob(inp: DeltaInput, version: int) -> bytes:
    return encode(compute_delta(inp, PARAMS), version)


def full(history: GossipHistory, R: int, version: int) -> bytes:
    return blob(history.delta_input(0, R), version)


@FORMS
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    day=st.integers(2, 28),
    back=st.integers(0, 8 * 32),
    version=st.sampled_from(policy.VERSIONS),
    node_changes=st.booleans(),
)
def test_a_correct_store_always_passes(
    form: proof.Form, seed: int, day: int, back: int, version: int, node_changes: bool
) -> None:
    history = random_history(seed, days=30, nodes=12 if node_changes else 6)
    R = START + day * DAY
    R -= R % INTERVAL
    truth = form(history.delta_input(0, R), version)
    assert proof.prove_full(full(history, R, version), truth, MAINNET, R, version) is None
    # An earlier generation's R, then the scope the ladder serves to a client that synced there.
    earlier = R - back * INTERVAL
    scope = policy.choose_snapshot(earlier, R, ladder.scopes(INTERVAL)).scope
    if scope > 0:
        scoped = blob(history.delta_input(R - scope, R), version)
        base = full(history, earlier, version)
        assert proof.prove_chain(base, earlier, scoped, truth, MAINNET, R, version) is None


def _with_fee(inp: DeltaInput, row: int, fee: int) -> DeltaInput:
    fees = inp.channels.fee_base_msat.copy()
    fees[row, 0] = fee
    return dataclasses.replace(inp, channels=dataclasses.replace(inp.channels, fee_base_msat=fees))


def _without(inp: DeltaInput, row: int) -> DeltaInput:
    ch = inp.channels
    keep = np.arange(len(ch)) != row
    fields = {
        f.name: (
            [v for v, k in zip(getattr(ch, f.name), keep.tolist(), strict=True) if k]
            if isinstance(getattr(ch, f.name), list)
            else getattr(ch, f.name)[keep]
        )
        for f in dataclasses.fields(ch)
    }
    return dataclasses.replace(inp, channels=type(ch)(**fields))


@FORMS
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), version=st.sampled_from(policy.VERSIONS))
def test_a_store_that_differs_from_the_truth_fails_with_the_first_differing_channel(
    form: proof.Form, seed: int, version: int
) -> None:
    history = random_history(seed, days=30)
    R = START + 20 * DAY
    inp = history.delta_input(0, R)
    assert len(inp.channels) >= 2
    truth = form(inp, version)
    row = len(inp.channels) // 2
    scid = int(inp.channels.scid[row])
    changed = blob(_with_fee(inp, row, int(inp.channels.fee_base_msat[row, 0]) + 1), version)
    failure = proof.prove_full(changed, truth, MAINNET, R, version)
    assert failure is not None and failure.check == "full"
    assert failure.what == f"channel {scid_str(scid)}"
    assert isinstance(failure.expected, proof.ChannelFacts) and isinstance(failure.actual, proof.ChannelFacts)
    assert failure.actual.directions[0][3] == failure.expected.directions[0][3] + 1
    gone = proof.prove_full(blob(_without(inp, row), version), truth, MAINNET, R, version)
    assert gone is not None and gone.actual is None and gone.expected == graph_of(truth).channels[scid]
    # The chain check: the earlier full snapshot, then a scoped blob missing the fee change.
    R2 = R + INTERVAL
    truth2 = form(history.delta_input(0, R2), version)
    base = blob(_with_fee(inp, row, 7), version)
    scoped = blob(history.delta_input(R2 - INTERVAL, R2), version)
    if scid in graph_of(truth2).channels and not any(
        u.scid == scid and u.direction == 0 for u in decode(scoped).updates
    ):
        chain = proof.prove_chain(base, R, scoped, truth2, MAINNET, R2, version)
        assert chain is not None and chain.check == "chain"


@FORMS
def test_a_rejected_blob_fails(form: proof.Form) -> None:
    history = random_history(1, days=30)
    R = START + 20 * DAY
    truth = form(history.delta_input(0, R), 2)
    failure = proof.prove_full(b"\x00" * 10, truth, MAINNET, R, 2)
    assert failure is not None and failure.what == "blob" and "rejected" in str(failure.actual)


@FORMS
def test_capacities_count_in_full_snapshots_but_not_in_chains(form: proof.Form) -> None:
    """A client keeps the capacity of a channel's first announcement: one learnt later (a funding
    check, an archive's amount) cannot reach a client that holds the channel, and is no failure of
    a chain; a full snapshot without it is."""
    history = random_history(5, days=30)
    R = START + 20 * DAY
    inp = history.delta_input(0, R)
    row = next(i for i, fs in enumerate(inp.channels.funding_sats.tolist()) if fs > 0)
    unknown = inp.channels.funding_sats.copy()
    unknown[row] = -1
    before = dataclasses.replace(inp, channels=dataclasses.replace(inp.channels, funding_sats=unknown))
    truth = form(inp, 2)
    failure = proof.prove_full(blob(before, 2), truth, MAINNET, R, 2)
    assert failure is not None and "capacity_sats" in str(failure)
    R2 = R + INTERVAL
    scoped = blob(history.delta_input(R, R2), 2)
    truth2 = form(history.delta_input(0, R2), 2)
    assert proof.prove_chain(blob(before, 2), R, scoped, truth2, MAINNET, R2, 2) is None
