"""``lnsync gen``'s unsigned history for the benches, generated once and then read from a cache file.

Three benches (ingest, rgs, lookup) need the same mainnet-scale history; generating it costs 35 s
of CPU (100 s of wall time on a busy machine), reading it back a few seconds. The cache lives in
``$BENCH_HISTORY_CACHE`` (default ``~/.cache/lnsync/bench``; not an ``LNSYNC_`` name, which
the services would refuse as an unknown setting), one file per (seed, scale, days, end
time): records of received time (µs), funding amount (-1: none), length and wire bytes. A file is
written under a temporary name and renamed when complete, so a crash never leaves half a history.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

from lnsync.gen import DEFAULT_END_TIME, GeneratedMessage, generate_history

_HEAD = struct.Struct("<qqI")  # received_at µs, funding_sats (-1 = None), length of raw
_MAGIC = b"lnsync-bench-history-1\n"


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_HISTORY_CACHE") or Path.home() / ".cache" / "lnsync" / "bench")


def history(seed: int, scale: float, days: float = 14.0) -> Iterator[GeneratedMessage]:
    """The messages of ``generate_history(seed=, scale=, days=, sign=False)``, in order (received
    times rounded to the µs, as every bench uses them)."""
    path = cache_dir() / f"history-seed{seed}-scale{scale:g}-days{days:g}-end{DEFAULT_END_TIME}.bin"
    if path.exists():
        yield from _read(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        with partial.open("wb") as out:
            out.write(_MAGIC)
            for msg in generate_history(seed=seed, scale=scale, days=days, sign=False):
                received = round(msg.received_at * 1_000_000)
                funding = -1 if msg.funding_sats is None else msg.funding_sats
                out.write(_HEAD.pack(received, funding, len(msg.raw)))
                out.write(msg.raw)
                yield GeneratedMessage(msg.raw, received / 1_000_000, msg.funding_sats)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)


def _read(path: Path) -> Iterator[GeneratedMessage]:
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise ValueError(f"{path} is not a bench history cache; delete it")
    pos, size, unpack = len(_MAGIC), _HEAD.size, _HEAD.unpack_from
    while pos < len(data):
        received, funding, length = unpack(data, pos)
        pos += size
        yield GeneratedMessage(
            data[pos : pos + length], received / 1_000_000, None if funding < 0 else funding
        )
        pos += length
