"""Generate a realistic, validly signed gossip history on the real mainnet topology (Core Lightning's
2026-02-03 snapshot) and write it as a Core Lightning gossip_store, each record stamped with the
message's received time. The same --seed gives the same file. The default --end-time is
1770076800 (2026-02-03 00:00 UTC, the snapshot's date), so the output does not depend on the clock."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections import Counter
from pathlib import Path

from lnsync.chain import normalize_network
from lnsync.gen import DEFAULT_END_TIME, Progress, generate_history
from lnsync.gen.gossmap import GossmapError
from lnsync.gen.topology import DEFAULT_GOSSMAP, DEFAULT_NODE_MAP, load_snapshot
from lnsync.gossip.archive import GossipStoreWriter

_TYPE_NAMES = {256: "channel_announcement", 257: "node_announcement", 258: "channel_update"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True, help="gossip_store file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="share of the snapshot's channels to keep (default 1 = all)"
    )
    parser.add_argument("--days", type=float, default=14.0, help="length of the history window (default 14)")
    parser.add_argument(
        "--end-time",
        type=int,
        default=DEFAULT_END_TIME,
        help=f"Unix time the window ends (default {DEFAULT_END_TIME}, 2026-02-03 00:00 UTC)",
    )
    parser.add_argument("--unsigned", action="store_true", help="placeholder signatures (much faster)")
    parser.add_argument("--workers", type=int, help="signing processes (default: one per CPU)")
    parser.add_argument("--network", default="bitcoin", help="chain of the messages (default bitcoin)")
    parser.add_argument("--gossmap", type=Path, default=DEFAULT_GOSSMAP, help="compressed gossmap topology")
    parser.add_argument("--node-map", type=Path, default=DEFAULT_NODE_MAP, help="its node map (.xz)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _report(p: Progress) -> None:
    rate = p.messages / p.elapsed if p.elapsed else 0.0
    print(
        f"lnsync gen: {p.messages:,} messages, {p.fraction:5.1%} of the window, {rate:,.0f} msg/s",
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    if args.scale <= 0 or args.days <= 0:
        print("lnsync gen: --scale and --days must be positive", file=sys.stderr)
        return 2
    try:
        normalize_network(args.network)
    except ValueError as exc:
        print(f"lnsync gen: {exc}", file=sys.stderr)
        return 2
    began = time.monotonic()
    try:
        topology = load_snapshot(args.gossmap, args.node_map)
    except (OSError, GossmapError, ValueError) as exc:
        print(f"lnsync gen: cannot read the topology: {exc}", file=sys.stderr)
        return 1
    counts: Counter[int] = Counter()
    tmp = args.output.with_name(args.output.name + ".tmp")
    uuid = hashlib.sha256(f"lnsync-gen/{args.seed}/uuid".encode()).digest()
    with tmp.open("wb", buffering=1 << 20) as f:
        writer = GossipStoreWriter(f, uuid=uuid)
        for msg in generate_history(
            seed=args.seed,
            scale=args.scale,
            days=args.days,
            end_time=args.end_time,
            sign=not args.unsigned,
            workers=args.workers,
            network=args.network,
            topology=topology,
            progress=None if args.quiet else _report,
        ):
            writer.add(msg.raw, int(msg.received_at), funding_sats=msg.funding_sats)
            counts[int.from_bytes(msg.raw[:2], "big")] += 1
    os.replace(tmp, args.output)
    elapsed = time.monotonic() - began
    summary = ", ".join(f"{counts[t]:,} {name}" for t, name in _TYPE_NAMES.items())
    size = args.output.stat().st_size
    print(f"lnsync gen: wrote {args.output} ({size:,} bytes): {summary} in {elapsed:.1f} s", file=sys.stderr)
    return 0
