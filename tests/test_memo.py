"""The shared memo (lnsync/memo.py): shared in-flight computations, failures not remembered, bounded size."""

from __future__ import annotations

import asyncio
import functools

import pytest

from lnsync.memo import Memo


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


async def test_a_weighted_memo_holds_at_most_its_capacity_and_never_one_heavier_value() -> None:
    memo: Memo[str, bytes] = Memo(10, weight=len)

    async def value(v: bytes) -> bytes:
        return v

    for key, v in (("a", b"1234"), ("b", b"1234"), ("c", b"123")):
        await memo.get(key, functools.partial(value, v))
    assert list(memo) == ["b", "c"] and memo.weight == 7  # "a" went to make room for "c"
    assert await memo.get("huge", functools.partial(value, b"x" * 11)) == b"x" * 11
    assert "huge" not in memo and list(memo) == ["b", "c"]  # returned, not remembered


async def test_admit_decides_what_is_remembered_and_may_forget_others() -> None:
    def admit(key: int, v: int) -> bool:
        for old in memo:
            if old < key - 1:
                memo.forget(old)
        return v % 2 == 0

    memo: Memo[int, int] = Memo(100, admit=admit)

    async def value(v: int) -> int:
        return v

    for k in (1, 2, 4, 5):
        assert await memo.get(k, functools.partial(value, k)) == k
    assert list(memo) == [4] and memo.weight == 1  # 1 and 5 odd; 2 forgotten when 4 came
