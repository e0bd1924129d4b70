"""The store's row schema declared in lnsync/schema/columns.py is the one the migrations create,
and what the writer and lookup derive from it covers every column."""

from __future__ import annotations

import re

from lnsync import schema
from lnsync.schema import columns
from services.lookup import store as lookup_store
from services.persistence import store as writer_store


def _table(name: str) -> list[tuple[str, str]]:
    sql = "\n".join(text for _, _, text in schema.migrations())
    body = re.search(rf"CREATE TABLE {name} \((.*?)\n\);", sql, re.S)
    assert body is not None, name
    out = []
    for line in body[1].splitlines():
        words = line.split("--")[0].split()
        if len(words) >= 2 and words[0] != "PRIMARY":
            out.append((words[0], words[1].rstrip(",")))
    return out


def test_direction_columns_are_the_tables() -> None:
    assert [(c.name, c.sql) for c in columns.DIRECTION] == _table("channel_directions")
    # Later migrations change its storage, never its columns.
    later = "\n".join(text for _, _, text in schema.migrations())
    assert not re.search(r"ALTER TABLE channel_directions\s+(ADD|DROP|ALTER|RENAME)", later)


def test_writer_and_lookup_derive_theirs() -> None:
    assert columns.names(columns.DIRECTION) == writer_store.DIRECTION_COLUMNS
    assert writer_store._DIRECTION_ROW.size == 2 + sum(
        4 + {"iq": 8, "ii": 4, "ih": 2}[c.copy_format] for c in columns.DIRECTION
    )
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
