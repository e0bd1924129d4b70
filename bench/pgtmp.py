"""A throw-away PostgreSQL for the benches that only need a database (lnsync's LocalPostgres)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lnsync.pg import LocalPostgres


@contextlib.contextmanager
def throwaway_database(prefix: str, name: str = "bench") -> Iterator[str]:
    """Start a durable PostgreSQL under /tmp, yield a database URL in it, then remove it all."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL may run as another user (see lnsync.pg)
    pg = LocalPostgres(root / "pg", ephemeral=True)
    pg.start()
    try:
        yield pg.ensure_database(name)
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
