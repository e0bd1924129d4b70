"""Process supervision: every service of ``lnsync up`` (and every worker of the gateway) in its own
process, restarted with backoff when it dies, all stopped together on Ctrl-C or SIGTERM.

Children are started with ``PR_SET_PDEATHSIG`` so that they get SIGTERM if the supervisor itself is
killed, and no process is ever left behind. A child with a log file writes into a pipe the
supervisor copies into that file, rotated at ``MAX_LOG_BYTES`` (``name.log.1`` … ``.3`` kept), so a
service that logs without end cannot fill the disk.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from lnsync.retry import Backoff

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]

PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 20.0  # well above lnsync.service.GRACE_SECONDS: in-flight calls finish first
# A child that ran this long before dying is considered healthy again: its backoff resets.
STABLE_AFTER = 60.0
MAX_LOG_BYTES = 20 << 20
LOG_BACKUPS = 3
PUMP_CHUNK = 1 << 16


class RotatingLog:
    """An append-only log file renamed to ``.1`` (older ones shifted up to ``backups``) once the
    next write would take it past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = MAX_LOG_BYTES, backups: int = LOG_BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = path.open("ab")
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        self._file.close()


def die_with_parent() -> None:  # pragma: no cover - runs in a child (between fork and exec here)
    """Make this process get SIGTERM when its parent dies, in its own process group (so a
    terminal's Ctrl-C reaches only the parent). For children of :class:`Supervisor` and the
    gateway's worker processes."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setpgrp()  # our own process group: a terminal's Ctrl-C reaches only the supervisor


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    healthy: HealthCheck
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))
    started_at: float = 0.0
    # Where the child's stdout and stderr go (appended, rotated); None: the supervisor's own.
    log_file: Path | None = None
    log: RotatingLog | None = None
    # Called with (pid, exit code) when the child exits, before anything else (e.g. metrics clean-up).
    on_exit: Callable[[int, int], None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


# Asked after a child exited (and on_exit ran) with the child and its exit code: an exit code for
# the whole supervisor to stop with, or None to restart the child.
GiveUp = Callable[[Child, int], int | None]


class Supervisor:
    def __init__(
        self, children: list[Child], *, stop_timeout: float = STOP_TIMEOUT, give_up: GiveUp | None = None
    ) -> None:
        self.children = children
        self.stop_timeout = stop_timeout
        self.give_up = give_up
        self.exit_code: int | None = None
        self._stopping = asyncio.Event()
        self._pumps: set[asyncio.Task[None]] = set()

    async def _spawn(self, child: Child) -> None:
        piped = child.log_file is not None
        if piped and child.log is None:
            assert child.log_file is not None
            child.log = RotatingLog(child.log_file)
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if piped else None,
            stderr=asyncio.subprocess.STDOUT if piped else None,
            preexec_fn=die_with_parent,
        )
        if piped and child.proc.stdout is not None and child.log is not None:
            task = asyncio.create_task(_pump(child.proc.stdout, child.log), name=f"log-{child.name}")
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)
        child.started_at = asyncio.get_running_loop().time()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    async def start(self) -> None:
        for child in self.children:
            await self._spawn(child)

    async def wait_healthy(self, timeout: float) -> list[str]:
        """Wait until every child reports healthy; return the names still unhealthy at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = list(self.children)
        while pending and loop.time() < deadline and not self._stopping.is_set():
            results = await asyncio.gather(*(c.healthy() for c in pending), return_exceptions=True)
            pending = [c for c, ok in zip(pending, results, strict=True) if ok is not True]
            if pending:
                await asyncio.sleep(0.2)
        return [c.name for c in pending]

    async def supervise(self) -> int | None:
        """Restart children that exit, until :meth:`stop` is called (then None) or ``give_up``
        returns an exit code (then that code; the caller still calls :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            waits = {asyncio.create_task(c.proc.wait()): c for c in self.children if c.proc is not None}
            stopper = asyncio.create_task(self._stopping.wait())
            done, pending = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if self._stopping.is_set():
                return self.exit_code
            for task in done:
                child = waits.get(task)
                if child is None:
                    continue
                code = task.result()
                if child.on_exit is not None and child.proc is not None:
                    child.on_exit(child.proc.pid, code)
                if self.give_up is not None:
                    self.exit_code = self.give_up(child, code)
                    if self.exit_code is not None:
                        self._stopping.set()
                        return self.exit_code
                if loop.time() - child.started_at > STABLE_AFTER:
                    child.backoff.reset()
                delay = child.backoff.next_delay()
                child.restarts += 1
                log.warning("%s exited with code %s; restarting in %.1fs", child.name, code, delay)
                try:
                    async with asyncio.timeout(delay):  # not wait_for: see lnsync.rpc.Remote.ready
                        await self._stopping.wait()
                    return self.exit_code
                except TimeoutError:
                    pass
                await self._spawn(child)
        return self.exit_code

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        """SIGTERM every child (newest first), wait, then SIGKILL stragglers."""
        self._stopping.set()
        for child in reversed(self.children):
            if child.running and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                await asyncio.wait_for(child.proc.wait(), self.stop_timeout)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", child.name, self.stop_timeout)
                child.proc.kill()
                await child.proc.wait()
        if self._pumps:  # the last lines of every child, up to its end of file
            await asyncio.wait(set(self._pumps), timeout=5)
        for child in self.children:
            if child.log is not None:
                child.log.close()
        log.info("all services stopped")


async def _pump(stream: asyncio.StreamReader, out: RotatingLog) -> None:
    """Copy a child's output into its log until the child closes it."""
    while chunk := await stream.read(PUMP_CHUNK):
        try:
            out.write(chunk)
        except OSError as exc:  # a full disk: keep draining the pipe so the child never blocks
            log.warning("cannot write %s: %s", out.path, exc)


def python_argv(*args: str) -> list[str]:
    """argv that runs ``lnsync`` with the current interpreter (works inside a virtualenv)."""
    return [sys.executable, "-m", "lnsync", *args]
