"""Entry point of a signing worker process (started by :mod:`lnsync.gen.build`, reads its stdin)."""

from __future__ import annotations

import sys

from lnsync.gen.build import serve

if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
