"""Helpers shared by CLI commands (not by services: what they share lives in the core library)."""

from __future__ import annotations

from pathlib import Path

from lnsync import certs, rpc
from lnsync.config import Settings


def use_tls(
    settings: Settings, role: str, target: str | None = None, data_dirs: list[Path] | None = None
) -> None:
    """Configure gRPC for a command run beside the services: the settings' own TLS if enabled,
    else ``role``'s certificate of the running ``lnsync up`` (in one of ``data_dirs``: by default
    the settings' data directory and its ``-demo`` sibling, where ``lnsync up --demo`` keeps its
    data) that generated them and serves ``target`` (any of its services if None), else plaintext."""
    from lnsync.statusview import RunInfo  # here: its HTTP client is no cost to a probe's start-up

    if data_dirs is None:
        data_dirs = [settings.data_dir, settings.data_dir.with_name(settings.data_dir.name + "-demo")]
    if not settings.tls.enabled:
        for directory in data_dirs:
            run = RunInfo.read(directory)
            if run is not None and run.tls_dir and (target is None or run.serves(target)):
                rpc.configure_tls(certs.settings_for(Path(run.tls_dir), role))
                return
    rpc.configure_tls(settings.tls)
