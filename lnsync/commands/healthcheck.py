"""Ask a gRPC server's ``grpc.health.v1.Health`` service whether it is SERVING; exit 0 only then.

The exec readiness probe the Helm chart uses on clusters whose kubelet has no native gRPC probe
(Kubernetes < 1.24), and a quick check for operators. Exit codes: 0 serving, 1 not serving or
unreachable, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from lnsync import rpc
from lnsync.commands._common import use_tls
from lnsync.config import ConfigError, load_settings, parse_listen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="the gRPC server to ask")
    parser.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help="gRPC service name, e.g. lnsync.v1.Lookup (default: the whole server)",
    )
    parser.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS", help="deadline of the check")


def run(args: argparse.Namespace) -> int:
    try:
        parse_listen(args.target)
    except ValueError as exc:
        raise ConfigError(f"healthcheck --target: {exc}") from None
    if not 0 < args.timeout <= 60:
        raise ConfigError("healthcheck --timeout must be in (0, 60] seconds")
    use_tls(load_settings(args.config), "operator", args.target)  # probes speak mTLS when the services do
    serving = asyncio.run(rpc.check_health(args.target, args.service, timeout=args.timeout))
    if not serving:
        what = f"{args.target} ({args.service})" if args.service else args.target
        print(f"lnsync healthcheck: {what} is not SERVING", file=sys.stderr)
        return 1
    return 0
