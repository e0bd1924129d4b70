"""How the RGS engine's cost grows with the history (issue 26's growth curve), in memory.

    python -m bench.bench_growth [--points 0.3 1 3] [--repeats 3] [--json FILE] [--svg FILE] [--quick]

Three histories of ``lnsync gen`` (the real 2026-02-03 mainnet topology), each loaded into the
in-memory store model (:class:`lnsync.rgs.history.GossipHistory`), R = the end of the history:

* **0.3x**: scale 0.3, 14 days (0.3 of today's graph and of its updates);
* **1x**: scale 1, 14 days (today's mainnet: ~50k channels, ~1.5 M channel_updates);
* **3x**: three times the stored updates over a graph grown by half: scale 1 over 28 days (seed
  1) plus a second graph of half the size over the same 28 days (seed 2: other node ids and short
  channel ids; the two graphs share no node, which costs the engine nothing different).

For each: the full v2 delta and the 1-day delta (summarise the store, ``compute_delta``, encode
v2; median wall time), the 24-hour ladder (every scope and the full snapshot, v1 and v2) and the
proof of its generation (bench_rgs's figures: truth, full v1+v2 in columns, the previous
generation's chain, one sampled scope), and the memory a lookup holds for R on top of its baseline:
the traced peak (tracemalloc: NumPy's arrays and Python's objects) of reading the graph at R and
computing and encoding the full v2 delta. ``--svg`` draws time against stored updates (log-log),
with the line "linear from 1x" for reference.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import sys
import time
import tracemalloc
from collections.abc import Iterator

from bench import results
from bench.bench_rgs import median_seconds, proof_figures
from bench.history import history as cached_history
from lnsync.chain import chain_hash
from lnsync.gen import DEFAULT_END_TIME, GeneratedMessage
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.model import DeltaParams

DAY = 86400
# (label, multiple of today's history, histories merged: (seed, scale, days))
POINTS: dict[str, tuple[float, list[tuple[int, float, float]]]] = {
    "0.3": (0.3, [(1, 0.3, 14)]),
    "1": (1.0, [(1, 1.0, 14)]),
    "3": (3.0, [(1, 1.0, 28), (2, 0.5, 28)]),
}
# --quick: the same shapes at a hundredth of the size (figures then mean nothing).
QUICK: dict[str, tuple[float, list[tuple[int, float, float]]]] = {
    "0.3": (0.3, [(1, 0.003, 14)]),
    "1": (1.0, [(1, 0.01, 14)]),
    "3": (3.0, [(1, 0.01, 28), (2, 0.005, 28)]),
}


def messages(parts: list[tuple[int, float, float]]) -> Iterator[GeneratedMessage]:
    """The histories' messages merged in received-time order."""
    streams = [cached_history(seed, scale, days) for seed, scale, days in parts]
    return heapq.merge(*streams, key=lambda msg: msg.received_at)


def build(parts: list[tuple[int, float, float]]) -> tuple[GossipHistory, dict[str, float]]:
    history = GossipHistory(chain_hash("bitcoin"))
    started = time.perf_counter()
    count = 0
    for msg in messages(parts):
        history.add_message(msg.raw, int(msg.received_at), funding_sats=msg.funding_sats)
        count += 1
    return history, {
        "messages": count,
        "load_seconds": round(time.perf_counter() - started, 1),
        "channel_updates": history.update_count,
        "channels_announced": len(history.channels),
    }


def measure(parts: list[tuple[int, float, float]], repeats: int) -> dict[str, object]:
    history, info = build(parts)
    gc.collect()
    gc.freeze()  # the model's objects out of the collector's way (bench_rgs does the same)
    R = DEFAULT_END_TIME
    params = DeltaParams(apply_lag=DAY)
    out: dict[str, object] = dict(info)
    for label, T in (("full", 0), ("1 day", R - DAY)):
        history.delta_input(T, R)  # warm the model's column cache

        def v2(T: int = T) -> bytes:
            return encode(compute_delta(history.delta_input(T, R), params), 2)

        seconds, blob = median_seconds(v2, repeats)
        out[f"{label}_v2_seconds"] = round(seconds, 3)
        out[f"{label}_v2_bytes"] = len(blob)  # type: ignore[arg-type]
    p = proof_figures(history, R, repeats)
    out["ladder_seconds"], out["proof_seconds"], out["proof_ratio"] = (
        p["ladder_seconds"], p["proof_seconds"], p["ratio"],
    )  # fmt: skip
    out["proof_sample_base_seconds"], out["proof_peak_mb"] = p["sample_base_seconds"], p["peak_mb"]
    out["proof_ratio_without_sample_base"] = p["ratio_without_sample_base"]
    out["ladder_with_proof_seconds"] = round(p["ladder_seconds"] + p["proof_seconds"], 3)
    out["channels_live"] = p["channels"]
    tracemalloc.start()
    inp = history.delta_input(0, R)
    encode(compute_delta(inp, params), 2)
    out["lookup_working_set_mb"] = round(tracemalloc.get_traced_memory()[1] / 1e6, 1)
    tracemalloc.stop()
    gc.unfreeze()  # the model goes once measure() returns
    return out


def svg_chart(rows: list[dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = [float(r["channel_updates"]) for r in rows]  # type: ignore[arg-type]
    one = next((r for r in rows if r["point"] == "1"), rows[0])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label in (
        ("full_v2_seconds", "full v2 delta"),
        ("1 day_v2_seconds", "1-day delta"),
        ("ladder_seconds", "ladder (24 h interval, v1+v2)"),
        ("ladder_with_proof_seconds", "ladder + proof"),
    ):
        ys = [float(r[key]) for r in rows]  # type: ignore[arg-type]
        (line,) = ax.plot(updates, ys, marker="o", label=label)
        base_u, base_y = float(one["channel_updates"]), float(one[key])  # type: ignore[arg-type]
        ax.plot(updates, [base_y * u / base_u for u in updates], linestyle=":", color=line.get_color())
    ax.axhline(1.5, color="grey", linewidth=0.8)
    ax.annotate("full v2 target at 3x: 1.5 s", (updates[0], 1.5), fontsize=8, va="bottom", color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("stored channel_updates")
    ax.set_ylabel("seconds (one core, in memory)")
    ax.set_title("RGS engine cost vs history (dotted: linear from 1x)")
    for r, u in zip(rows, updates, strict=True):
        y = float(r["ladder_with_proof_seconds"])  # type: ignore[arg-type]
        ax.annotate(f"{r['point']}x", (u, y), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a hundredth of each size (runner smoke test)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON (- = stdout)")
    ap.add_argument("--svg", metavar="FILE", help="draw the growth chart (matplotlib)")
    args = ap.parse_args(argv)
    table = QUICK if args.quick else POINTS
    rows = []
    for point in args.points:
        multiple, parts = table[point]
        print(f"building the {point}x history {parts}...", file=sys.stderr, flush=True)
        row = {"point": point, "multiple": multiple, **measure(parts, args.repeats)}
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    one = next((r for r in rows if r["point"] == "1"), None)
    print(
        "| history | stored channel_updates | channels live | full v2 | 1-day delta | ladder | proof "
        "| ladder + proof | lookup working set |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['point']}x | {r['channel_updates']:,} | {r['channels_live']:,} "
            f"| {r['full_v2_seconds']} s | {r['1 day_v2_seconds']} s | {r['ladder_seconds']} s "
            f"| {r['proof_seconds']} s ({r['proof_ratio']:.2f}x) | {r['ladder_with_proof_seconds']} s "
            f"| {r['lookup_working_set_mb']} MB |"
        )
    growth: dict[str, dict[str, float]] = {}
    if one is not None:
        for r in rows:
            u = r["channel_updates"] / one["channel_updates"]  # type: ignore[operator]
            growth[str(r["point"])] = {
                key: round(r[key] / one[key] / u, 2)  # type: ignore[operator]
                for key in ("full_v2_seconds", "1 day_v2_seconds", "ladder_with_proof_seconds")
            }
        print("time per stored update, relative to 1x (≤ 1: no worse than linear):", growth)
    if args.svg and len(rows) > 1:
        svg_chart(rows, args.svg)
    results.write(args.json, {"repeats": args.repeats, "quick": args.quick, "rows": rows, "growth": growth})
    return 0


if __name__ == "__main__":
    sys.exit(main())
