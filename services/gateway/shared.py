"""What one gateway worker learned that every worker must answer alike: a file each in a folder.

The kernel spreads connections over the workers, so a readiness probe reaches any of them. State one
worker learned from its own traffic (lookup refused a delta for its sync gate; persistence once said
the first full sync is done) would make /readyz answer by which worker a probe reached, and the pod
flap in and out of its Service. The supervisor makes one folder for its workers; each fact is a
small file there, replaced whole (a reader sees the old value or the new one). Without a folder (one
worker in a test, or embedded) the facts stay in memory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

GATE_CLOSED_AT = "lookup-gate-closed-at"  # wall-clock time lookup last refused a delta for its gate
FIRST_SYNC_SEEN = "first-sync-seen"  # persistence said the first full graph sync is done


class SharedFacts:
    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder
        self._memory: dict[str, float] = {}

    def set(self, name: str, value: float) -> None:
        if self._folder is None:
            self._memory[name] = value
            return
        part = self._folder / f".{name}.{os.getpid()}"
        part.write_text(repr(value))
        os.replace(part, self._folder / name)

    def clear(self, name: str) -> None:
        if self._folder is None:
            self._memory.pop(name, None)
            return
        with contextlib.suppress(FileNotFoundError):
            (self._folder / name).unlink()

    def get(self, name: str) -> float | None:
        if self._folder is None:
            return self._memory.get(name)
        try:
            return float((self._folder / name).read_text())
        except (FileNotFoundError, ValueError):
            return None
