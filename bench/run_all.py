"""Run every ``bench/bench_*.py`` module in turn (what ``make bench`` does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    failed = 0
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        print(f"== python -m bench.{path.stem}", flush=True)
        failed |= subprocess.call([sys.executable, "-m", f"bench.{path.stem}"])
    return failed


if __name__ == "__main__":
    sys.exit(main())
