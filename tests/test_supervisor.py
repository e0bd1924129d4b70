"""lnsync/supervisor.py: restarts, the exit hook and giving up (what the gateway's workers rely on)."""

from __future__ import annotations

import sys

from lnsync.retry import Backoff
from lnsync.supervisor import Child, Supervisor


async def test_exits_are_reported_children_restarted_until_the_policy_gives_up() -> None:
    exits: list[int] = []

    async def alive() -> bool:
        return True

    child = Child(
        "failing",
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        {},
        alive,
        backoff=Backoff(0.01, 0.01),
        on_exit=lambda pid, code: exits.append(code),
    )
    supervisor = Supervisor([child], give_up=lambda c, code: 7 if len(exits) >= 3 else None)
    await supervisor.start()
    try:
        assert await supervisor.supervise() == 7
    finally:
        await supervisor.stop()
    assert exits == [3, 3, 3] and child.restarts == 2
