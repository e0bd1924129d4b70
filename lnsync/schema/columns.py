"""The store's row schema, declared once: each column of the tables persistence writes row by row
(``channel_updates``, ``channel_directions``, ``node_announcements``, ``nodes``) with its SQL type,
whether it holds a u64 in a signed bigint, and the short name lookup's delta engine reads it by;
and the one u64 <-> bigint mapping.

Persistence's writer derives its column lists, binary COPY rows, state selects, staging and upsert
SQL from this, and lookup its select lists and array dtypes; ``tests/persistence/test_columns.py``
checks it against the tables the migrations create in PostgreSQL. Adding a stored gossip field: a
migration, a :class:`Column` here, the rules (``lnsync/rgs/rules.py``), the model, and its value
where the writer builds the row.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_U64 = 1 << 64
INT8_MIN = -(1 << 63)  # the lowest bigint, where keyset paging over stored scids starts


def to_int8(value: int) -> int:
    """A u64 (scid, msat amount) as the signed bigint with the same bits."""
    return value - _U64 if value > 0x7FFF_FFFF_FFFF_FFFF else value


def to_u64(value: int) -> int:
    """A bigint holding a u64 back as the u64."""
    return value % _U64


def u64_array(values: np.ndarray) -> np.ndarray:
    """:func:`to_u64` over a NumPy array of bigints (a view, no arithmetic)."""
    return values.astype("int64").view("uint64")


# SQL type -> (binary COPY field after its int32 length, unnest array type). bytea's value
# follows its length unpacked.
_TYPES = {
    "bigint": ("q", "int8[]"),
    "timestamptz": ("q", "timestamptz[]"),  # µs since 2000-01-01
    "integer": ("i", "int4[]"),
    "smallint": ("h", "int2[]"),
    "boolean": ("?", "bool[]"),
    "bytea": ("", "bytea[]"),
}
# SQL integer type -> its big-endian NumPy dtype (a u64 too: read as int8, viewed as uint64 later).
_STORED_DTYPES = {"bigint": ">i8", "integer": ">i4", "smallint": ">i2"}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    # The SQL type, as the migration declares it.
    sql: str
    # The bigint holds an unsigned 64-bit value with the same bits (scids, msat amounts).
    u64: bool = False
    # The name lookup reads it by into the engine's arrays; None: lookup does not read it.
    read_as: str | None = None

    @property
    def copy_format(self) -> str:
        """The field of a binary COPY row: its int32 length, then its big-endian value (a u64 packed
        unsigned: the bigint gets the same bits)."""
        value = _TYPES[self.sql][0]
        return "i" + ("Q" if self.u64 else value)

    @property
    def array_type(self) -> str:
        """Its type as an ``unnest`` parameter."""
        return _TYPES[self.sql][1]

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

    @property
    def stored_dtype(self) -> str:
        """NumPy dtype of the column itself (selected without a cast) in a binary COPY: integer
        columns only."""
        return _STORED_DTYPES[self.sql]


# channel_updates: every distinct update ever stored (migration 001), in table order.
UPDATE = (
    Column("id", "bigint"),
    Column("scid", "bigint", u64=True),
    Column("direction", "smallint"),
    Column("timestamp", "bigint"),
    Column("message_flags", "smallint"),
    Column("channel_flags", "smallint"),
    Column("cltv_expiry_delta", "integer"),
    Column("htlc_minimum_msat", "bigint", u64=True),
    Column("fee_base_msat", "bigint"),
    Column("fee_proportional_millionths", "bigint"),
    Column("htlc_maximum_msat", "bigint", u64=True),
    Column("change_mask", "smallint"),  # RGS flag bits that differ from the previous latest
    Column("starts_life", "boolean"),
    Column("raw", "bytea"),
    Column("seen", "timestamptz"),
)

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

# node_announcements: every distinct node_announcement (migration 001), in table order.
NODE_ANNOUNCEMENT = (
    Column("id", "bigint"),
    Column("node_id", "bytea"),
    Column("timestamp", "bigint"),
    Column("features", "bytea"),
    Column("addresses", "bytea"),  # raw BOLT 7 address descriptors
    Column("alias", "bytea"),
    Column("rgb_color", "bytea"),
    Column("change_mask", "smallint"),  # 0x01 features, 0x02 addresses changed
    Column("raw", "bytea"),
    Column("seen", "timestamptz"),
)

# nodes: the latest announcement of each node (migration 001), in table order.
NODE = (
    Column("node_id", "bytea"),
    Column("announcement_id", "bigint"),
    Column("first_announcement_id", "bigint"),  # the first one ever stored
    Column("timestamp", "bigint"),
    Column("features", "bytea"),
    Column("addresses", "bytea"),
    Column("seen", "timestamptz"),
    Column("first_seen", "timestamptz"),
)

TABLES = {
    "channel_updates": UPDATE,
    "channel_directions": DIRECTION,
    "node_announcements": NODE_ANNOUNCEMENT,
    "nodes": NODE,
}


def names(columns: tuple[Column, ...]) -> tuple[str, ...]:
    return tuple(c.name for c in columns)


def column(columns: tuple[Column, ...], name: str) -> Column:
    return next(c for c in columns if c.name == name)


def copy_fields(columns: tuple[Column, ...]) -> struct.Struct:
    """Binary COPY fields of ``columns`` (a bytea contributes its length; its bytes follow)."""
    return struct.Struct(">" + "".join(c.copy_format for c in columns))


def copy_row(columns: tuple[Column, ...]) -> struct.Struct:
    """A whole binary COPY row of ``columns``: the int16 field count, then every field."""
    return struct.Struct(">h" + copy_fields(columns).format[1:])


def copy_dtype(columns: tuple[Column, ...], bytea_size: int = 0) -> np.dtype:
    """:func:`copy_row` as a NumPy structured dtype, so that many rows are one ``tobytes()``: the
    field count ``n``, then each column's length ``<name>_len`` and value ``<name>``; a bytea of
    ``bytea_size`` bytes (one size for every row of the array)."""
    import numpy as np

    fields: list[tuple[str, str]] = [("n", ">i2")]
    for c in columns:
        fields.append((f"{c.name}_len", ">i4"))
        if c.sql == "bytea":
            fields.append((c.name, f"S{bytea_size}"))
        else:
            fields.append((c.name, ">" + ("Q" if c.u64 else _TYPES[c.sql][0]).replace("?", "b1")))
    return np.dtype(fields)


def engine_columns(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """The columns lookup reads into the engine, in order."""
    return tuple(c for c in columns if c.read_as is not None)
