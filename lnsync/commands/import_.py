"""Import gossip archives into a running persistence service (Persistence.Ingest).

Archives: lnresearch GSP files, Core Lightning gossip_store files and plain [u16 length][message]
records, recognised from their first bytes (lnsync.gossip.archive); a gossip_store's channel
amounts become the announcements' funding amounts. Every message's signatures are verified here
(persistence re-checks only structure and chain); invalid ones are counted by reason and skipped
(a channel_update whose channel_announcement is not in the input cannot be verified:
"unknown_channel"; an update or node_announcement dated more than a day after its received time, or
after now, is "timestamp_in_future"). Received times ("seen") come from --seen:

  message  each message's own gossip timestamp; a channel_announcement, which has none, takes the
           earliest timestamp of that channel's updates in the input (files are read twice), or,
           without any, the latest timestamp read before it (default)
  record   the archive record's time (Core Lightning gossip_store only)
  now      the moment of sending: a live stream, clamped by persistence like a downloader's

With chain.source set, each channel_announcement's funding output is checked on chain first (as the
downloaders do, lnsync.chain): failures are counted as invalid ("funding_<verdict>") and not sent,
the chain's amount replaces the archive's, and an unavailable source ends the import (exit 1; run it
again: nothing is stored twice).

With message or record the stream is historical: persistence keeps the times (never in the
future). Progress goes to stderr every few seconds; a summary is printed at the end. Exit status:
0 when every file was read and everything sent was acknowledged, 1 on failure, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lnsync import logs
from lnsync.chain import chain_hash
from lnsync.chain.funding import Judgement, Verdict
from lnsync.chain.sources import ChainUnavailable
from lnsync.chain.verifier import FundingVerifier
from lnsync.chain.verifier import from_settings as verifier_from_settings
from lnsync.clients.ingest import IngestClient, IngestCounters
from lnsync.commands._common import use_tls
from lnsync.config import load_settings
from lnsync.gossip import messages as m
from lnsync.gossip.archive import ArchiveError, ArchiveRecord, read_archive
from lnsync.gossip.errors import GossipError
from lnsync.gossip.validate import GossipValidator
from lnsync.rgs.rules import FUTURE_REASON, judged_at, too_far_ahead

T = TypeVar("T")
SEEN_CHOICES = ("message", "record", "now")
PROGRESS_EVERY = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the --seen table above
    parser.add_argument("files", nargs="+", metavar="FILE", help="gossip archives, read in order")
    parser.add_argument(
        "--seen", choices=SEEN_CHOICES, default="message", help="where received times come from (see above)"
    )
    parser.add_argument(
        "--peer-id",
        metavar="ID",
        help="producer name recorded with the messages (default: import:<first file name>)",
    )
    parser.add_argument(
        "--persistence", metavar="HOST:PORT", help="persistence address (default: persistence.address/listen)"
    )
    parser.add_argument("--network", help="the chain the archive is for (default: the configured network)")
    parser.add_argument(
        "--include-deleted",
        action="store_true",
        help="gossip_store: also import records Core Lightning marked deleted (superseded updates, closed "
        "channels: older history)",
    )
    parser.add_argument(
        "--stall-timeout", type=float, default=60.0, metavar="SECONDS",
        help="give up when persistence acknowledges nothing for this long (default 60)",
    )  # fmt: skip


class ImportFailed(Exception):
    """A failure worth one line to the user (no traceback)."""


# -- reading archives -------------------------------------------------------------------------------


def records(path: Path, include_deleted: bool) -> Iterator[ArchiveRecord]:
    """The gossip records of one archive (GSP, Core Lightning gossip_store or u16 records)."""
    with path.open("rb") as f:
        try:
            yield from read_archive(f, include_deleted=include_deleted)
        except ArchiveError as exc:
            raise ImportFailed(f"{path}: {exc}") from None


# -- the import -------------------------------------------------------------------------------------


@dataclass
class Tally:
    read: int = 0
    valid: int = 0
    invalid: collections.Counter[str] = field(default_factory=collections.Counter)
    files: int = 0


def first_update_times(paths: list[Path], include_deleted: bool) -> dict[int, int]:
    """The earliest channel_update timestamp of every channel in ``paths``."""
    earliest: dict[int, int] = {}
    for path in paths:
        for rec in records(path, include_deleted):
            raw = rec.raw
            if len(raw) >= m.CHANNEL_UPDATE_SIZE and raw[0] == 1 and raw[1] == 2:
                u = m.decode_channel_update(raw)
                if u.timestamp < earliest.get(u.short_channel_id, 1 << 62):
                    earliest[u.short_channel_id] = u.timestamp
    return earliest


async def import_files(
    paths: list[Path],
    *,
    target: str,
    peer_id: str,
    seen: str,
    network: str,
    stall_timeout: float,
    include_deleted: bool = False,
    verifier: FundingVerifier | None = None,
) -> tuple[Tally, IngestCounters]:
    tally = Tally()
    validator = GossipValidator(chain_hash(network))
    ann_times = first_update_times(paths, include_deleted) if seen == "message" else {}
    last_ts = 0
    started = last_report = time.monotonic()
    acked_at, last_acked = started, 0
    async with IngestClient(target, peer_id, source="import", historical=seen != "now") as client:

        def check_progress(final: bool = False) -> None:
            nonlocal last_report, acked_at, last_acked
            now = time.monotonic()
            c = client.counters
            if c.acked != last_acked or not c.unacked:
                acked_at, last_acked = now, c.acked
            elif now - acked_at > stall_timeout:
                raise ImportFailed(
                    f"persistence at {target} acknowledged nothing for {stall_timeout:.0f} s "
                    f"({c.unacked} messages waiting); is it running (lnsync serve persistence)?"
                )
            if final or now - last_report >= PROGRESS_EVERY:
                last_report = now
                rate = c.acked / max(now - started, 1e-9)
                print(
                    f"lnsync import: read {tally.read:,}, invalid {sum(tally.invalid.values()):,}, "
                    f"sent {c.sent:,}, acknowledged {c.acked:,} ({rate:,.0f}/s)",
                    file=sys.stderr,
                    flush=True,
                )

        for path in paths:
            for rec in records(path, include_deleted):
                tally.read += 1
                try:
                    msg = validator.validate(rec.raw)
                except GossipError as exc:
                    tally.invalid[exc.reason] += 1
                    continue
                if seen == "now":
                    received = None
                elif seen == "record":
                    if rec.timestamp is None:
                        raise ImportFailed(
                            f"{path}: this archive format has no record times; use --seen message"
                        )
                    received = rec.timestamp * 1_000_000
                elif isinstance(msg, m.ChannelAnnouncement):
                    ts = ann_times.get(msg.short_channel_id, last_ts)
                    received = (ts or int(time.time())) * 1_000_000
                else:
                    last_ts = max(last_ts, msg.timestamp)
                    received = msg.timestamp * 1_000_000
                if not isinstance(msg, m.ChannelAnnouncement):
                    arrived = judged_at(received or 0, time.time_ns() // 1000)
                    if too_far_ahead(msg.timestamp, arrived):
                        tally.invalid[FUTURE_REASON] += 1
                        continue
                funding_sats = rec.funding_sats
                if verifier is not None and isinstance(msg, m.ChannelAnnouncement):
                    judgement = await _check_funding(verifier, msg)
                    if judgement.verdict is not Verdict.VERIFIED:
                        tally.invalid[f"funding_{judgement.verdict.value}"] += 1
                        continue
                    funding_sats = judgement.funding_sats
                tally.valid += 1
                await client.send(rec.raw, received, funding_sats=funding_sats)
                if tally.read % 4096 == 0:
                    check_progress()
            tally.files += 1
        while True:
            try:
                await client.flush(timeout=1.0)
                break
            except TimeoutError:
                check_progress()
        check_progress(final=True)
    return tally, client.counters


async def _check_funding(verifier: FundingVerifier, msg: m.ChannelAnnouncement) -> Judgement:
    try:
        return await verifier.check(msg.short_channel_id, msg.bitcoin_key_1, msg.bitcoin_key_2)
    except ChainUnavailable as exc:
        raise ImportFailed(f"chain source unavailable ({exc}); nothing after this channel was sent") from None


async def _closing(verifier: FundingVerifier | None, work: Awaitable[T]) -> T:
    """``work``'s result; the chain source's connections are closed either way."""
    try:
        return await work
    finally:
        if verifier is not None:
            await verifier.source.close()


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, log_level=args.log_level, network=args.network)
    use_tls(settings, "import", args.persistence or settings.persistence.target)
    logs.configure("import", settings.log_level, settings.log_format)
    paths = [Path(p) for p in args.files]
    for p in paths:
        if not p.is_file():
            print(f"lnsync import: {p}: no such file", file=sys.stderr)
            return 2
    target = args.persistence or settings.persistence.target
    peer_id = args.peer_id or f"import:{paths[0].name}"
    started = time.monotonic()
    try:
        verifier = verifier_from_settings(settings)  # reads chain.password_file: OSError below
        tally, counters = asyncio.run(
            _closing(verifier, import_files(
                paths, target=target, peer_id=peer_id, seen=args.seen, network=settings.network,
                stall_timeout=args.stall_timeout, include_deleted=args.include_deleted, verifier=verifier,
            ))
        )  # fmt: skip
    except ImportFailed as exc:
        print(f"lnsync import: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"lnsync import: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    c = counters
    invalid = ", ".join(f"{r} {n:,}" for r, n in sorted(tally.invalid.items())) or "none"
    rejected = ", ".join(f"{r} {n:,}" for r, n in sorted(c.rejections.items())) or "none"
    print(
        f"imported {len(paths)} file(s) in {elapsed:.1f} s: read {tally.read:,} messages, "
        f"invalid {sum(tally.invalid.values()):,} ({invalid}); sent {c.sent:,}: "
        f"stored {c.stored:,}, already stored {c.duplicates:,}, "
        f"rejected by persistence {c.rejected:,} ({rejected})"
    )
    return 0
