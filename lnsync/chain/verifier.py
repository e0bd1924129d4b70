"""Funding checks against a chain source: facts fetched with bounded concurrency, blocks cached.

:meth:`FundingVerifier.check` gathers the :class:`~lnsync.chain.funding.FundingFacts` of one
announcement and returns :func:`~lnsync.chain.funding.judge`'s verdict. A block's txid list is
fetched once and cached (channels of the same block share it; blocks with six confirmations do not
change short of a deep reorganisation); the tip height is cached for ``tip_ttl`` seconds. At most
``max_concurrent`` checks talk to the source at once, and at most ``max_rate`` requests a second
go to it. A source that is down, slow or talks garbage
raises :class:`~lnsync.chain.sources.ChainUnavailable`: no verdict, the caller holds and retries.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter

from lnsync.chain import chain_hash, funding, sources
from lnsync.chain.sources import ChainSource, ChainUnavailable
from lnsync.memo import Memo
from lnsync.ratelimit import TokenBucket

if TYPE_CHECKING:
    from lnsync.config import Settings

# Named for the downloaders, which make the checks; persistence's spent-output recheck and
# `lnsync import` count theirs in their own processes.
CHECKS = Counter("lnsync_downloader_funding_checks_total", "Funding checks by verdict", ["verdict"])
UNAVAILABLE = Counter("lnsync_downloader_chain_errors_total", "Funding checks the source did not answer")


class FundingVerifier:
    def __init__(
        self,
        source: ChainSource,
        *,
        max_concurrent: int = 8,
        cached_blocks: int = 2048,
        tip_ttl: float = 10.0,
        chain_hash: bytes | None = None,
        max_rate: float = 0.0,
    ) -> None:
        self.source = source
        # Requests per second to the source, in bursts of a second's worth (<= 0: no limit).
        self._rate = TokenBucket(max_rate, max_rate, time.monotonic())
        # The network's genesis hash (wire order): the source must be on it before any verdict.
        self._genesis = chain_hash[::-1].hex() if chain_hash is not None else None
        self._network_ok = chain_hash is None
        self._slots = asyncio.Semaphore(max_concurrent)
        # Blocks by height, the last ``cached_blocks``; concurrent checks of one block share its fetch.
        self._blocks: Memo[int, tuple[str, list[str]] | None] = Memo(cached_blocks)
        self._tip: tuple[float, int] | None = None
        self._tip_ttl = tip_ttl
        self._tip_lock = asyncio.Lock()
        self.last_error: str | None = None  # the source's last failure (None once it answers again)
        self.source_calls = 0

    async def _pace(self) -> None:
        """Count one request to the source, after waiting for the rate limit (``max_rate``)."""
        self.source_calls += 1
        wait = self._rate.take(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)

    async def tip_height(self) -> int:
        async with self._tip_lock:  # concurrent checks share one request
            now = time.monotonic()
            if self._tip is None or now - self._tip[0] > self._tip_ttl:
                await self._pace()
                self._tip = (now, await self.source.tip_height())
            return self._tip[1]

    async def _block(self, height: int) -> tuple[str, list[str]] | None:
        return await self._blocks.get(height, lambda: self._fetch_block(height))

    async def _fetch_block(self, height: int) -> tuple[str, list[str]] | None:
        await self._pace()
        return await self.source.block(height)

    async def check(self, scid: int, bitcoin_key_1: bytes, bitcoin_key_2: bytes) -> funding.Judgement:
        """The verdict on one announcement's funding output; ChainUnavailable if none can be had."""
        try:
            async with self._slots:
                judgement = await self._check(scid, bitcoin_key_1, bitcoin_key_2)
        except ChainUnavailable as exc:
            UNAVAILABLE.inc()
            self.last_error = str(exc)
            raise
        self.last_error = None
        CHECKS.labels(judgement.verdict.value).inc()
        return judgement

    async def _check_network(self) -> None:
        """A source on another network would make every verdict wrong (and final): refuse it."""
        genesis = await self._block(0)
        if genesis is None or genesis[0] != self._genesis:
            self._blocks.forget(0)
            raise ChainUnavailable(f"the source's genesis block is not this network's ({self._genesis})")
        self._network_ok = True

    async def _check(self, scid: int, key_1: bytes, key_2: bytes) -> funding.Judgement:
        if not self._network_ok:
            await self._check_network()
        height, tx_index, out_index = funding.split_scid(scid)
        tip = await self.tip_height()
        facts = funding.FundingFacts(tip, height, None, tx_index)
        if funding.confirmations(tip, height) < funding.MIN_CONFIRMATIONS:
            return funding.judge(facts, key_1, key_2)
        block = await self._block(height)
        if block is None or tx_index >= len(block[1]):
            facts = funding.FundingFacts(tip, height, None if block is None else block[1], tx_index)
            return funding.judge(facts, key_1, key_2)
        block_hash, txids = block
        txid = txids[tx_index]
        await self._pace()
        out = await self.source.output(txid, block_hash, out_index)
        script, value = out if out is not None else (None, None)
        spent = None
        if script == funding.p2wsh(funding.funding_script(key_1, key_2)):
            await self._pace()
            spent = await self.source.is_spent(txid, out_index)
        facts = funding.FundingFacts(tip, height, txids, tx_index, script, value, spent)
        return funding.judge(facts, key_1, key_2)


def from_settings(settings: Settings) -> FundingVerifier | None:
    """The verifier ``settings.chain`` configures (checked against ``settings.network``), or None."""
    source = sources.from_settings(settings.chain)
    if source is None:
        return None
    c = settings.chain
    return FundingVerifier(
        source, max_concurrent=c.max_concurrent, max_rate=c.max_rate, chain_hash=chain_hash(settings.network)
    )
