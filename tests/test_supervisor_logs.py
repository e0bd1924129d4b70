"""``lnsync up``'s per-service log files are rotated (issue 25, finding 5): a real child process
writes far more than the limit through the supervisor's pipe."""

from __future__ import annotations

import sys
from pathlib import Path

from lnsync.supervisor import Child, RotatingLog, Supervisor

LIMIT = 100_000


async def _always() -> bool:
    return True


async def test_a_child_that_logs_without_end_is_rotated(tmp_path: Path) -> None:
    log_file = tmp_path / "chatty.log"
    script = "import sys\nfor i in range(40000): sys.stdout.write(f'line {i:06d} ' + 'x' * 40 + '\\n')\n"
    child = Child("chatty", [sys.executable, "-c", script], {}, _always, log_file=log_file)
    child.log = RotatingLog(log_file, max_bytes=LIMIT, backups=3)
    supervisor = Supervisor([child])
    await supervisor.start()
    assert child.proc is not None
    assert await child.proc.wait() == 0
    await supervisor.stop()
    _check_rotated(tmp_path)


def _check_rotated(tmp_path: Path) -> None:
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["chatty.log", "chatty.log.1", "chatty.log.2", "chatty.log.3"]
    assert all(f.stat().st_size <= LIMIT for f in files), [f.stat().st_size for f in files]
    # The newest lines are in the live file, the rotated ones hold the lines just before, in order.
    text = "".join(f.read_text() for f in reversed(files))
    assert text.endswith("line 039999 " + "x" * 40 + "\n")
    numbers = [int(line.split()[1]) for line in text.splitlines()]
    assert numbers == list(range(numbers[0], 40000))
