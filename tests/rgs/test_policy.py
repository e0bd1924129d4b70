"""The serving policy every service applies (lnsync/rgs/policy.py)."""

from __future__ import annotations

from lnsync.rgs import ladder, policy
from lnsync.rgs.decode import decode
from lnsync.rgs.format import VERSIONS
from tests.gossip_helpers import MAINNET

R = 1_770_000_000


def test_versions_are_the_formats() -> None:
    assert policy.VERSIONS == VERSIONS
    assert all(policy.version_problem(v) is None for v in VERSIONS)
    assert policy.version_problem(3) == "version must be 1 or 2, not 3"


def test_future_tolerance() -> None:
    assert not policy.in_future(R + policy.FUTURE_TOLERANCE, R)
    assert policy.in_future(R + policy.FUTURE_TOLERANCE + 1, R)


def test_reference_time_is_lagged_and_rounded_down() -> None:
    assert policy.reference_time(R + 59, 0, 60) == R - R % 60
    assert policy.reference_time(R, 60, 1) == R - 60
    assert policy.reference_time(R, 60, 10800) % 10800 == 0


def test_old_clients_get_the_full_graph() -> None:
    assert policy.effective_last_sync(0, R) == 0
    assert policy.effective_last_sync(R - policy.FULL_SYNC_AFTER + 1, R) == R - policy.FULL_SYNC_AFTER + 1
    assert policy.effective_last_sync(R - policy.FULL_SYNC_AFTER, R) == 0


def test_nothing_new_never_moves_a_client_back() -> None:
    assert policy.is_nothing_new(R, R) and not policy.is_nothing_new(R - 1, R)
    for T in (R, R + 300):
        for version in VERSIONS:
            timestamp, blob = policy.nothing_new(MAINNET, T, R, version)
            assert timestamp == T and decode(blob).timestamp == T
    assert policy.ahead_of_generation(R + 1, R) and not policy.ahead_of_generation(R, R)


def test_snapshot_choice_is_the_ladders() -> None:
    scopes = ladder.scopes(86400)
    assert policy.choose_snapshot(0, R, scopes).kind == "full"
    assert policy.choose_snapshot(R, R, scopes).kind == "nothing_new"
    assert policy.choose_snapshot(R - 3600, R, scopes) == ladder.Choice(86400)
