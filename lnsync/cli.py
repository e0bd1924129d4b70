"""The ``lnsync`` command: one entry point for every service and tool.

Each sub-command lives in its own module under :mod:`lnsync.commands`; ``lnsync NAME`` imports
that module alone (only ``lnsync --help`` imports them all, for their help texts), so a probe or a
tool starts quickly and a tool's dependencies never load in a service process.
A module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lnsync import __version__
from lnsync.config import ConfigError
from lnsync.extras import MissingExtraError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("lnsync.commands.up", "run the whole stack on this machine (embedded PostgreSQL by default)"),
    "serve": ("lnsync.commands.serve", "run one service (what a container runs)"),
    "status": ("lnsync.commands.status", "print sync state, graph size and snapshots of a running stack"),
    "inspect": ("lnsync.commands.inspect", "decode an RGS blob and describe it (--json, --records)"),
    "healthcheck": ("lnsync.commands.healthcheck", "exit 0 if a gRPC service is SERVING (probes)"),
    "gen": ("lnsync.commands.gen", "generate a realistic signed gossip history on the mainnet graph"),
    "import": ("lnsync.commands.import_", "stream gossip archives into the persistence service"),
    "observe": ("lnsync.commands.observe", "gossip observer: propagation report (HTML, JSON, CSV)"),
    "demo-peer": (
        "lnsync.commands.demo_peer",
        "run the offline demo's gossip peer (lnsync up --demo starts it)",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` just that sub-command: its module alone is imported
    (``lnsync healthcheck``, a Kubernetes exec probe every few seconds, starts in a fraction of the
    time it takes to import every command's dependencies)."""
    parser = argparse.ArgumentParser(
        prog="lnsync",
        description="Rapid Gossip Sync server for the Lightning Network.",
        epilog="Run 'lnsync <command> --help' for a command's options. Configuration: a TOML file "
        "(--config or $LNSYNC_CONFIG) and LNSYNC_* environment variables; see the README.",
    )
    parser.add_argument("--version", action="version", version=f"lnsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        cmd.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $LNSYNC_CONFIG)")
        cmd.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity")
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = parser.parse_args(words)
    try:
        return int(args._module.run(args))
    except (ConfigError, MissingExtraError) as exc:
        print(f"lnsync: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
