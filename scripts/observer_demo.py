"""Render the observer report for a synthetic demo dataset (the charts shown in the README).

Usage: ``PYTHONPATH=. .venv/bin/python scripts/observer_demo.py OUT_DIR`` — starts a throw-away PostgreSQL,
stores a random 3-day gossip history (tests/rgs/histories.py), lets eight simulated peers deliver
each message with their own coverage and latency (log-normal delays), and writes
``OUT_DIR/report.html`` plus each chart as ``OUT_DIR/<name>.png``. Deterministic (fixed seeds).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from lnsync import schema
from lnsync.gossip.messages import decode_gossip
from lnsync.pg import LocalPostgres
from services.observer import render, report
from services.persistence.peers import OBSERVATION_COLUMNS, kind_of, message_hash
from services.persistence.store import Incoming, to_timestamp, write_batch
from tests.rgs.histories import event_message, random_events

# (coverage, median delay in seconds) of each simulated peer.
PEERS = [(0.97, 0.3), (0.95, 0.8), (0.9, 1.5), (0.85, 4.0), (0.7, 8.0), (0.6, 15.0), (0.45, 30.0),
         (0.3, 60.0)]  # fmt: skip
INTERVAL, MAX_DELAY = 3600, 600


def peer_delays(rng: random.Random) -> dict[int, float]:
    """Which peers deliver one message, and each one's delay (s) behind the fastest of them."""
    delays = {
        num: rng.lognormvariate(0, 1.0) * median
        for num, (coverage, median) in enumerate(PEERS, start=1)
        if rng.random() < coverage
    } or {1: 0.0}
    fastest = min(delays.values())
    return {num: d - fastest for num, d in delays.items()}


async def fill(url: str) -> float:
    rng = random.Random(7)
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
        for i in range(len(PEERS)):
            await conn.execute(
                "INSERT INTO peers (peer_id, source) VALUES ($1, 'demo')", f"demo-peer-{i + 1}"
            )
        events = random_events(3, channels=300, days=3)
        batch, rows = [], []
        for ev in events:
            raw = event_message(ev)
            msg = decode_gossip(raw)
            batch.append(Incoming(msg, ev.seen * 1_000_000))
            for num, delay in peer_delays(rng).items():
                at = ev.seen * 1_000_000 + int(delay * 1_000_000)
                rows.append((num, message_hash(msg), kind_of(msg), to_timestamp(at), delay == 0, len(raw)))
            if len(batch) >= 500:
                await write_batch(conn, batch)
                batch = []
        if batch:
            await write_batch(conn, batch)
        await conn.copy_records_to_table("observations", records=rows, columns=OBSERVATION_COLUMNS)
        return max(ev.seen for ev in events) + 60.0
    finally:
        await conn.close()


async def gather(url: str) -> dict[str, Any]:
    now = await fill(url)
    conn = await asyncpg.connect(url)
    try:
        return await report.gather(conn, now=now, since=86400, interval=INTERVAL, max_delay=MAX_DELAY)
    finally:
        await conn.close()


def main(out: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="lnsync-observer-demo-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL may run as another user (see lnsync.pg)
    server = LocalPostgres(root / "pg", ephemeral=True)
    server.start()
    try:
        data = asyncio.run(gather(server.ensure_database("demo")))
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    figures = render.charts(data)
    for name, (_, fig) in figures.items():
        fig.savefig(out / f"{name}.png", dpi=80, bbox_inches="tight")
    (out / "report.html").write_text(render.to_html(data, figures), encoding="utf-8")
    (out / "report.json").write_text(render.to_json(data), encoding="utf-8")
    print(f"wrote {out}/report.html, report.json and {len(figures)} PNGs")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "observer-demo"))
