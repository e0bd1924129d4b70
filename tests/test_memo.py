"""Lookup's memo: shared in-flight computations, failures not remembered, bounded size."""

from __future__ import annotations

import asyncio

import pytest

from services.lookup.memo import Memo


async def test_concurrent_callers_share_one_computation() -> None:
    memo: Memo[int, str] = Memo(2)
    calls = 0
    release = asyncio.Event()

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "value"

    waiters = [asyncio.create_task(memo.get(1, compute)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == ["value"] * 5
    assert calls == 1
    assert await memo.get(1, compute) == "value"
    assert calls == 1


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    memo: Memo[int, int] = Memo(2)
    release = asyncio.Event()

    async def failing() -> int:
        await release.wait()
        raise RuntimeError("database gone")

    waiters = [asyncio.create_task(memo.get(7, failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)

    async def working() -> int:
        return 42

    assert await memo.get(7, working) == 42
    assert len(memo) == 1


async def test_least_recently_used_entries_go_first() -> None:
    memo: Memo[int, int] = Memo(2)
    computed: list[int] = []

    def compute(k: int):  # type: ignore[no-untyped-def]
        async def run() -> int:
            computed.append(k)
            return k * 10

        return run

    for k in (1, 2, 1, 3):  # 1 is used again before 3 arrives: 2 is the one evicted
        await memo.get(k, compute(k))
    assert computed == [1, 2, 3]
    await memo.get(1, compute(1))
    await memo.get(2, compute(2))
    assert computed == [1, 2, 3, 2]
    assert len(memo) == 2


@pytest.mark.parametrize("cancelled", [0, 1])
async def test_a_cancelled_caller_does_not_cancel_the_others(cancelled: int) -> None:
    memo: Memo[int, int] = Memo(1)
    release = asyncio.Event()

    async def compute() -> int:
        await release.wait()
        return 5

    callers = [asyncio.create_task(memo.get(1, compute)) for _ in range(2)]
    await asyncio.sleep(0)
    callers[cancelled].cancel()
    release.set()
    assert await callers[1 - cancelled] == 5
    with pytest.raises(asyncio.CancelledError):
        await callers[cancelled]
    assert len(memo) == 1
