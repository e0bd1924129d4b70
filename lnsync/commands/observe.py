"""The gossip observer: how gossip propagates across the peers persistence hears from.

``lnsync observe report --since 24h`` reads the database (database_url) and writes message rates,
redundancy, propagation delays, per-peer coverage and latency, and the most frequently updated
channels and nodes, and what set reconciliation would spend instead of flooding (docs/observer.md),
as a self-contained HTML page with charts, JSON or CSV.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lnsync import db
from lnsync.config import ConfigError, ObserverSettings, Settings, load_settings
from lnsync.db import require_database_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    report = sub.add_parser("report", help="write the observer report for a recent window")
    report.add_argument("--since", default="24h", help="window length: 90m, 24h, 7d (default 24h)")
    report.add_argument("--format", choices=["html", "json", "csv"], default="html")
    report.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    report.add_argument("--png-dir", metavar="DIR", help="also save each chart as DIR/<name>.png")
    report.add_argument("--top", type=int, default=10, help="entries in the top-updaters lists (default 10)")
    report.add_argument(
        "--intervals",
        metavar="S,S,...",
        help="reconciliation intervals in seconds (default: observer.reconcile_intervals, 1,10,60,600)",
    )
    report.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL URL (overrides $LNSYNC_DATABASE_URL)"
    )


async def gather(settings: Settings, since: int, top: int, intervals: tuple[int, ...]) -> dict[str, Any]:
    from services.observer import report

    p = settings.persistence
    pool = await db.create_pool(require_database_url(settings), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            return await report.gather(
                conn,
                now=time.time(),
                since=since,
                interval=p.observation_interval,
                max_delay=p.observation_max_delay,
                top=top,
                reconcile_intervals=intervals,
            )
    finally:
        await pool.close()


def run(args: argparse.Namespace) -> int:
    from services.observer import render, report

    settings = load_settings(args.config, log_level=args.log_level, database_url=args.database_url)
    try:
        since = report.parse_duration(args.since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    if not 1 <= args.top <= 1000:
        raise ConfigError("--top must be 1..1000")
    if args.format == "html" or args.png_dir:
        render.pyplot()  # before the query: the charts need the [report] extra
    intervals = settings.observer.reconcile_intervals
    if args.intervals:
        try:
            observer = ObserverSettings(reconcile_intervals=[int(x) for x in args.intervals.split(",")])
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"--intervals: {_first_error(exc)}") from None
        intervals = observer.reconcile_intervals
    data = asyncio.run(gather(settings, since, args.top, tuple(intervals)))
    figures = render.charts(data) if args.format == "html" or args.png_dir else None
    if args.png_dir and figures is not None:
        out_dir = Path(args.png_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, (_, fig) in figures.items():
            fig.savefig(out_dir / f"{name}.png", dpi=100, bbox_inches="tight")
    if args.format == "html":
        text = render.to_html(data, figures)
    elif args.format == "json":
        text = render.to_json(data)
    else:
        text = render.to_csv(data)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return "not a comma-separated list of seconds"
