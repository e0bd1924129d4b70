"""Logging set-up shared by every process: one line per event, no secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@", re.I)


def redact(text: str) -> str:
    """Hide passwords in URLs (``postgresql://u:secret@h`` -> ``postgresql://u:***@h``)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": getattr(record, "service", ""),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out)


class _TextFormatter(logging.Formatter):
    def __init__(self, fmt: str, datefmt: str) -> None:
        super().__init__(fmt, datefmt)
        self.converter = time.gmtime

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


def configure(service: str, level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger for a process named ``service`` (shown on every line)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _TextFormatter(
                f"%(asctime)s.%(msecs)03dZ {service:<11} %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S"
            )
        )
    old_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old_factory(*args, **kwargs)
        record.service = service
        return record

    logging.setLogRecordFactory(factory)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that are chatty at INFO.
    for noisy in ("asyncio", "aiohttp.access", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # asyncpg logs a full traceback each time its pool fails to reconnect while PostgreSQL is down;
    # the services say that themselves in one line (health NOT_SERVING, "database unavailable").
    logging.getLogger("asyncpg.pool").setLevel(max(logging.ERROR, root.level))
    # gRPC's Cython layer logs a line at DEBUG for every RPC it serves ("Loaded running loop"):
    # at debug level it would bury the services' own lines.
    logging.getLogger("grpc._cython.cygrpc").setLevel(max(logging.INFO, root.level))
