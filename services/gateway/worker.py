"""Entry point of one gateway worker process, started by the gateway's supervisor
(:func:`services.gateway.server.worker_main`)."""

from __future__ import annotations

import sys

from services.gateway.server import worker_main

if __name__ == "__main__":  # pragma: no cover - runs in a worker process
    sys.exit(worker_main(sys.argv[1:]))
