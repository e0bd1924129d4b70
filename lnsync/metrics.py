"""Metrics every lnsync process exports, whatever its service."""

from __future__ import annotations

import platform

from prometheus_client import Gauge

from lnsync import __version__

BUILD_INFO = Gauge(
    "lnsync_build_info",
    "Always 1; the labels say which lnsync version and Python this service runs",
    ["version", "python", "service"],
    multiprocess_mode="max",  # the gateway's workers: one series, not one per process
)


def set_build_info(service: str) -> None:
    """Export ``lnsync_build_info`` for ``service`` (the name ``lnsync serve`` was given)."""
    BUILD_INFO.labels(__version__, platform.python_version(), service).set(1)
