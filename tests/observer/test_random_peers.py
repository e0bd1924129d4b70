"""Random peer sets end to end: the store holds node announcements whose addresses point at real
BOLT 8 scripted peers on 127.0.0.1 (honest ones, one refusing, one stalling, one misbehaving, and
nodes announcing only Tor or nothing), real ``lnsync serve persistence`` records the deliveries,
and :class:`RandomPeerSet` connects to K of them with the normal downloader machinery, replaces
the bad ones (counted by outcome), rotates and records every epoch in ``peer_set_epochs``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from lnsync import db, rpc
from lnsync.commands.up import build_children
from lnsync.config import PeerAddress, Settings, load_settings
from lnsync.gossip import control as c
from lnsync.gossip.addresses import AddressType, SocketAddress, encode_addresses
from lnsync.gossip.messages import decode_gossip
from lnsync.gossip.signing import pubkey_of, sign_node_announcement
from services.observer import peerset as ps
from services.observer import render, report
from services.observer.random_peers import RandomPeerSet, failed_until, load_candidates
from services.persistence.store import Incoming, write_batch
from tests.conftest import free_port
from tests.downloader.scripted import PeerConnection, ScriptedPeer, make_graph
from tests.stack import Stack, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ONION = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion"


def secret(name: str) -> bytes:
    return hashlib.sha256(f"random-set-{name}".encode()).digest()


async def stall(conn: PeerConnection) -> None:
    """Init, then silence: no gossip, no pongs."""
    await conn.send_init()
    await asyncio.Event().wait()


async def misbehave(conn: PeerConnection) -> None:
    """Init, then an error closing every channel: BOLT 1 says fail the connection."""
    await conn.send_init()
    await conn.send(c.ErrorMessage(data=b"go away").encode())
    await conn.serve()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def announce(url: str, nodes: dict[bytes, list[SocketAddress]]) -> None:
    """Store a node_announcement per node (as persistence would), with these addresses."""
    now = int(time.time())
    items = [
        Incoming(
            decode_gossip(sign_node_announcement(key, now, addresses=encode_addresses(addrs))), now * 10**6
        )
        for key, addrs in nodes.items()
    ]
    conn = await asyncpg.connect(url)
    try:
        await write_batch(conn, items)
    finally:
        await conn.close()


def local(port: int) -> list[SocketAddress]:
    return [SocketAddress(AddressType.IPV4, "127.0.0.1", port)]


@contextlib.asynccontextmanager
async def announced_peers(url: str, name: str, n: int, *, channels: int) -> AsyncIterator[list[ScriptedPeer]]:
    """``n`` honest scripted peers serving one small graph, each announced in the store."""
    graph = make_graph(channels)
    honest = [ScriptedPeer(graph, secret=secret(f"{name}-{i}")) for i in range(n)]
    async with contextlib.AsyncExitStack() as peers:
        for p in honest:
            await peers.enter_async_context(p)
        await announce(url, {p.secret: local(p.port) for p in honest})
        yield honest


@contextlib.asynccontextmanager
async def persistence(database_url: str, workdir: Path) -> AsyncIterator[Stack]:
    stack = Stack(database_url, workdir)
    try:
        await stack.start_healthy("persistence")
        yield stack
    finally:
        stack.close()


def settings_for(url: str, stack: Stack, **observer: object) -> Settings:
    return load_settings(
        None,
        network="bitcoin",
        database_url=url,
        persistence={"listen": stack.target("persistence")},
        observer={"attempts_per_minute": 600, "stall_timeout": 3, **observer},
    )


async def drive(rps: RandomPeerSet, until_done: object, timeout: float, what: str) -> None:
    """Tick the set every 0.2 s until ``until_done()`` is true."""
    deadline = time.monotonic() + timeout
    while True:
        await rps.step(time.time())
        if until_done():  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def rows(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT * FROM peer_set_epochs ORDER BY id")
    finally:
        await conn.close()


async def test_bad_peers_are_replaced_and_counted(database_url: str, short_tmp: Path) -> None:
    graph = make_graph(4)
    honest = [ScriptedPeer(graph, secret=secret(f"honest-{i}")) for i in range(4)]
    staller = ScriptedPeer(graph, script=stall, secret=secret("stall"))
    rude = ScriptedPeer(graph, script=misbehave, secret=secret("rude"))
    refusing, tor_only, silent = secret("refuse"), secret("tor"), secret("no-address")
    async with contextlib.AsyncExitStack() as peers:
        for p in [*honest, staller, rude]:
            await peers.enter_async_context(p)
        await announce(
            database_url,
            {
                **{p.secret: local(p.port) for p in [*honest, staller, rude]},
                refusing: local(closed_port()),
                tor_only: [SocketAddress(AddressType.TOR_V3, ONION, 9735)],
                silent: [],
            },
        )
        async with persistence(database_url, short_tmp) as stack:
            pool = await db.create_pool(database_url, max_size=2)
            # K = 5 of 7 dialable nodes, 3 of them bad: every bad one is chosen before the set
            # runs out of others, so each is tried, replaced and counted.
            # The longest rotation interval: at 3600 s the test once ran across a full hour, where
            # the epoch changes and every member's row closes as "continued".
            settings = settings_for(database_url, stack, random_peers=5, rotate_interval=30 * 86400, seed=11)
            rps = RandomPeerSet(settings, pool=pool)
            try:
                async with pool.acquire() as conn:
                    candidates = await load_candidates(conn)
                dialable = {
                    pubkey_of(s).hex() for s in [p.secret for p in [*honest, staller, rude]] + [refusing]
                }
                assert set(candidates) == dialable  # Tor-only and address-less nodes are not candidates
                bad = {pubkey_of(s).hex() for s in (staller.secret, rude.secret, refusing)}
                await drive(rps, lambda: bad <= set(rps.excluded), 60, "all three bad peers replaced")
                good = {pubkey_of(p.secret).hex() for p in honest}
                await drive(rps, lambda: set(rps.members) == good, 30, "the honest peers observed")
                assert rps.outcomes == {ps.REFUSED: 1, ps.STALLED: 1, ps.MISBEHAVED: 1}
                for p in honest:  # each honest one dumped its graph to us
                    assert p.connections and p.connections[0].filter is not None
                await until(lambda: _delivered(database_url, good), 20, "deliveries of the honest peers")
            finally:
                await rps.stop_all(time.time())
                await pool.close()
        by_peer: dict[str, list[str]] = {}
        for r in await rows(database_url):
            by_peer.setdefault(r["peer_id"], []).append(r["outcome"])
        assert by_peer[pubkey_of(refusing).hex()] == [ps.REFUSED]
        assert by_peer[pubkey_of(staller.secret).hex()] == [ps.STALLED]
        assert by_peer[pubkey_of(rude.secret).hex()] == [ps.MISBEHAVED]
        for p in honest:
            assert by_peer[pubkey_of(p.secret).hex()] == [ps.STOPPED]
        assert pubkey_of(tor_only).hex() not in by_peer and pubkey_of(silent).hex() not in by_peer
        conn = await asyncpg.connect(database_url)
        try:  # a restarted observer still excludes them (for exclude_failed_for, one day)
            excluded = await failed_until(conn, 86400, time.time())
        finally:
            await conn.close()
        assert set(excluded) == bad and all(t > time.time() + 86000 for t in excluded.values())


async def _delivered(url: str, peers: set[str]) -> bool:
    conn = await asyncpg.connect(url)
    try:
        got = await conn.fetch("SELECT DISTINCT peer_id FROM peer_set_observations")
    finally:
        await conn.close()
    return {r["peer_id"] for r in got} == peers


async def test_the_set_rotates_reproducibly_and_epochs_are_recorded(
    database_url: str, short_tmp: Path
) -> None:
    async with announced_peers(database_url, "rot", 6, channels=3) as honest:
        ids = {pubkey_of(p.secret).hex(): p for p in honest}
        async with persistence(database_url, short_tmp) as stack:
            pool = await db.create_pool(database_url, max_size=2)
            # K = 2, half the set rotates every 3-second epoch (each peer stays two epochs). The
            # seed is one under which the next epochs' rotating slot really changes its peer (a
            # slot may draw the same peer again), so the rotations this test sees are not luck.
            first = ps.epoch_of(time.time(), 3)
            seed = next(s for s in range(100_000) if _rotates_every_epoch(ids, s, first, first + 16))
            settings = settings_for(
                database_url, stack, random_peers=2, rotate_interval=3, rotate_share=0.5, seed=seed
            )
            rps = RandomPeerSet(settings, pool=pool)
            seen_epochs: set[int] = set()
            try:

                def enough() -> bool:
                    if rps.epoch is not None and len(rps.members) == 2:
                        seen_epochs.add(rps.epoch)
                    return len(seen_epochs) >= 4

                await drive(rps, enough, 40, "four epochs")
            finally:
                await rps.stop_all(time.time())
                await pool.close()
        assert rps.outcomes == {}  # honest peers: nothing replaced
        recorded = await rows(database_url)
        async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as p2, p2.acquire() as conn:
            candidates = await load_candidates(conn)
            per_epoch = await conn.fetch(
                "SELECT epoch, count(*) AS deliveries, count(DISTINCT peer_id) AS peers,"
                " count(DISTINCT msg_hash) AS messages"
                " FROM peer_set_observations GROUP BY epoch ORDER BY epoch"
            )
        epochs = sorted({r["epoch"] for r in recorded})
        assert epochs[0] in (first, first + 1) and len(epochs) >= 4
        for e in epochs:
            # Each epoch's set is exactly what the seed gives for that epoch and graph.
            want = {c.peer.node_id for c in ps.choose(candidates, k=2, seed=seed, epoch=e, period=2)}
            assert {r["peer_id"] for r in recorded if r["epoch"] == e} == want, e
        # One slot rotates per epoch: consecutive sets share exactly one peer; the leaver's row
        # says rotated, the stayer's continued (and a new row opens for it).
        for e in epochs[1:-1]:
            now_ = {r["peer_id"]: r for r in recorded if r["epoch"] == e}
            nxt = {r["peer_id"] for r in recorded if r["epoch"] == e + 1}
            assert len(set(now_) & nxt) == 1
            for peer, r in now_.items():
                assert r["outcome"] == ("continued" if peer in nxt else ps.ROTATED)
                assert r["ended"] is not None and r["ended"] >= r["started"]
        assert {r["outcome"] for r in recorded if r["epoch"] == epochs[-1]} == {ps.STOPPED}
        # Deliveries can be read per epoch: each joining peer dumps its graph, so every epoch
        # with a newcomer has deliveries, and only from that epoch's peers.
        assert per_epoch and all(r["peers"] <= 2 for r in per_epoch)
        assert per_epoch[0]["epoch"] == epochs[0] and per_epoch[0]["deliveries"] >= 2 * 9
        # The report reads the same per epoch (JSON, CSV and an HTML table).
        conn = await asyncpg.connect(database_url)
        try:
            data = await report.gather(conn, now=time.time(), since=3600, interval=3600, max_delay=3600)
        finally:
            await conn.close()
        sets = data["peer_sets"]["epochs"]
        assert [e["epoch"] for e in sets] == epochs
        assert all(
            e["peers"] == len({r["peer_id"] for r in recorded if r["epoch"] == e["epoch"]}) for e in sets
        )
        delivered = {r["epoch"]: (r["deliveries"], r["messages"]) for r in per_epoch}
        assert {e["epoch"]: (e["deliveries"], e["messages"]) for e in sets if e["deliveries"]} == delivered
        assert sets[-1]["outcomes"] == {ps.STOPPED: 2}
        assert sum(e["outcomes"].get(ps.ROTATED, 0) for e in sets) >= len(epochs) - 2
        assert f"peer_sets.epochs[0].epoch,{epochs[0]}" in render.to_csv(data)
        page = render.to_html(data, figures={})
        assert "<h2>Random peer sets</h2>" in page and f"<tr><th>{epochs[-1]}</th>" in page


def _rotates_every_epoch(ids: dict[str, ScriptedPeer], seed: int, lo: int, hi: int) -> bool:
    cands = {n: PeerAddress(bytes.fromhex(n), "127.0.0.1", p.port) for n, p in ids.items()}
    # Lazily, stopping at the first epoch that does not rotate: about 1 seed in 500 passes 16
    # epochs, so the search runs through a few hundred seeds.
    sets = (
        {c.peer.node_id for c in ps.choose(cands, k=2, seed=seed, epoch=e, period=2)} for e in range(lo, hi)
    )
    return all(len(a) == 2 and len(a & b) == 1 for a, b in itertools.pairwise(sets))


async def test_lnsync_up_runs_the_set_as_a_service(database_url: str, short_tmp: Path) -> None:
    """``lnsync up`` adds a random-peers child when observer.random_peers > 0; that child (the real
    ``lnsync serve random-peers`` process) reports healthy and observes the stored graph's peers."""
    plain = load_settings(None, network="bitcoin", peers=[])
    on = load_settings(None, network="bitcoin", peers=[], observer={"random_peers": 2})
    assert "random-peers" not in [ch.name for ch in build_children(plain, {})]
    child = next(ch for ch in build_children(on, {}) if ch.name == "random-peers")
    assert child.argv[-2:] == ["serve", "random-peers"]

    async with announced_peers(database_url, "up", 3, channels=2):
        listen = f"127.0.0.1:{free_port()}"
        stack = Stack(
            database_url,
            short_tmp,
            extra_env={
                "LNSYNC_OBSERVER__RANDOM_PEERS": "2",
                "LNSYNC_OBSERVER__SEED": "3",
                "LNSYNC_OBSERVER__LISTEN": listen,
            },
        )
        try:
            await stack.start_healthy("persistence")
            service = stack.start("random-peers")
            await until(lambda: rpc.check_health(listen, timeout=1), 60, "random-peers healthy")

            async def observed() -> list[asyncpg.Record]:
                got = await rows(database_url)
                return got if len({r["peer_id"] for r in got if r["outcome"] is None}) == 2 else []

            open_rows = await until(observed, 60, "two peers observed")
            want = {
                c.peer.node_id
                for c in ps.choose(
                    await _candidates(database_url), k=2, seed=3, epoch=open_rows[0]["epoch"], period=4
                )
            }
            assert {r["peer_id"] for r in open_rows if r["outcome"] is None} == want
            assert service.stop() == 0  # SIGTERM: the rows are closed as stopped
            assert {r["outcome"] for r in await rows(database_url)} == {ps.STOPPED}
        finally:
            stack.close()


async def _candidates(url: str) -> dict[str, PeerAddress]:
    conn = await asyncpg.connect(url)
    try:
        return await load_candidates(conn)
    finally:
        await conn.close()
