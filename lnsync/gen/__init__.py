"""Synthetic but realistic gossip history on the real mainnet topology (``lnsync gen``).

Use :func:`generate_history` from tests and benchmarks::

    for msg in generate_history(seed=1, scale=0.05, days=14, sign=False):
        ...  # msg.raw, msg.received_at, msg.funding_sats

The topology and policies are Core Lightning's 2026-02-03 mainnet snapshot (``data/cln-gossmap``);
every key, signature, short channel id, timestamp and address is synthetic and follows from the
seed. How the history is simulated: :mod:`lnsync.gen.history`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lnsync.chain import chain_hash
from lnsync.gen.build import build_stream
from lnsync.gen.history import DEFAULT_END_TIME, plan_history
from lnsync.gen.topology import Topology, load_snapshot, select

__all__ = ["DEFAULT_END_TIME", "GeneratedMessage", "Progress", "generate_history"]


@dataclass(frozen=True, slots=True)
class GeneratedMessage:
    """A wire message (2-byte type first), when it was received, and for a channel_announcement
    the channel's funding amount (its real capacity in the snapshot)."""

    raw: bytes
    received_at: float
    funding_sats: int | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    messages: int
    received_at: float  # simulated clock: received time of the latest message
    fraction: float  # of the window [end_time - days, end_time] covered so far
    elapsed: float  # wall-clock seconds


def generate_history(
    *,
    seed: int = 0,
    scale: float = 1.0,
    days: float = 14.0,
    end_time: int = DEFAULT_END_TIME,
    sign: bool = True,
    workers: int | None = None,
    network: str = "bitcoin",
    topology: Topology | None = None,
    progress: Callable[[Progress], None] | None = None,
    progress_every: float = 2.0,
) -> Iterator[GeneratedMessage]:
    """Every message of the history in received-time order; the same seed gives the same bytes.

    ``scale`` keeps about that share of the snapshot's channels (a connected graph among the
    best-connected nodes; 1 = all of it). The window is the ``days`` before ``end_time``; each channel
    and node that exists when it opens starts with its last message, from the day before. ``sign=False`` skips
    signing (placeholder signatures) and is much faster. ``workers`` processes sign in parallel
    (default: one per CPU; 1 = in this process). ``progress`` is called every ``progress_every`` seconds.
    """
    graph = select(topology if topology is not None else load_snapshot(), scale)
    planned = plan_history(graph, seed=seed, days=days, end_time=end_time)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    stream = build_stream(planned, chain_hash(network), signed=sign, workers=n_workers if sign else 1)
    start = end_time - days * 86400
    began = last_report = time.monotonic()
    for count, (p, raw) in enumerate(stream, 1):
        yield GeneratedMessage(raw, p.received_at, p.funding_sats)
        if progress is not None and count % 4096 == 0 and time.monotonic() - last_report >= progress_every:
            last_report = time.monotonic()
            fraction = min(1.0, max(0.0, (p.received_at - start) / (end_time - start)))
            progress(Progress(count, p.received_at, fraction, last_report - began))
