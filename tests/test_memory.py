"""lnsync.memory: freed heap memory really goes back to the system (what keeps lookup's RSS flat)."""

from __future__ import annotations

import sys

import psutil
import pytest

from lnsync.memory import release_free_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trimming_returns_freed_heap_pages() -> None:
    me = psutil.Process()
    # 2 kB objects come from malloc (not Python's small-object arenas); a 1 kB survivor after every
    # hundredth pins the heap, so free() alone keeps the freed space (as after a delta set).
    chunks, survivors = [], []
    for i in range(100_000):
        chunks.append(bytes(2048) + bytes([i % 256]))
        if i % 100 == 99:
            survivors.append(bytes(1024) + bytes([i % 256]))
    held = me.memory_info().rss
    del chunks
    freed = me.memory_info().rss
    assert release_free_memory()
    trimmed = me.memory_info().rss
    assert len(survivors) == 1000
    assert freed - trimmed > 150 * 2**20, (held >> 20, freed >> 20, trimmed >> 20)
