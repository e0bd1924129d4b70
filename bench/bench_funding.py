"""Funding checks at mainnet scale against a local chain source: bcoin on regtest
(``tests/chain/regtest.py``) holding ``--channels`` real 2-of-2 P2WSH funding outputs,
``--per-block`` of them per block (one transaction each block), checked through
:class:`lnsync.chain.verifier.FundingVerifier` over bitcoind's JSON-RPC as a downloader does.

Reported: checks per second and the wall time for all of them at each concurrency, the source
calls per check, against the announcement rate of a first full sync without checks (the
downloader bench's mainnet-size run: 50,808 channels in 53.9 s). Building the chain is not timed.

    python -m bench.bench_funding [--channels 54000] [--per-block 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import time

from coincurve import PrivateKey

from bench import results
from lnsync.chain.funding import Verdict
from lnsync.chain.sources import BitcoindRpc
from lnsync.chain.verifier import FundingVerifier
from tests.chain.regtest import API_KEY, RegtestNode, Spend, funding_output, scid, sign_segwit

SYNC_CHANNELS, SYNC_SECONDS = 50_808, 53.9  # docs/benchmarks.md, downloader, mainnet-size run


def build(node: RegtestNode, channels: int, per_block: int) -> list[tuple[int, bytes, bytes]]:
    """Fund ``channels`` outputs, ``per_block`` per block; (scid, key 1, key 2) of each."""
    node.mine(432)  # bcoin's regtest activates segwit here
    coin = node.coinbase(1)
    out: list[tuple[int, bytes, bytes]] = []
    fee, amount = 2_000, 20_000  # 54,000 channels: 1.1 BTC of the first coinbase's 50
    n = 0
    while n < channels:
        batch = min(per_block, channels - n)
        keys = [(_key(b"a", n + i), _key(b"b", n + i)) for i in range(batch)]
        change = coin.amount - batch * amount - fee
        outputs = [(amount, funding_output(a, b)) for a, b in keys] + [(change, _change(node))]
        txid = node.send(sign_segwit([coin], outputs))
        node.mine(1)
        height, index = node.position(txid)
        for i, (a, b) in enumerate(keys):
            out.append((scid(height, index, i), a.public_key.format(), b.public_key.format()))
        coin = Spend(txid, batch, change, node.script, (node.key,))
        n += batch
    node.mine(6)  # every output confirmed six times
    return out


def _key(tag: bytes, i: int) -> PrivateKey:
    return PrivateKey(hashlib.sha256(tag + str(i).encode()).digest())


def _change(node: RegtestNode) -> bytes:
    return b"\x00\x20" + hashlib.sha256(node.script).digest()


async def check_all(url: str, channels: list[tuple[int, bytes, bytes]], concurrency: int) -> dict[str, float]:
    auth = "Basic " + base64.b64encode(f"x:{API_KEY}".encode()).decode()
    source = BitcoindRpc(url, auth, timeout=30)
    verifier = FundingVerifier(source, max_concurrent=concurrency)
    queue: asyncio.Queue[tuple[int, bytes, bytes]] = asyncio.Queue()
    for c in channels:
        queue.put_nowait(c)
    verified = 0

    async def worker() -> None:
        nonlocal verified
        while not queue.empty():
            s, a, b = queue.get_nowait()
            if (await verifier.check(s, a, b)).verdict is Verdict.VERIFIED:
                verified += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    await source.close()
    assert verified == len(channels), verified
    calls = verifier.source_calls / len(channels)
    return {"seconds": seconds, "per_second": len(channels) / seconds, "calls_per_check": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=54_000)
    parser.add_argument("--per-block", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--json")
    args = parser.parse_args()
    node = RegtestNode()
    try:
        started = time.perf_counter()
        channels = build(node, args.channels, args.per_block)
        print(f"chain built: {len(channels):,} funding outputs in {len(channels) // args.per_block:,} blocks "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
        figures: dict[str, float] = {"channels": len(channels), "per_block": args.per_block}
        need = SYNC_CHANNELS / SYNC_SECONDS
        for c in args.concurrency:
            r = asyncio.run(check_all(node.url, channels, c))
            print(
                f"concurrency {c:>3}: {r['per_second']:,.0f} checks/s, all in {r['seconds']:.1f} s, "
                f"{r['calls_per_check']:.2f} source calls per check "
                f"(a full sync without checks announces {need:,.0f} channels/s)",
                flush=True,
            )
            figures[f"checks_per_s_c{c}"] = r["per_second"]
            figures[f"seconds_c{c}"] = r["seconds"]
        results.write(args.json, figures)
    finally:
        node.close()


if __name__ == "__main__":
    main()
