"""End to end: four peers deliver a known arrival pattern through a real persistence process
(gRPC Ingest), and the real ``lnsync observe report`` reports the redundancy, delay percentiles and
coverage worked out by hand below; the HTML report carries every chart as SVG that parses, and the
PNGs written beside it are real PNGs.

The report reads the summaries persistence's observer job folded on its own schedule.

The pattern (times after each message's first arrival; max_delay 120 s):

* peer A delivers all 20 messages first (0 s), peer B all 20 at +1 s, peer C the even ones at
  +2 s, peer D messages 0..4 at +5 s; B delivers message 0 a second time (+30 s) and C delivers
  message 1 at +200 s (late).
* Redundancy: messages 0, 2, 4 have 4 peers; 1, 3 and 6, 8, ..., 18 have 3; 5, 7, ..., 19 have 2:
  {4: 3, 3: 9, 2: 8}, mean (12 + 27 + 16) / 20 = 2.75.
* t50 (rank ceil(r/2)): 1 s for r = 3 or 4 (B), 0 s for r = 2 -> 8 x 0 s, 12 x 1 s:
  p50 (10th of 20) = 1 s, p95 (19th) = 1 s.
* t95 (rank ceil(0.95 r)): 5 s (D) for messages 0..4, 2 s (C) for 6..18 even, 1 s (B) for the
  8 odd ones above 4 -> 8 x 1, 7 x 2, 5 x 5: p50 = 2 s, p95 = 5 s.
* Delays of every later arrival: 20 x 1 s, 10 x 2 s, 5 x 5 s -> p50 (18th of 35) = 1 s,
  p95 (34th) = 5 s, mean 65 / 35 s.
* Coverage: A 1.0, B 1.0, C 0.5 (the late delivery does not count), D 0.25; mean ranks 1, 2, 3,
  (3 x 4 + 2 x 3) / 5 = 3.6, so the latency ranks are A, B, C, D.
* Deliveries 20 + 21 + 11 + 5 = 57, unique 20, duplicates 37.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import asyncpg
import pytest

from lnsync import rpc
from lnsync.clients.ingest import IngestClient
from lnsync.v1 import persistence_pb2_grpc
from services.gateway.volume import persistence_probe
from tests.persistence.conftest import node_announcement
from tests.stack import Stack

pytestmark = pytest.mark.timeout(60)

S = 1_000_000
PEERS = {"A": "02" + "a1" * 32, "B": "02" + "b2" * 32, "C": "02" + "c3" * 32, "D": "02" + "d4" * 32}
# One-minute intervals: the job inside persistence passes every 6 s and folds the pattern (which
# lies 15 minutes back) soon after it arrives, so the report reads stored summaries.
OBSERVER_ENV = {
    "LNSYNC_PERSISTENCE__OBSERVATION_INTERVAL": "60",
    "LNSYNC_PERSISTENCE__OBSERVATION_MAX_DELAY": "120",
    "LNSYNC_INGEST_LAG": "10",
}


def pattern(base_us: int) -> dict[str, list[tuple[bytes, int]]]:
    messages = [node_announcement(100 + i, 1_700_000_000 + i) for i in range(20)]
    first = [base_us + i * S for i in range(20)]
    out: dict[str, list[tuple[bytes, int]]] = {
        "A": [(messages[i], first[i]) for i in range(20)],
        "B": [(messages[i], first[i] + S) for i in range(20)] + [(messages[0], first[0] + 30 * S)],
        "C": [(messages[i], first[i] + 2 * S) for i in range(0, 20, 2)] + [(messages[1], first[1] + 200 * S)],
        "D": [(messages[i], first[i] + 5 * S) for i in range(5)],
    }
    return out


def observe(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, **OBSERVER_ENV}
    return subprocess.run(
        [sys.executable, "-m", "lnsync", "observe", "report", "--since", "1h", *args],
        env=env, capture_output=True, text=True, timeout=40, check=True,
    )  # fmt: skip


@pytest.mark.slow
async def test_report_matches_hand_computed_figures(database_url: str, short_tmp: Path) -> None:
    stack = Stack(database_url, short_tmp, extra_env=OBSERVER_ENV)
    try:
        await stack.start_healthy("persistence")
        base = (time.time_ns() // 1000) - 900 * S
        for name, deliveries in pattern(base).items():
            async with IngestClient(stack.target("persistence"), PEERS[name]) as client:
                for raw, at in deliveries:
                    await client.send(raw, at)
                await client.flush(timeout=20)
        async with rpc.channel(stack.target("persistence")) as channel:  # the gateway's volume probe
            probe, _ = persistence_probe(persistence_pb2_grpc.PersistenceStub(channel))
            totals = await probe()
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(200):
                done = await conn.fetchval("SELECT extract(epoch FROM summarised_until) FROM observer_state")
                if done is not None and done * S > base + 300 * S:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("persistence's observer job did not fold the pattern's intervals")
        finally:
            await conn.close()
        report = json.loads(observe(stack, "--format", "json", "--intervals", "1,600").stdout)
        html_path, png_dir = short_tmp / "report.html", short_tmp / "png"
        await asyncio.to_thread(observe, stack, "--output", str(html_path), "--png-dir", str(png_dir))
    finally:
        stack.close()

    assert (totals["unique_messages"], totals["duplicate_deliveries"]) == (20, 37)
    assert report["window"]["summarised_until"] > base / S + 300  # read from the stored summaries
    total = report["total"]
    assert (total["messages"], total["deliveries"], total["duplicates"]) == (20, 57, 37)
    assert total["redundancy"] == {"2": 8, "3": 9, "4": 3}
    assert total["redundancy_mean"] == 2.75
    assert (total["t50_p50"], total["t50_p95"], total["t95_p50"], total["t95_p95"]) == (1.0, 1.0, 2.0, 5.0)
    assert (total["delay_p50"], total["delay_p95"]) == (1.0, 5.0)
    assert total["delay_mean"] == pytest.approx(65 / 35)
    assert report["by_kind"]["node_announcement"]["messages"] == 20
    peers = {p["peer_id"]: p for p in report["peers"]}
    expected = {"A": (1.0, 1.0, 1), "B": (1.0, 2.0, 2), "C": (0.5, 3.0, 3), "D": (0.25, 3.6, 4)}
    for name, (coverage, mean_rank, latency_rank) in expected.items():
        p = peers[PEERS[name]]
        assert (p["coverage"], p["mean_rank"], p["latency_rank"]) == (
            coverage,
            pytest.approx(mean_rank),
            latency_rank,
        )
    assert peers[PEERS["A"]]["first_share"] == 1.0 and peers[PEERS["B"]]["deliveries"] == 21
    assert sum(p.get("node_announcement", 0) for p in report["series"]) == 20
    # Reconciliation, 1-s rounds: A is always a second ahead of everyone else, so all 20 messages
    # are A's alone in their round; flooding cost each delivery its bytes plus BOLT 8 framing.
    size = len(pattern(0)["A"][0][0])
    links = {(r["peer_id"], r["interval"]): r for r in report["reconciliation"]["links"]}
    a = links[PEERS["A"], 1]
    assert (a["theirs_only"], a["ours_only"], a["common"]) == (20, 0, 0)
    assert a["transfer_bytes"] == 20 * (size + 34)
    assert links[PEERS["D"], 600]["flood_bytes"] == 5 * (size + 34)
    assert [r["interval"] for r in report["reconciliation"]["intervals"]] == [1, 600]

    page = html_path.read_text()
    assert "<script" not in page and not re.search(r'(src|href)="(https?:|//)', page)  # self-contained
    for name in ("volume", "redundancy", "propagation", "peers", "spammers", "reconciliation"):
        start = page.index(f'<figure id="chart-{name}">') + len(f'<figure id="chart-{name}">')
        svg = page[start : page.index("</svg>", start) + len("</svg>")]
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg") and len(list(root.iter())) > 20
        png = (png_dir / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    assert "Redundancy (mean 2.75 peers per message)" in page
