"""The column-wise decision (rules.decide_updates, persistence's hot path) against the per-update
rule it twins (rules.decide_update folded over the batch in arrival order)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lnsync.rgs import format as f
from lnsync.rgs import rules

# Few distinct values, so that equal timestamps and equal policies are common; the u64 extremes of
# the msat fields included.
_POLICIES = st.tuples(
    st.integers(0, 1), st.sampled_from([6, 144]), st.sampled_from([0, 1000, 2**64 - 1]),
    st.sampled_from([0, 1000]), st.sampled_from([1, 100]), st.sampled_from([2**63, 2**64 - 1, 5]),
)  # fmt: skip
_UPDATES = st.lists(
    st.tuples(
        st.integers(0, 3),  # direction
        st.integers(0, 2**32 - 1) | st.integers(1000, 1010),  # timestamp
        # seen, relative to the timestamp: near the two weeks after which a direction is dead, too
        st.integers(0, 3 * f.STALE_AFTER) | st.integers(f.STALE_AFTER - 12, f.STALE_AFTER + 2),
        _POLICIES,
        st.booleans(),  # duplicate
    ),
    min_size=1,
    max_size=40,
)
_LATEST = st.lists(
    st.none() | st.tuples(st.integers(0, 2**32 - 1) | st.integers(995, 1012), _POLICIES),
    min_size=4,
    max_size=4,
)


def _fold(updates: list, latest: list) -> list[rules.Decision]:
    state = list(latest)
    out = []
    for g, ts, seen, policy, dup in updates:
        d = rules.decide_update(state[g], ts, ts + seen, policy, dup)
        if d.outcome is rules.Outcome.STORED:
            state[g] = (ts, policy)
        out.append(d)
    return out


@settings(max_examples=400, deadline=None)
@given(updates=_UPDATES, latest=_LATEST)
def test_the_batch_decision_is_decide_update_in_arrival_order(updates: list, latest: list) -> None:
    zero = (0,) * 6
    decided = rules.decide_updates(
        np.array([u[0] for u in updates], dtype=np.int64),
        np.array([u[1] for u in updates], dtype=np.int64),
        np.array([u[1] + u[2] for u in updates], dtype=np.int64),
        np.array([u[3] for u in updates], dtype=np.uint64).reshape(-1, 6),
        np.array([u[4] for u in updates], dtype=bool),
        np.array([-1 if x is None else x[0] for x in latest], dtype=np.int64),
        np.array([zero if x is None else x[1] for x in latest], dtype=np.uint64).reshape(-1, 6),
    )
    got = [
        (rules.OUTCOMES[o], int(m), bool(s))
        for o, m, s in zip(decided.outcome, decided.change_mask, decided.starts_life, strict=True)
    ]
    assert got == [(d.outcome, d.change_mask, d.starts_life) for d in _fold(updates, latest)]


def test_a_direction_without_a_latest_starts_a_life_and_later_arrivals_compare_with_it() -> None:
    policy = np.array([[0, 6, 1, 2, 3, 4]] * 3, dtype=np.uint64)
    policy[2, 3] = 9  # the third changes its fee base
    decided = rules.decide_updates(
        np.zeros(3, dtype=np.int64),
        np.array([10, 5, 11], dtype=np.int64),
        np.array([10, 5, 11], dtype=np.int64),
        policy,
        np.zeros(3, dtype=bool),
        np.array([-1], dtype=np.int64),
        np.zeros((1, 6), dtype=np.uint64),
    )
    assert [rules.OUTCOMES[o] for o in decided.outcome] == [
        rules.Outcome.STORED, rules.Outcome.STALE, rules.Outcome.STORED,
    ]  # fmt: skip
    assert decided.change_mask.tolist() == [rules.NEW_LIFE_MASK, 0, f.UPDATE_FEE_BASE]
    assert decided.starts_life.tolist() == [True, False, False]
