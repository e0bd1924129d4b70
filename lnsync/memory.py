"""Give freed heap memory back to the operating system.

A service that builds a large transient structure now and then (lookup: ~50 MB of records for a
full delta) leaves glibc's heap grown after freeing it, so its RSS ratchets up to the largest
moment plus fragmentation. ``malloc_trim`` returns the free pages at the top and in the middle
of the heap; it costs a few milliseconds, negligible next to the computation that preceded it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def release_free_memory() -> bool:
    """Trim glibc's heap; False where there is no glibc (musl, macOS): nothing to do there."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True
