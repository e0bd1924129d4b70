"""Snapshot generations in PostgreSQL (migration 003): written once, published atomically, read by
every snapshotter replica, deleted when no reader can still be using them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

SNAPSHOT_LOCK = 0x6C6E73736E70  # "lnssnp": one generator at a time across replicas


@dataclass(frozen=True, slots=True)
class StoredBlob:
    version: int
    scope: int  # seconds; 0 full; -1 nothing new
    last_sync: int
    timestamp: int
    node_count: int
    announcement_count: int
    update_count: int
    sha256: bytes
    blob: bytes
    gzip: bytes


@dataclass(frozen=True, slots=True)
class Generation:
    id: int
    reference_time: int
    interval: int
    published_at: float
    blobs: dict[tuple[int, int], StoredBlob]  # (version, scope) -> blob


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def current_generation_id(conn: Any) -> int | None:
    return await conn.fetchval("SELECT generation_id FROM snapshot_current WHERE id = 1")  # type: ignore[no-any-return]


async def load_generation(conn: Any, generation_id: int) -> Generation | None:
    head = await conn.fetchrow(
        "SELECT id, reference_time, interval_seconds, extract(epoch FROM published_at) AS published "
        "FROM snapshot_generations WHERE id = $1 AND published_at IS NOT NULL",
        generation_id,
    )
    if head is None:
        return None
    blobs = {}
    for r in await conn.fetch(
        "SELECT version, scope, last_sync, timestamp, node_count, announcement_count, update_count, sha256, "
        "blob, gzip FROM snapshot_blobs WHERE generation_id = $1",
        generation_id,
    ):
        blob = StoredBlob(
            version=r["version"],
            scope=r["scope"],
            last_sync=r["last_sync"],
            timestamp=r["timestamp"],
            node_count=r["node_count"],
            announcement_count=r["announcement_count"],
            update_count=r["update_count"],
            sha256=bytes(r["sha256"]),
            blob=bytes(r["blob"]),
            gzip=bytes(r["gzip"]),
        )
        blobs[(blob.version, blob.scope)] = blob
    return Generation(
        head["id"], head["reference_time"], head["interval_seconds"], float(head["published"]), blobs
    )


async def create_generation(conn: Any, reference_time: int, interval: int) -> int:
    gen_id: int = await conn.fetchval(
        "INSERT INTO snapshot_generations (reference_time, interval_seconds) VALUES ($1, $2) RETURNING id",
        reference_time,
        interval,
    )
    return gen_id


async def add_blob(conn: Any, generation_id: int, blob: StoredBlob) -> None:
    await conn.execute(
        "INSERT INTO snapshot_blobs (generation_id, version, scope, last_sync, timestamp, node_count, "
        "announcement_count, update_count, sha256, blob, gzip) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
        generation_id,
        blob.version,
        blob.scope,
        blob.last_sync,
        blob.timestamp,
        blob.node_count,
        blob.announcement_count,
        blob.update_count,
        blob.sha256,
        blob.blob,
        blob.gzip,
    )


async def publish(conn: Any, generation_id: int, seconds: float, keep: int) -> None:
    """Make ``generation_id`` the current one and drop what no reader needs any more: generations
    older than the ``keep`` most recent published ones, and unfinished ones (crashed generators)."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE snapshot_generations SET published_at = now(), seconds = $2 WHERE id = $1",
            generation_id,
            seconds,
        )
        await conn.execute(
            "INSERT INTO snapshot_current (id, generation_id) VALUES (1, $1) "
            "ON CONFLICT (id) DO UPDATE SET generation_id = EXCLUDED.generation_id",
            generation_id,
        )
        await conn.execute(
            "DELETE FROM snapshot_generations WHERE id <> $1 AND ((published_at IS NULL AND id < $1) "
            "OR id NOT IN (SELECT id FROM snapshot_generations WHERE published_at IS NOT NULL "
            "ORDER BY id DESC LIMIT $2))",
            generation_id,
            keep + 1,
        )
