"""FundingVerifier without a node: an in-memory source counts what it is asked, to check the block
cache, the concurrency bound and the rate limit (tests/chain/test_chain_sources.py has the real node)."""

from __future__ import annotations

import asyncio
import time

from lnsync.chain.funding import Verdict, funding_script, p2wsh
from lnsync.chain.verifier import FundingVerifier

KEY_1, KEY_2 = bytes([2]) + bytes(32), bytes([3]) + bytes(32)
SCRIPT = p2wsh(funding_script(KEY_1, KEY_2))


class MemorySource:
    """Blocks 100..109 with 20 transactions of one funding output each; answers after ``delay``."""

    name = "memory"

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.calls: dict[str, int] = {"tip": 0, "block": 0, "output": 0, "spent": 0}
        self.inflight = self.max_inflight = 0

    async def _answer(self, kind: str) -> None:
        self.calls[kind] += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        await asyncio.sleep(self.delay)
        self.inflight -= 1

    async def tip_height(self) -> int:
        await self._answer("tip")
        return 200

    async def block(self, height: int) -> tuple[str, list[str]] | None:
        await self._answer("block")
        return (
            (f"{height:064x}", [f"{height:032x}{i:032x}" for i in range(20)]) if 100 <= height < 110 else None
        )

    async def output(self, txid: str, block_hash: str, index: int) -> tuple[bytes, int] | None:
        await self._answer("output")
        return (SCRIPT, 1000 + index) if index == 0 else None

    async def is_spent(self, txid: str, index: int) -> bool | None:
        await self._answer("spent")
        return False

    async def close(self) -> None:
        return None


def scid(height: int, tx: int, out: int = 0) -> int:
    return (height << 40) | (tx << 16) | out


async def test_blocks_are_fetched_once_and_concurrency_is_bounded() -> None:
    source = MemorySource()
    verifier = FundingVerifier(source, max_concurrent=4)
    scids = [scid(h, t) for h in range(100, 110) for t in range(20)]
    results = await asyncio.gather(*(verifier.check(s, KEY_2, KEY_1) for s in scids))
    assert {r.verdict for r in results} == {Verdict.VERIFIED} and results[0].funding_sats == 1000
    assert source.calls["block"] == 10  # one per block, shared by its 20 channels
    assert source.calls["output"] == source.calls["spent"] == 200
    assert source.max_inflight <= 4
    assert (await verifier.check(scid(120, 0), KEY_1, KEY_2)).verdict is Verdict.NO_BLOCK


async def test_the_rate_limit_spaces_requests() -> None:
    """At most max_rate requests a second after a burst of a second's worth."""
    source = MemorySource(delay=0.0)
    verifier = FundingVerifier(source, max_concurrent=8, max_rate=100)
    started = time.monotonic()
    await asyncio.gather(
        *(verifier.check(scid(h, t), KEY_1, KEY_2) for h in range(100, 105) for t in range(20))
    )
    seconds = time.monotonic() - started
    assert verifier.source_calls == sum(source.calls.values()) == 1 + 5 + 100 + 100
    assert 0.95 <= seconds < 3  # (206 - 100 free) / 100 per second
    unlimited = FundingVerifier(MemorySource(delay=0.0), max_concurrent=8)
    started = time.monotonic()
    await asyncio.gather(
        *(unlimited.check(scid(h, t), KEY_1, KEY_2) for h in range(100, 105) for t in range(20))
    )
    assert time.monotonic() - started < 0.5
