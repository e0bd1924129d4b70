"""The store's row schema, declared once: each column of ``channel_directions`` with its SQL type,
whether it holds a u64 in a signed bigint, and the short name the delta engine reads it by.

Persistence's writer derives its column list, its binary COPY row and its staging SQL from this,
and lookup its select list and array dtypes; ``tests/persistence/test_columns.py`` checks it
against the migrations. Adding a stored direction field: a migration, a :class:`Column` here, the
rules (``lnsync/rgs/rules.py``) and the model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    # The SQL type (as 001_graph.sql declares it): bigint, integer, smallint or timestamptz.
    sql: str
    # The bigint holds an unsigned 64-bit value with the same bits (scids, msat amounts).
    u64: bool = False
    # The name lookup reads it by into the engine's arrays; None: lookup does not read it.
    read_as: str | None = None

    @property
    def copy_format(self) -> str:
        """The field of a binary COPY row: its int32 length, then its big-endian value (timestamptz:
        µs since 2000-01-01)."""
        return {"bigint": "iq", "timestamptz": "iq", "integer": "ii", "smallint": "ih"}[self.sql]

    def as_micros(self, table: str) -> str:
        """A select expression: the value, times as µs since the Unix epoch (int8)."""
        if self.sql == "timestamptz":
            return f"(extract(epoch FROM {table}.{self.name}) * 1000000)::int8"
        return f"{table}.{self.name}"

    def as_engine_value(self, table: str) -> str:
        """A select expression for lookup's binary COPY: int8 (flags int2), times in whole seconds."""
        if self.sql == "timestamptz":
            return f"floor(extract(epoch FROM {table}.{self.name}))::int8"
        if self.sql == "integer":
            return f"{table}.{self.name}::int8"
        return f"{table}.{self.name}"

    @property
    def dtype(self) -> str:
        """NumPy dtype of :meth:`as_engine_value` in a binary COPY."""
        return ">i2" if self.sql == "smallint" else ">i8"


# channel_directions: the latest update of each direction (migration 001), in table order.
DIRECTION = (
    Column("scid", "bigint", u64=True),
    Column("direction", "smallint"),
    Column("update_id", "bigint"),
    Column("timestamp", "bigint", read_as="ts"),
    Column("channel_flags", "smallint", read_as="flags"),
    Column("cltv_expiry_delta", "integer", read_as="cltv"),
    Column("htlc_minimum_msat", "bigint", u64=True, read_as="hmin"),
    Column("fee_base_msat", "bigint", read_as="fbase"),
    Column("fee_proportional_millionths", "bigint", read_as="fprop"),
    Column("htlc_maximum_msat", "bigint", u64=True, read_as="hmax"),
    Column("seen", "timestamptz", read_as="seen"),  # seen of that latest update
    Column("alive_update_id", "bigint"),  # the update that started the current life
    Column("alive_since", "timestamptz", read_as="alive"),  # seen of that update
)
DIRECTION_KEY = ("scid", "direction")


def names(columns: tuple[Column, ...]) -> tuple[str, ...]:
    return tuple(c.name for c in columns)


def copy_row(columns: tuple[Column, ...]) -> struct.Struct:
    """A whole binary COPY row of ``columns``: the int16 field count, then every field."""
    return struct.Struct(">h" + "".join(c.copy_format for c in columns))


def engine_columns(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """The columns lookup reads into the engine, in order."""
    return tuple(c for c in columns if c.read_as is not None)
