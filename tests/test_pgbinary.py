"""Binary COPY parsing against a real PostgreSQL, including bytea values ending in zero bytes."""

from __future__ import annotations

import asyncpg
import pytest

from lnsync import pgbinary


async def test_fixed_width_rows_round_trip(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        chunks: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            chunks.append(chunk)

        await conn.copy_from_query(
            "SELECT x::int8, (x * 7)::int2, decode(lpad(to_hex(x), 6, '0') || '0000', 'hex') "
            "FROM generate_series(-3, 1000) x WHERE x >= 0",
            output=sink,
            format="binary",
        )
        rows = pgbinary.parse(b"".join(chunks), [("a", ">i8"), ("b", ">i2"), ("c", "V5")])
        assert rows["a"].tolist() == list(range(1001))
        assert rows["b"].tolist() == [x * 7 for x in range(1001)]
        assert rows["c"][1].tobytes() == bytes.fromhex("0000010000")  # trailing zeros kept
        with pytest.raises(pgbinary.CopyFormatError, match="fixed width"):
            pgbinary.parse(b"".join(chunks), [("a", ">i8"), ("b", ">i4"), ("c", "V5")])
    finally:
        await conn.close()


def test_rejects_garbage() -> None:
    with pytest.raises(pgbinary.CopyFormatError):
        pgbinary.parse(b"not a copy stream", [("a", ">i8")])
