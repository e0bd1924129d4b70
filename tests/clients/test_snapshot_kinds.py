"""Snapshot kinds of the Snapshots contract and the ladder's scopes (lnsync/clients/snapshots.py)."""

from __future__ import annotations

from lnsync.clients.snapshots import kind_of, scope_of
from lnsync.rgs import ladder
from lnsync.v1 import snapshots_pb2 as pb

R = 1_770_000_000


def test_every_scope_round_trips_through_its_kind() -> None:
    for scope in (*ladder.scopes(86400), ladder.FULL, ladder.NOTHING_NEW):
        assert scope_of(kind_of(scope), max(scope, 0), 0, R) == scope
    assert kind_of(ladder.FULL) == pb.SNAPSHOT_KIND_FULL
    assert kind_of(ladder.NOTHING_NEW) == pb.SNAPSHOT_KIND_NOTHING_NEW
    assert kind_of(86400) == pb.SNAPSHOT_KIND_SCOPED


def test_a_listing_without_kinds_is_read_as_before() -> None:
    unspecified = pb.SNAPSHOT_KIND_UNSPECIFIED
    assert scope_of(unspecified, 86400, R - 86400, R) == 86400
    assert scope_of(unspecified, 0, R, R) == ladder.NOTHING_NEW
    assert scope_of(unspecified, 0, 0, R) == ladder.FULL
