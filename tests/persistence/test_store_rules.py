"""Persistence's SQL writer and lookup's SQL reader implement exactly the store model.

Random histories (duplicates, stale arrivals, late announcements, revived directions, node changes)
are written to a real PostgreSQL in random batch sizes; for many (T, R) pairs the blob computed
from the database is byte-identical to the blob computed from the in-memory model
(lnsync.rgs.history) fed the same messages, and the live graph the proof reads from the records
(lnsync.truth) is the model's: a correct store passes the proof.
"""

from __future__ import annotations

import random

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lnsync import truth
from lnsync.gossip.messages import decode_gossip
from lnsync.rgs import proof
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.model import DeltaParams
from services.lookup.store import GraphAt, load_delta_input, load_graph
from services.persistence.store import Incoming, write_batch
from tests.rgs.histories import DAY, MAINNET, START, Event, event_message, random_events


async def write_events(conn: asyncpg.Connection, events: list, rng: random.Random) -> GossipHistory:  # type: ignore[type-arg]
    history = GossipHistory(MAINNET)
    batch: list[Incoming] = []
    for ev in events:
        raw = event_message(ev)
        funding = ev.kwargs.get("funding_sats") if ev.kind == "ann" else None
        history.add_message(raw, ev.seen, funding_sats=funding)  # type: ignore[arg-type]
        batch.append(Incoming(decode_gossip(raw), ev.seen * 1_000_000 + rng.randrange(1_000_000), funding))  # type: ignore[arg-type]
        if len(batch) >= rng.choice([1, 7, 50, 300]):
            await write_batch(conn, batch)
            batch = []
    if batch:
        await write_batch(conn, batch)
    return history


async def assert_same_blobs(
    conn: asyncpg.Connection, history: GossipHistory, pairs: list[tuple[int, int]]
) -> None:
    """Also through a graph at R loaded once and shared by every T (as lookup's cache does)."""
    params = DeltaParams(apply_lag=3600)
    graphs: dict[int, GraphAt] = {}
    for T, R in pairs:
        from_model = compute_delta(history.delta_input(T, R), params)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            from_db = compute_delta(await load_delta_input(conn, MAINNET, T, R), params)
            if R not in graphs:
                graphs[R] = await load_graph(conn, R)
            shared = compute_delta(await load_delta_input(conn, MAINNET, T, R, graphs[R]), params)
            live = await truth.live_graph(conn, MAINNET, R)
            records = await truth.live_graph(conn, MAINNET, R, copy=False)
        model = history.delta_input(0, R)
        for version in (1, 2):
            expected = encode(from_model, version)
            assert encode(from_db, version) == expected, (T, R, version)
            assert encode(shared, version) == expected, ("shared graph", T, R, version)
            assert proof.expected_graph(live, version) == proof.expected_graph(model, version), ("truth", R)
            assert proof.expected_graph(records, version) == proof.expected_graph(model, version), ("rows", R)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32))
@example(seed=48090)  # a node id ending in a zero byte (NumPy 'S' strings used to drop it)
async def test_database_blobs_equal_model_blobs(database_url: str, seed: int) -> None:
    rng = random.Random(seed)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "TRUNCATE channel_announcements, channel_updates, channel_directions, node_announcements, nodes"
        )
        events = random_events(seed, channels=25, days=20, node_ties=0.1)
        history = await write_events(conn, events, rng)
        pairs = [(0, START + 5 * DAY)]
        for _ in range(8):
            R = START + rng.randrange(DAY, 20 * DAY)
            pairs.append((R - rng.choice([3600, DAY, 3 * DAY, 8 * DAY]), R))
        # R values that fall inside the history exercise the "seen at or after R" paths.
        pairs.append((START + 2 * DAY, events[len(events) // 2].seen))
        # Several clients against one R, the full graph last: one graph serves them all unchanged.
        R = START + 12 * DAY
        pairs += [(R - 3600, R), (R - 3 * DAY, R), (R - DAY, R), (0, R)]
        await assert_same_blobs(conn, history, pairs)
    finally:
        await conn.close()


@pytest.mark.parametrize("batches", ["one batch", "one message a batch"])
async def test_equal_timestamps_store_the_same_node_whatever_the_arrival_order(
    database_url: str, batches: str
) -> None:
    """Issue 25: two node_announcements of one node with the same timestamp and other addresses.
    In either arrival order (and whether in one batch or two) the store ends with the winner of
    lnsync.rgs.rules.node_tie_winner, and its blobs equal the model's."""
    ann = next(e for e in random_events(7, nodes=4, channels=4, days=3) if e.kind == "node")
    key, ts = ann.args
    rivals = [
        Event(
            ann.seen + i, "node", (key, ts), {**ann.kwargs, "addresses": bytes([1, 10, 9, i, 1, 0x26, 0x07])}
        )
        for i in (1, 2)
    ]
    raws = [event_message(e) for e in rivals]
    winner = max(raws)
    conn = await asyncpg.connect(database_url)
    try:
        served = []
        for order in (rivals, rivals[::-1]):
            await conn.execute("TRUNCATE node_announcements, nodes")
            batch = [Incoming(decode_gossip(event_message(e)), e.seen * 1_000_000, None) for e in order]
            for part in [batch] if batches == "one batch" else [[b] for b in batch]:
                await write_batch(conn, part)
            history = GossipHistory(MAINNET)
            for e in order:
                history.add_message(event_message(e), e.seen)
            row = await conn.fetchrow(
                "SELECT n.addresses, a.raw, count(*) OVER () AS rows FROM nodes n"
                " JOIN node_announcements a ON a.id = n.announcement_id"
            )
            assert bytes(row["raw"]) == winner and row["rows"] == 1
            served.append(bytes(row["addresses"]))
            await assert_same_blobs(conn, history, [(0, ts + DAY)])
        assert served[0] == served[1] == decode_gossip(winner).addresses  # type: ignore[union-attr]
    finally:
        await conn.close()
