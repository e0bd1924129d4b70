"""Exponential backoff with jitter: how every lnsync process waits for a dependency to return."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, with full jitter; ``reset`` on success."""

    initial: float = 0.5
    maximum: float = 30.0
    attempts: int = field(default=0, init=False)

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())


async def retry(
    action: Callable[[], Awaitable[T]],
    what: str,
    *,
    retry_on: tuple[type[BaseException], ...] = (OSError,),
    backoff: Backoff | None = None,
    give_up_after: float | None = None,
) -> T:
    """Run ``action`` until it succeeds, sleeping with backoff after each failure in ``retry_on``.

    Logs the first failure and then every fifth, so a long outage does not flood the log.
    With ``give_up_after`` (seconds), the last error is raised once that much time has passed.
    """
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        try:
            result = await action()
        except retry_on as exc:
            if give_up_after is not None and loop.time() - started >= give_up_after:
                raise
            if backoff.attempts % 5 == 0:
                log.warning("%s failed (%s); retrying with backoff", what, exc or type(exc).__name__)
            await backoff.sleep()
        else:
            if backoff.attempts:
                log.info("%s succeeded after %d retries", what, backoff.attempts)
            return result
