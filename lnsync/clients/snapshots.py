"""The ``Snapshots`` contract's snapshot kinds and the ladder's scopes, one for the other: the
snapshotter answers with them and the gateway reads (and asks by) them."""

from __future__ import annotations

from lnsync.rgs import ladder
from lnsync.v1 import snapshots_pb2

_KINDS = {
    ladder.FULL: snapshots_pb2.SNAPSHOT_KIND_FULL,
    ladder.NOTHING_NEW: snapshots_pb2.SNAPSHOT_KIND_NOTHING_NEW,
}


def kind_of(scope: int) -> snapshots_pb2.SnapshotKind:
    """The kind of the snapshot at ``scope`` (seconds, or ladder.FULL / ladder.NOTHING_NEW)."""
    return _KINDS.get(scope, snapshots_pb2.SNAPSHOT_KIND_SCOPED)


def scope_of(kind: int, scope_seconds: int, last_sync_timestamp: int, reference_time: int) -> int:
    """The ladder scope a listed or requested snapshot stands for. A snapshotter older than
    ``kind`` (UNSPECIFIED) folded FULL and NOTHING_NEW into scope 0; then its last sync tells."""
    if kind == snapshots_pb2.SNAPSHOT_KIND_FULL:
        return ladder.FULL
    if kind == snapshots_pb2.SNAPSHOT_KIND_NOTHING_NEW:
        return ladder.NOTHING_NEW
    if scope_seconds or kind == snapshots_pb2.SNAPSHOT_KIND_SCOPED:
        return int(scope_seconds)
    return ladder.NOTHING_NEW if last_sync_timestamp == reference_time else ladder.FULL
