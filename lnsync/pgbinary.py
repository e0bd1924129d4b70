"""Parse PostgreSQL's binary COPY output into NumPy structured arrays.

Reading tens of thousands of rows through asyncpg's Record objects costs a Python object per value;
when every column has a fixed width (integers, fixed-length bytea) a binary ``COPY ... TO STDOUT``
stream has a constant row size and NumPy can view it directly. This is how the lookup service reads
the whole live graph in tens of milliseconds. Pure code: it only parses bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
# (name, NumPy dtype) per column; integers as big-endian ('>i8', '>i4', '>i2'), bytea as 'V<n>'
# (not 'S<n>': NumPy strips trailing zero bytes from those).
Column = tuple[str, str]


class CopyFormatError(ValueError):
    """The stream is not binary COPY output with the expected fixed-width columns."""


def parse(data: bytes | bytearray, columns: Sequence[Column]) -> np.ndarray:
    """Rows of a binary COPY stream whose columns all have the given fixed widths (no NULLs)."""
    if not data.startswith(SIGNATURE):
        raise CopyFormatError("missing binary COPY signature")
    (ext_len,) = struct.unpack_from(">I", data, len(SIGNATURE) + 4)
    start = len(SIGNATURE) + 8 + ext_len
    end = len(data) - 2  # trailer: int16 -1
    if data[end:] != b"\xff\xff":
        raise CopyFormatError("missing binary COPY trailer")
    fields: list[tuple[str, str]] = [("_count", ">i2")]
    sizes = []
    for name, dtype in columns:
        fields += [(f"_len_{name}", ">i4"), (name, dtype)]
        sizes.append(np.dtype(dtype).itemsize)
    row = np.dtype(fields)
    body = memoryview(data)[start:end]
    if len(body) % row.itemsize:
        raise CopyFormatError("rows are not of the expected fixed width (a NULL or a wrong type?)")
    rows = np.frombuffer(body, dtype=row)
    if len(rows) and (np.any(rows["_count"] != len(columns))):
        raise CopyFormatError("unexpected column count")
    for (name, _), size in zip(columns, sizes, strict=True):
        if len(rows) and np.any(rows[f"_len_{name}"] != size):
            raise CopyFormatError(f"column {name} is not {size} bytes wide in every row")
    return rows
