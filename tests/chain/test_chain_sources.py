"""Funding checks against a real Bitcoin node: bcoin on regtest (``tests/chain/regtest.py``).

The chain holds real 2-of-2 P2WSH funding outputs (one later spent), an output paying to another
script, and one with a single confirmation. The bitcoind JSON-RPC client talks to bcoin directly;
the Esplora client talks to a small Esplora-format server in this file whose every answer is read
from the same node (bcoin has no Esplora API). Hostile sources (timeouts, garbage, errors, a port
nobody listens on) give ChainUnavailable, never a verdict. The downloader's pipeline forwards only
verified announcements (with their amounts), counts the others by reason, and holds announcements
while the source is down, forwarding them once it is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from coincurve import PrivateKey

from lnsync import rpc
from lnsync.chain import chain_hash
from lnsync.chain.funding import Verdict, p2wsh
from lnsync.chain.sources import BitcoindRpc, ChainSource, ChainUnavailable, Esplora, rpc_auth
from lnsync.chain.verifier import FundingVerifier
from lnsync.clients.ingest import IngestClient
from lnsync.commands.import_ import ImportFailed, import_files
from lnsync.config import PeerAddress
from lnsync.gossip.archive import encode_gsp
from lnsync.gossip.signing import pubkey_of, sign_channel_announcement, sign_node_announcement
from lnsync.rgs.client import ClientOptions, RgsClient
from lnsync.rgs.decode import decode
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc
from services.downloader.downloader import Downloader
from services.downloader.forward import PersistenceSink
from services.downloader.pipeline import GossipPipeline, Outcome
from services.downloader.stats import PeerStats
from services.lookup.store import load_delta_input
from services.persistence import spent
from tests.chain.regtest import API_KEY, RegtestNode, funding_output, multisig_spend, scid, sign_segwit
from tests.conftest import ROOT, free_port
from tests.downloader.scripted import PEER_ID, Graph, MemorySink, PeerBehaviour, ScriptedPeer
from tests.downloader.test_session import FAST
from tests.gossip_helpers import NODE_A, NODE_B
from tests.ldk import LdkRgsClient
from tests.persistence.conftest import channel_update, start_persistence
from tests.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
REGTEST = chain_hash("regtest")
PASSWORD = Path(tempfile.gettempdir()) / "lnsync-bcoin-password"
PASSWORD.write_text(API_KEY + "\n")


def secret(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


@dataclass
class Chain:
    node: RegtestNode
    keys: dict[str, tuple[bytes, bytes]]  # channel -> its two bitcoin secrets
    scids: dict[str, int]
    amounts: dict[str, int]


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    node = RegtestNode()
    try:
        node.mine(432)  # bcoin's regtest activates segwit at 432
        keys = {
            name: (secret(name + "1"), secret(name + "2")) for name in ("good", "spent", "young", "other")
        }
        priv = {name: (PrivateKey(a), PrivateKey(b)) for name, (a, b) in keys.items()}
        coin = node.coinbase(1)
        outputs = [
            (1_000_000, funding_output(*priv["good"])),
            (500_000, b"\x00\x20" + hashlib.sha256(b"\x51").digest()),  # P2WSH of OP_TRUE: another script
            (2_000_000, funding_output(*priv["spent"])),
        ]
        change = coin.amount - sum(v for v, _ in outputs) - 10_000
        funding = node.send(sign_segwit([coin], [*outputs, (change, funding_output(*priv["other"]))]))
        node.mine(6)
        height, index = node.position(funding)
        node.send(
            sign_segwit([multisig_spend(funding, 2, 2_000_000, *priv["spent"])], [(1_990_000, outputs[1][1])])
        )
        node.mine(1)
        coin2 = node.coinbase(2)
        rest = (coin2.amount - 710_000, funding_output(*priv["other"]))
        young = node.send(sign_segwit([coin2], [(700_000, funding_output(*priv["young"])), rest]))
        node.mine(1)  # one confirmation
        young_height, young_index = node.position(young)
        scids = {
            "good": scid(height, index, 0),
            "wrong": scid(height, index, 1),
            "spent": scid(height, index, 2),
            "no_output": scid(height, index, 9),
            "no_tx": scid(height, 40, 0),
            "young": scid(young_height, young_index, 0),
            "unmined": scid(young_height + 50, 1, 0),
        }
        yield Chain(node, keys, scids, {"good": 1_000_000})
    finally:
        node.close()


EXPECTED = {
    "good": Verdict.VERIFIED,
    "wrong": Verdict.WRONG_SCRIPT,
    "spent": Verdict.SPENT,
    "no_output": Verdict.NO_OUTPUT,
    "no_tx": Verdict.NO_TRANSACTION,
    "young": Verdict.TOO_FEW_CONFIRMATIONS,
    "unmined": Verdict.TOO_FEW_CONFIRMATIONS,
}
# The keys each case's announcement carries ("wrong" claims the good channel's keys).
KEYS_OF = {"good": "good", "wrong": "good", "spent": "spent", "no_output": "good", "no_tx": "good",
           "young": "young", "unmined": "good"}  # fmt: skip


def outputs_to_self(node: RegtestNode) -> bytes:
    return p2wsh(node.script)


def pubkeys(chain: Chain, name: str) -> tuple[bytes, bytes]:
    a, b = chain.keys[KEYS_OF[name]]
    return PrivateKey(a).public_key.format(), PrivateKey(b).public_key.format()


async def esplora_server(node: RegtestNode) -> web.AppRunner:
    """Esplora's REST format (github.com/Blockstream/esplora/blob/master/API.md), every answer read
    from the regtest node: a stand-in for an Esplora instance indexing that chain."""

    def rpc(method: str, *params: Any) -> Any:
        try:
            return node.rpc(method, *params)
        except RuntimeError:
            raise web.HTTPNotFound() from None

    async def tip(_: web.Request) -> web.Response:
        return web.Response(text=str(rpc("getblockcount")))

    async def block_height(req: web.Request) -> web.Response:
        return web.Response(text=rpc("getblockhash", int(req.match_info["h"])))

    async def txids(req: web.Request) -> web.Response:
        return web.json_response(rpc("getblock", req.match_info["hash"])["tx"])

    async def tx(req: web.Request) -> web.Response:
        raw = rpc("getrawtransaction", req.match_info["txid"], True)
        vout = [
            {"scriptpubkey": o["scriptPubKey"]["hex"], "value": round(o["value"] * 100_000_000)}
            for o in raw["vout"]
        ]
        return web.json_response({"txid": raw["txid"], "vout": vout})

    async def outspend(req: web.Request) -> web.Response:
        spent = rpc("gettxout", req.match_info["txid"], int(req.match_info["n"]), False) is None
        return web.json_response({"spent": spent})

    app = web.Application()
    app.router.add_get("/blocks/tip/height", tip)
    app.router.add_get("/block-height/{h}", block_height)
    app.router.add_get("/block/{hash}/txids", txids)
    app.router.add_get("/tx/{txid}", tx)
    app.router.add_get("/tx/{txid}/outspend/{n}", outspend)
    runner = web.AppRunner(app)
    await runner.setup()
    return runner


@pytest.fixture
async def esplora(chain: Chain) -> AsyncIterator[str]:
    runner = await esplora_server(chain.node)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def bitcoind(chain: Chain) -> BitcoindRpc:
    return BitcoindRpc(chain.node.url, rpc_auth(user="x", password_file=str(PASSWORD)))


@pytest.mark.parametrize("kind", ["bitcoind", "esplora"])
async def test_verdicts_from_a_real_chain(chain: Chain, esplora: str, kind: str) -> None:
    source: ChainSource = bitcoind(chain) if kind == "bitcoind" else Esplora(esplora)
    verifier = FundingVerifier(source, max_concurrent=4)
    try:
        results = await asyncio.gather(
            *(verifier.check(chain.scids[n], *pubkeys(chain, n)) for n in EXPECTED)
        )
        verdicts = {name: r.verdict for name, r in zip(EXPECTED, results, strict=True)}
        assert verdicts == EXPECTED
        assert results[0].funding_sats == 1_000_000
        # The good channel's output with other keys is not its funding output.
        other = PrivateKey(secret("someone")).public_key.format()
        assert (
            await verifier.check(chain.scids["good"], other, pubkeys(chain, "good")[1])
        ).verdict is Verdict.WRONG_SCRIPT
        # Five channels of one block: its txid list was fetched once.
        calls = verifier.source_calls
        await verifier.check(chain.scids["good"], *pubkeys(chain, "good"))
        assert verifier.source_calls - calls == 2  # the output and whether it is spent
    finally:
        await source.close()


async def hostile_server(mode: str) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if mode == "slow":
            await asyncio.sleep(3)  # past the clients' 1 s timeout
        if mode == "garbage":
            return web.Response(body=b"\x00not json{" * 10)
        if mode == "wrong_shape":
            return web.json_response({"result": {"tx": "nope"}, "vout": 3, "error": None}, status=200)
        return web.Response(status=500, text="internal error")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("mode", ["slow", "garbage", "wrong_shape", "error", "refused"])
async def test_hostile_sources_give_no_verdict(mode: str) -> None:
    runner, url = await hostile_server(mode)
    if mode == "refused":
        url = f"http://127.0.0.1:{free_port()}"
    sources: list[ChainSource] = [BitcoindRpc(url, timeout=1.0), Esplora(url, timeout=1.0)]
    try:
        for source in sources:
            verifier = FundingVerifier(source, tip_ttl=0)
            started = time.monotonic()
            with pytest.raises(ChainUnavailable):
                await verifier.check(scid(100, 1, 0), bytes(33), bytes(33))
            assert time.monotonic() - started < 5
            assert verifier.last_error
    finally:
        for source in sources:
            await source.close()
        await runner.cleanup()


async def test_the_pipeline_forwards_only_verified_channels_and_holds_them_while_the_source_is_down(
    chain: Chain,
) -> None:
    sink = MemorySink()
    down = BitcoindRpc(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    verifier = FundingVerifier(down)
    pipeline = GossipPipeline(
        REGTEST, sink, PeerStats("peer", "peer@host:9735"), verifier=verifier, workers=2
    )
    now_us = time.time_ns() // 1000
    announcements = {}
    for name in EXPECTED:
        b1, b2 = chain.keys[KEYS_OF[name]]
        raw = sign_channel_announcement(REGTEST, chain.scids[name], NODE_A, NODE_B, b1, b2)
        announcements[name] = raw
        assert (await pipeline.handle(raw, now_us, 0.0)).outcome is Outcome.PENDING
    try:
        # The source is down: everything is held, nothing is forwarded or rejected.
        deadline = time.monotonic() + 10
        while pipeline.stats.pending["funding_retried"] < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert sink.raws == [] and not pipeline.stats.invalid
        assert pipeline.awaiting_verdict() == len(EXPECTED)
        assert set(pipeline.checking) == set(chain.scids.values())
        assert pipeline.oldest_checking_us() == now_us
        # A replay meanwhile is a duplicate.
        assert (await pipeline.handle(announcements["good"], now_us, 0.0)).outcome is Outcome.DUPLICATE
        # The source comes back: the verdicts arrive.
        verifier.source = bitcoind(chain)
        pipeline._retry.reset()
        deadline = time.monotonic() + 90
        while len(pipeline.checking) > 2:  # the two with too few confirmations stay held
            assert time.monotonic() < deadline, pipeline.stats.invalid
            await asyncio.sleep(0.05)
        await asyncio.wait_for(pipeline.wait_for_verdicts(), 5)  # what the initial sync report waits for
        assert pipeline.awaiting_verdict() == 0
        assert sink.raws == [announcements["good"]]
        assert sink.funding == {announcements["good"]: 1_000_000}
        assert pipeline.stats.invalid == {
            "funding_wrong_script": 1, "funding_spent": 1, "funding_no_output": 1, "funding_no_transaction": 1
        }  # fmt: skip
        assert set(pipeline.checking) == {chain.scids["young"], chain.scids["unmined"]}
        assert not pipeline.knows_channel(chain.scids["spent"])  # its updates wait (and expire)
    finally:
        await pipeline.close()
        await verifier.source.close()
        await down.close()


async def test_whole_path_serves_only_funded_channels_with_their_capacity(
    chain: Chain, database_url: str, short_tmp: Path, ldk_client: LdkRgsClient
) -> None:
    """Peer → downloader (checking on the regtest chain) → persistence → lookup → LDK's client: of
    the seven validly signed channels only the funded, unspent, confirmed one is served, with its
    capacity in the v2 tail (read by the client model as LDK >= 0.2 does)."""
    now = int(time.time())
    graph = Graph()
    first, second = sorted((NODE_A, NODE_B), key=pubkey_of)
    for name in EXPECTED:
        s = chain.scids[name]
        graph.announcements[s] = sign_channel_announcement(
            REGTEST, s, NODE_A, NODE_B, *chain.keys[KEYS_OF[name]]
        )
        graph.origins[(s, 0)], graph.origins[(s, 1)] = first, second
        graph.updates[s] = [graph.update(s, d, now - 60, chain=REGTEST) for d in (0, 1)]
    graph.nodes = [
        sign_node_announcement(x, now - 60, alias=b"n%d" % i) for i, x in enumerate((NODE_A, NODE_B))
    ]
    stack = Stack(
        database_url,
        short_tmp,
        network="regtest",
        extra_env={"LNSYNC_INGEST_LAG": "1", "LNSYNC_LOOKUP__TIMESTAMP_GRANULARITY": "1"},
    )
    verifier = FundingVerifier(bitcoind(chain))
    behaviour = PeerBehaviour(chain=REGTEST, networks=(REGTEST,))
    try:
        await stack.start_healthy("persistence")
        await stack.start_healthy("lookup")
        async with ScriptedPeer(graph, behaviour=behaviour) as peer:
            sink = PersistenceSink(stack.target("persistence"), PEER_ID.hex(), window=1000)
            await sink.start()
            downloader = Downloader(PeerAddress.parse(peer.address), REGTEST, sink, FAST, verifier=verifier)
            task = asyncio.create_task(downloader.run())
            try:
                await asyncio.wait_for(downloader.sync_reported.wait(), 60)
                deadline = time.monotonic() + 60
                while len(downloader.pipeline.checking) > 2:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                await sink.flush()
                invalid = dict(downloader.stats.invalid)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await downloader.close()
        await asyncio.sleep(2.5)  # past R = now - ingest_lag
        async with rpc.channel(stack.target("lookup")) as ch:
            request = lookup_pb2.ComputeDeltaRequest(last_sync_timestamp=0, version=2)
            _, blob = await rpc.join_chunks(lookup_pb2_grpc.LookupStub(ch).ComputeDelta(request, timeout=60))
        with ldk_client.new_graph("regtest") as ldk:
            assert ldk.apply(blob, now=int(time.time())).accepted
            channels = ldk.dump().channels
        assert set(channels) == {chain.scids["good"]}
        # The npm LDK (0.1.x) ignores the v2 capacity tail; the blob carries it, as LDK >= 0.2 reads it.
        announced = {a.scid: a.funding_sats for a in decode(blob).announcements}
        assert announced == {chain.scids["good"]: 1_000_000}
        model = RgsClient(REGTEST, ClientOptions(parse_funding=True))
        model.apply(blob, now=int(time.time()))
        assert model.channels[chain.scids["good"]].capacity_sats == 1_000_000
        assert invalid == {
            "funding_wrong_script": 1, "funding_spent": 1, "funding_no_output": 1, "funding_no_transaction": 1
        }  # fmt: skip
    finally:
        await verifier.source.close()
        stack.close()


async def test_import_checks_funding_with_a_chain_source(chain: Chain, database_url: str) -> None:
    """``lnsync import`` with chain.source set: only verified announcements are sent, with the
    chain's amount; the rest are counted by reason; a source that is down ends the import."""
    running = await start_persistence(database_url, network="regtest")
    archive = Path(tempfile.mkdtemp()) / "channels.gsp"
    archive.write_bytes(
        encode_gsp(
            [
                sign_channel_announcement(REGTEST, chain.scids[n], NODE_A, NODE_B, *chain.keys[KEYS_OF[n]])
                for n in EXPECTED
            ]
        )
    )
    verifier = FundingVerifier(bitcoind(chain))
    try:
        await running.wait_serving()
        tally, counters = await import_files(
            [archive], target=running.target, peer_id="import:test", seen="now", network="regtest",
            stall_timeout=20, verifier=verifier,
        )  # fmt: skip
        assert counters.stored == 1
        assert tally.invalid == {
            "funding_wrong_script": 1, "funding_spent": 1, "funding_no_output": 1,
            "funding_no_transaction": 1, "funding_too_few_confirmations": 2,
        }  # fmt: skip
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT scid, funding_sats FROM channel_announcements")
        finally:
            await conn.close()
        assert [(r["scid"], r["funding_sats"]) for r in rows] == [(chain.scids["good"], 1_000_000)]
        down = FundingVerifier(BitcoindRpc(f"http://127.0.0.1:{free_port()}", timeout=1.0))
        with pytest.raises(ImportFailed, match="chain source unavailable"):
            await import_files(
                [archive], target=running.target, peer_id="import:test", seen="now", network="regtest",
                stall_timeout=20, verifier=down,
            )  # fmt: skip
        await down.source.close()
    finally:
        await verifier.source.close()
        await running.stop()


async def test_channels_spent_later_or_never_funded_leave_the_graph(chain: Chain, database_url: str) -> None:
    """Persistence's recheck finds a stored channel's funding output spent, and one stored without
    a funding output at all, and sets closed_at; from then on lookup's graph (what every delta and
    snapshot is made of) leaves them out, while answers for earlier reference times stay as they
    were."""
    node = chain.node
    k1, k2 = PrivateKey(secret("closing1")), PrivateKey(secret("closing2"))
    coin = node.coinbase(3)
    txid = node.send(
        sign_segwit(
            [coin], [(300_000, funding_output(k1, k2)), (coin.amount - 310_000, outputs_to_self(node))]
        )
    )
    node.mine(6)
    height, index = node.position(txid)
    s = scid(height, index, 0)
    running = await start_persistence(database_url, network="regtest")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    verifier = FundingVerifier(bitcoind(chain))
    try:
        await running.wait_serving()
        now = int(time.time())
        async with IngestClient(running.target, "09" * 33) as client:
            await client.send(
                sign_channel_announcement(REGTEST, s, NODE_A, NODE_B, k1.secret, k2.secret),
                funding_sats=300_000,
            )
            unfunded = chain.scids["no_output"]  # stored as if no source had been configured
            a1, a2 = chain.keys["good"]
            await client.send(sign_channel_announcement(REGTEST, unfunded, NODE_A, NODE_B, a1, a2))
            for channel in (s, unfunded):
                for direction in (0, 1):
                    await client.send(channel_update(channel, direction, now - 30, chain=REGTEST))
            await client.flush(timeout=20)

        async def live(R: int) -> set[int]:
            async with pool.acquire() as conn:
                graph = await load_delta_input(conn, REGTEST, 0, R)
            return {int(x) for x in graph.channels.scid}

        await asyncio.sleep(1.1)
        before = int(time.time())
        assert await live(before) == {s, unfunded}
        assert await spent.recheck(pool, verifier) == (2, 1)  # the unfunded one is closed
        await asyncio.sleep(1.1)
        after_first = int(time.time())
        assert await live(after_first) == {s}
        node.send(sign_segwit([multisig_spend(txid, 0, 300_000, k1, k2)], [(290_000, outputs_to_self(node))]))
        node.mine(1)
        assert await spent.recheck(pool, verifier) == (1, 1)
        assert await spent.recheck(pool, verifier) == (0, 0)  # closed channels are not asked again
        await asyncio.sleep(1.1)
        assert await live(int(time.time())) == set()
        assert await live(before) == {s, unfunded} and await live(after_first) == {s}  # the past stays
    finally:
        await verifier.source.close()
        await pool.close()
        await running.stop()


async def test_a_source_on_another_network_gives_no_verdict(chain: Chain) -> None:
    """Every verdict from a source on the wrong chain would be wrong and final: before the first
    verdict the verifier compares the source's genesis block with the configured network's."""
    for network, works in (("bitcoin", False), ("regtest", True)):
        verifier = FundingVerifier(bitcoind(chain), chain_hash=chain_hash(network))
        try:
            if works:
                judgement = await verifier.check(chain.scids["good"], *pubkeys(chain, "good"))
                assert judgement.verdict is Verdict.VERIFIED
            else:
                with pytest.raises(ChainUnavailable, match="genesis"):
                    await verifier.check(chain.scids["good"], *pubkeys(chain, "good"))
        finally:
            await verifier.source.close()


def test_a_downloader_loads_the_http_client_only_for_a_chain_source() -> None:
    """aiohttp costs a downloader ~0.2 s of CPU at start-up (one pod per peer); without a chain
    source it is never needed."""
    code = (
        "import sys, services.downloader.server, lnsync.chain.sources as s; "
        "print('aiohttp' in sys.modules); s.Esplora('http://127.0.0.1:1/api'); "
        "print('aiohttp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "True"]
