"""Print the state of a running lnsync stack: the same facts as the gateway's /api/status (services,
sync state per peer, graph size, snapshot generation) plus what each downloader received from its
peer. Finds the stack through the run file `lnsync up` keeps in the data directory, else through
the settings."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from lnsync import rpc
from lnsync.commands._common import use_tls
from lnsync.config import Settings, load_settings
from lnsync.statusview import RunInfo, collect, render_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="the data directory of the `lnsync up` to ask"
    )


def find_run(settings: Settings, explicit: bool) -> RunInfo:
    """The running stack's run file: in the data directory, or (unless one was named) in its
    ``-demo`` sibling, where ``lnsync up --demo`` keeps its data; else the settings' addresses."""
    dirs = [settings.data_dir]
    if not explicit:
        dirs.append(settings.data_dir.with_name(settings.data_dir.name + "-demo"))
    for d in dirs:
        run = RunInfo.read(d)
        if run is not None:
            return run
    return RunInfo.from_settings(settings)


async def gather(settings: Settings, explicit_dir: bool = True) -> dict[str, Any]:
    run = find_run(settings, explicit_dir)
    status = await collect(run)
    if "services" not in status:
        # The gateway does not answer: ask the gRPC services' health directly.
        targets = {
            "persistence": settings.persistence.target,
            "lookup": settings.lookup.target,
            "snapshotter": settings.snapshotter.target,
        }
        health = await asyncio.gather(*(rpc.check_health(t) for t in targets.values()))
        status["services"] = {n: ("serving" if ok else "down") for n, ok in zip(targets, health, strict=True)}
    return status


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, log_level=args.log_level, data_dir=args.data_dir)
    dirs = [settings.data_dir]
    if args.data_dir is None:
        dirs.append(settings.data_dir.with_name(settings.data_dir.name + "-demo"))
    use_tls(settings, "operator", data_dirs=dirs)
    status = asyncio.run(gather(settings, explicit_dir=args.data_dir is not None))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print("\n".join(render_text(status)))
    return 0 if status.get("ready") else 1
