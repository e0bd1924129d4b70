"""Find Prometheus' binaries for the monitoring tests (`make test` links them into .venv/bin)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.helm_tools import ROOT


def find_tool(name: str) -> str | None:
    """``name`` (promtool, prometheus): $LNSYNC_<NAME>, then .venv/bin, then PATH."""
    for candidate in (os.environ.get(f"LNSYNC_{name.upper()}"), str(ROOT / ".venv" / "bin" / name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def needs(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        find_tool(name) is None,
        reason=f"{name} not found; scripts/install-prometheus.sh could not get Debian's prometheus package",
    )
