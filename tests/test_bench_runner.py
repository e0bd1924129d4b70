"""``make bench``'s runner: every bench still runs and every target gets its row.

The quick run proves nothing about performance (tiny scale, benches side by side); it exists so
that a bench whose options, output or JSON drifted fails here instead of in the next real run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run_all

ROOT = Path(__file__).resolve().parent.parent


def rows(lines: list[str]) -> dict[str, list[str]]:
    """The targets table's rows by measure: [measured, target, verdict]."""
    out = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "measure":
            out[cells[0]] = cells[1:]
    return out


def figures(ingest_ratio: float, full_p50: float) -> dict[str, dict[str, object]]:
    """What the benches' JSON files hold, with two figures chosen by the test."""
    delta = {"p50_seconds": 0.2, "lookup_cpu_seconds": 0.1, "bare_sql_seconds": 0.1, "v2_bytes": 3_583_480,
             "v2_gzip_bytes": 1_750_000}  # fmt: skip
    return {
        "gossip": {"ratio": 1.01, "rates": {"ours": 20_000, "reference": 19_800}},
        "ingest": {"rate": 26_000, "ratio": ingest_ratio, "rss_mb": 190.0, "messages": 10, "copy_rate": 1,
                   "cpu_us_per_msg": {"service": 1, "client": 1, "postgres": 1, "raw_copy": 1}},
        "downloader": {"rss_mb": 95.0, "messages": 1, "graph": "g", "rate": 1, "cpu_us_per_msg": 1,
                       "reference_us_per_msg": 1},
        "gateway": {"gateway": {"rps": 5000, "ratio": 0.6, "p99_ms": 21.0, "p99_ratio": 1.2},
                    "nginx": {"rps": 9000, "p99_ms": 1}, "blob_bytes": 1},
        "lookup": {"deltas": {"full": {**delta, "p50_seconds": full_p50}, "1 day": delta},
                   "ladder": {"seconds": 14.8, "cpu_seconds": 9.0, "blobs": 16},
                   "rss_mb": {"lookup": 581.0, "snapshotter": 159.0, "gateway": 120.0}, "channel_updates": 1},
    }  # fmt: skip


def test_table_says_met_or_by_how_much_a_target_is_missed() -> None:
    table = rows(run_all.table(figures(ingest_ratio=0.23, full_p50=2.1), {}))
    assert set(table) == {t.measure for t in run_all.TARGETS}
    assert table["ingest vs raw COPY"] == ["0.23x", "≥ 0.50x", "**missed** by 0.27x (-54%)"]
    assert table["full v2 delta via gRPC, p50"][2] == "met"
    assert table["RSS lookup"] == ["581 MB", "≤ 300 MB", "**missed** by 281 MB (+94%)"]
    assert table["full v2 snapshot size"] == ["3.58 MB", "reported", "1.09x the reference's 3.3 MB"]
    assert table["gateway vs nginx, req/s"] == ["0.60x", "≥ 0.90x", "**missed** by 0.30x (-33%)"]
    assert table["gateway p99 vs nginx's p99"] == ["1.20x", "≤ 1.50x", "met"]
    slow = rows(run_all.table(figures(ingest_ratio=0.5, full_p50=3.5), {}))
    assert slow["ingest vs raw COPY"][2] == "met"
    assert slow["full v2 delta via gRPC, p50"][2] == "**missed** by 0.50 s (+17%)"


def test_a_failed_bench_leaves_its_rows_in_the_table() -> None:
    results = figures(ingest_ratio=0.3, full_p50=1.0)
    del results["gateway"]
    table = rows(run_all.table(results, {"gateway": "exit 1"}))
    assert set(table) == {t.measure for t in run_all.TARGETS}
    assert table["gateway vs nginx, req/s"] == ["not measured", "≥ 0.90x", "bench_gateway: exit 1"]


def test_runner_knows_every_bench() -> None:
    on_disk = {p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py")}
    assert on_disk == set(run_all.BENCHES), "add the new bench to bench/run_all.py (BENCHES, bench_args)"


@pytest.mark.slow
def test_quick_run_of_every_bench_fills_every_row(tmp_path: Path) -> None:
    markdown = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--jobs", "7", "--markdown", str(markdown),
         "--results", str(tmp_path / "results")],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
        env={**os.environ, "BENCH_HISTORY_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    table = rows(markdown.read_text().splitlines())
    assert set(table) == {t.measure for t in run_all.TARGETS}
    for measure, (measured, _, verdict) in table.items():
        assert measured != "not measured", (measure, verdict)
        assert verdict, measure
