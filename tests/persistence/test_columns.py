"""The store's row schema declared in lnsync/schema/columns.py is the one the migrations create in
PostgreSQL, what the writer and lookup derive from it covers every column, and the u64 mapping
keeps every bit."""

from __future__ import annotations

import struct

import asyncpg
import numpy as np
import pytest

from lnsync.schema import columns
from lnsync.schema.columns import INT8_MIN, to_int8, to_u64, u64_array
from services.lookup import store as lookup_store
from services.persistence import store as writer_store

# information_schema's data_type for each declared SQL type.
_INFORMATION_TYPE = {
    "bigint": "bigint",
    "integer": "integer",
    "smallint": "smallint",
    "boolean": "boolean",
    "bytea": "bytea",
    "timestamptz": "timestamp with time zone",
}


@pytest.mark.parametrize("table", sorted(columns.TABLES))
async def test_declaration_is_the_migrated_table(database_url: str, table: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            table,
        )
    finally:
        await conn.close()
    actual = [(r["column_name"], r["data_type"]) for r in rows]
    declared = [(c.name, _INFORMATION_TYPE[c.sql]) for c in columns.TABLES[table]]
    assert declared == actual


def test_writer_and_lookup_derive_theirs() -> None:
    assert columns.names(columns.DIRECTION) == writer_store.DIRECTION_COLUMNS
    assert columns.names(columns.UPDATE) == writer_store.UPDATE_COLUMNS
    assert columns.names(columns.NODE_ANNOUNCEMENT) == writer_store.NODE_COLUMNS
    # The writer's binary COPY rows (NumPy records, columns.copy_dtype) are copy_row's layout.
    for table, raw in ((columns.DIRECTION, b""), (columns.UPDATE, b"\x01\x02raw")):
        values = {
            c.name: (2**64 - 1 - k if c.u64 else k + 1) for k, c in enumerate(table) if c.sql != "bytea"
        }
        values.update({c.name: 1 for c in table if c.sql == "boolean"})
        record = writer_store._copy_records(columns.copy_dtype(table, len(raw)), 1)
        for name, value in values.items():
            record[name] = value
        if raw:
            record["raw"] = raw
        fields: list[int] = [len(table)]
        for c in table:
            if c.sql == "bytea":
                fields.append(len(raw))
            else:
                fields += [struct.calcsize(">" + c.copy_format[1:]), values[c.name]]
        at = [c.sql for c in table].index("bytea") if raw else len(table)
        head = columns.copy_row(table[: at + 1]) if raw else columns.copy_row(table)
        expected = (
            head.pack(*fields[: 2 * at + 2])
            + raw
            + columns.copy_fields(table[at + 1 :]).pack(*fields[2 * at + 2 :])
        )
        assert record.tobytes() == expected
    for name in columns.names(columns.NODE):
        assert f"n.{name}" in writer_store.NODE_STATE_SQL
    assert lookup_store._DIR_COLUMNS == (
        "ts",
        "flags",
        "cltv",
        "hmin",
        "fbase",
        "fprop",
        "hmax",
        "seen",
        "alive",
    )
    assert lookup_store._DIR_COLUMNS[:8] == lookup_store._FROM_UPDATE_NAMES


@pytest.mark.parametrize("u64", [0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 0x0C0FFEE000010001])
def test_u64_mapping_keeps_the_bits(u64: int) -> None:
    signed = to_int8(u64)
    assert INT8_MIN <= signed < 1 << 63
    assert struct.pack(">q", signed) == struct.pack(">Q", u64)  # what a binary COPY writes
    assert to_u64(signed) == u64
    assert u64_array(np.array([signed], dtype=">i8")).tolist() == [u64]
