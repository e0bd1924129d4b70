"""What every bench hands to ``bench.run_all``: its key figures as one JSON object.

Each bench takes ``--json FILE`` and writes there a flat-ish dict of the figures the targets table
reads (rates, ratios, p50s, RSS in MB), plus the machine state of the run, so that the runner
never has to parse the human-readable output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil


def machine() -> dict[str, Any]:
    """Where and under what load the figures were taken (the load matters: the cores are shared)."""
    return {
        "python": platform.python_version(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "load": round(os.getloadavg()[0], 2),
        "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write(path: str | Path | None, figures: dict[str, Any]) -> None:
    """Write ``figures`` (and the machine state) to ``path``; ``-`` is stdout, None does nothing."""
    if path is None:
        return
    text = json.dumps({**figures, "machine": machine()}, indent=2)
    if str(path) == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")


def work_dir(prefix: str) -> Path:
    """A new work directory under /tmp (logs, data) that the embedded PostgreSQL, which may run as
    another user, can enter."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    workdir.chmod(0o755)
    return workdir


def finish_work_dir(workdir: Path, keep: bool) -> None:
    """At the end of a run: with ``--keep`` say where ``workdir`` is and leave it, else remove it."""
    if keep:
        print(f"  logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


class PeakRss:
    """The largest resident set seen for a process and its children, sampled by the caller.

    The target applies to a whole service, so a service of several processes (the gateway's
    workers each hold the snapshots) counts all of them: as the sum of their proportional set
    sizes (PSS), because summing RSS would count the interpreter and the pages the workers
    share with their parent once per process. A single process counts its RSS.
    """

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0

    def sample(self) -> int:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            rss = 0
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    rss += p.memory_full_info().pss if len(procs) > 1 else p.memory_info().rss
        except psutil.NoSuchProcess:
            return self.peak
        self.peak = max(self.peak, rss)
        return rss

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def py_spy() -> str:
    """The py-spy executable: on PATH or beside this Python (a virtualenv not activated); a clear
    error before anything starts if it is neither (``--profile`` is optional: pip install py-spy)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy); not found on PATH or beside python")
    return found


async def start_py_spy(pid: int, out: Path, rate: int = 200) -> asyncio.subprocess.Process:
    """Record ``pid`` with py-spy (collapsed stacks, one line per stack) until sent SIGINT."""
    spy = await asyncio.create_subprocess_exec(
        py_spy(), "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1)  # attached
    return spy


async def stop_py_spy(spies: list[asyncio.subprocess.Process]) -> None:
    for spy in spies:
        spy.send_signal(2)
        await spy.wait()
