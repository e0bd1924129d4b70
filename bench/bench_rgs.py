"""The RGS core at mainnet scale, in memory: how long a full snapshot and deltas take to compute and
serialise, and how big they are.

    python -m bench.bench_rgs [--scale 1.0] [--days 14] [--repeats 5] [--ldk] [--json FILE]

The history is ``lnsync gen``'s (the real 2026-02-03 mainnet topology and policies: ~50.8k
channels, ~17.3k nodes, 14 days of updates) loaded into the in-memory store model. Each figure is
the median of ``--repeats`` runs of summarising the store for (T, R), running the delta engine and
encoding (targets: full v2 <= 1.5 s, one day <= 0.15 s, one core). With ``--ldk`` the real LDK
client's time to apply the full v2 snapshot is measured in the same run as a point of comparison.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

from bench import results
from bench.history import history as cached_history
from lnsync.chain import chain_hash
from lnsync.config import SnapshotterSettings
from lnsync.gen import DEFAULT_END_TIME
from lnsync.rgs import columnar, ladder, proof
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.model import DeltaParams

HOUR, DAY = 3600, 86400
REFERENCE_FULL_SIZE = 3.3e6  # LDK's published mainnet full snapshot, Aug 2024 (crate README)


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn`` (CPU time is reported separately: the machine may be shared)."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def median_cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return statistics.median(times)


def build(scale: float, days: float, seed: int) -> tuple[GossipHistory, dict[str, float]]:
    history = GossipHistory(chain_hash("bitcoin"))
    started = time.perf_counter()
    counts = {"messages": 0}
    for msg in cached_history(seed, scale, days):
        history.add_message(msg.raw, int(msg.received_at), funding_sats=msg.funding_sats)
        counts["messages"] += 1
    counts["load_seconds"] = time.perf_counter() - started
    counts["channel_updates"] = history.update_count
    counts["channels"] = len(history.channels)
    return history, counts


SAMPLES = SnapshotterSettings.model_fields["proof_samples"].default


def proof_figures(history: GossipHistory, R: int, repeats: int) -> dict[str, float]:
    """The snapshotter's proof of a generation (lnsync/rgs/proof.py) against its ladder, both in
    memory (the engine's part of each; SQL and gRPC excluded): the ladder is every scope of a
    24-hour interval plus the full snapshot, v1 and v2; the proof takes the live graph at R,
    proves both full blobs, the chain from the previous generation's full snapshot (R - interval)
    in v1 and v2 (from the client states its own proof kept, as the snapshotter does), and one
    sampled scope (the largest that starts within the history, the dearest) from a full v2 at its
    start, which lookup computes for it (counted in the proof, and reported apart)."""
    interval = DAY
    params = DeltaParams(apply_lag=interval)
    scopes = ladder.scopes(interval)
    mainnet = chain_hash("bitcoin")

    def make_ladder() -> dict[tuple[int, int], bytes]:
        blobs = {}
        for scope in (*scopes, ladder.FULL):
            delta = compute_delta(history.delta_input(max(R - scope, 0) if scope else 0, R), params)
            for version in (1, 2):
                blobs[(version, scope)] = encode(delta, version)
        return blobs

    ladder_seconds, made = median_seconds(make_ladder, repeats)
    blobs: dict[tuple[int, int], bytes] = made  # type: ignore[assignment]
    base_R = R - interval
    bases = {v: encode(compute_delta(history.delta_input(0, base_R), params), v) for v in (1, 2)}
    base_truth = history.delta_input(0, base_R)
    kept: dict[int, columnar.State] = {}  # what the previous generation's proof left
    for v in (1, 2):
        assert proof.prove_full(bases[v], proof.expect(base_truth, v), mainnet, base_R, v, keep=kept) is None
    # The sampled scope: the largest whose start R - S lies within the history, so that its base
    # is a whole graph (a larger one starts before the history: an empty base, a cheap check).
    sampled = max((s for s in scopes if len(history.delta_input(0, R - s).channels)), default=scopes[0])
    parts: dict[str, float] = {}

    def prove() -> None:
        started = time.perf_counter()
        truth = history.delta_input(0, R)  # the snapshotter reads it by SQL (truth.py)
        expected = {v: proof.expect(truth, v) for v in (1, 2)}
        parts["truth"] = time.perf_counter() - started
        states: dict[int, columnar.State] = {}
        for v in (1, 2):
            assert proof.prove_full(blobs[(v, ladder.FULL)], expected[v], mainnet, R, v, keep=states) is None
        parts["full"] = time.perf_counter() - started - parts["truth"]
        scope = ladder.choose(base_R, R, scopes).scope
        for v in (1, 2):
            failed = proof.prove_chain(
                bases[v], base_R, blobs[(v, scope)], expected[v], mainnet, R, v, base_state=kept[v]
            )
            assert failed is None, failed
        chained = time.perf_counter()
        parts["sample_base"] = 0.0
        for _ in range(SAMPLES):  # the snapshotter's default (snapshotter.proof_samples)
            base = encode(compute_delta(history.delta_input(0, R - sampled), params), 2)  # lookup's
            parts["sample_base"] += time.perf_counter() - chained
            failed = proof.prove_chain(base, R - sampled, blobs[(2, sampled)], expected[2], mainnet, R, 2)
            assert failed is None, failed
        parts["chain"] = time.perf_counter() - started - parts["truth"] - parts["full"] - parts["sample_base"]

    proof_seconds, _ = median_seconds(prove, repeats)
    timed = dict(parts)  # the last timed repeat's parts (the traced run below is slower)
    # What the proof allocates at its peak (NumPy's arrays and Python's objects; the model's
    # delta input, which the snapshotter reads by SQL instead, included), in one more run.
    tracemalloc.start()
    prove()
    peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return {
        "peak_mb": round(peak_mb, 1),
        "ladder_seconds": round(ladder_seconds, 3),
        "proof_seconds": round(proof_seconds, 3),
        "ratio": round(proof_seconds / ladder_seconds, 3),
        # Without the sampled scope's base (in memory, the model summarising a fresh R - S: it walks
        # every direction updated since in Python; lookup reads it by SQL instead).
        "ratio_without_sample_base": round((proof_seconds - timed["sample_base"]) / ladder_seconds, 3),
        "truth_seconds": round(timed["truth"], 3),
        "full_seconds": round(timed["full"], 3),
        "chain_seconds": round(timed["chain"], 3),
        "sample_base_seconds": round(timed["sample_base"], 3),
        "channels": len(history.delta_input(0, R).channels),
        "sampled_scope_days": sampled / DAY,
        "proof_samples": SAMPLES,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--days", type=float, default=14.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--ldk", action="store_true", help="also time the real LDK client applying the full snapshot"
    )
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON (- = stdout)")
    args = ap.parse_args(argv)

    print(f"building the history (scale {args.scale}, {args.days} days)...", file=sys.stderr)
    history, info = build(args.scale, args.days, args.seed)
    # The in-memory model holds ~1.7 M messages as Python objects, which only this bench does
    # (lookup reads columns from PostgreSQL): without this, the collector's full passes over them
    # land inside the timed deltas (0.6 s pauses seen in a profile) and measure the model, not the
    # engine.
    gc.collect()
    gc.freeze()
    R = DEFAULT_END_TIME
    params = DeltaParams(apply_lag=DAY)  # as the snapshotter serves them (24 h interval)
    rows = []
    for label, T in (("full", 0), ("1 week", R - 7 * DAY), ("1 day", R - DAY), ("3 hours", R - 3 * HOUR)):
        history.delta_input(T, R)  # warm the model's column cache (shared by every query)

        def run(T: int = T) -> tuple[bytes, bytes, object]:
            delta = compute_delta(history.delta_input(T, R), params)
            return encode(delta, 2), encode(delta, 1), delta

        seconds, result = median_seconds(run, args.repeats)
        v2, v1, delta = result  # type: ignore[misc]

        def v2_blob(T: int = T) -> bytes:
            return encode(compute_delta(history.delta_input(T, R), params), 2)

        v2_only, _ = median_seconds(v2_blob, args.repeats)
        v2_cpu = median_cpu_seconds(v2_blob, args.repeats)
        rows.append(
            {
                "delta": label,
                "v2_seconds": round(v2_only, 3),
                "v2_cpu_seconds": round(v2_cpu, 3),
                "v1_and_v2_seconds": round(seconds, 3),
                "v2_bytes": len(v2),
                "v2_gzip_bytes": len(gzip.compress(v2, 6)),
                "v1_bytes": len(v1),
                "announcements": len(delta.announcements),  # type: ignore[attr-defined]
                "updates": len(delta.updates),  # type: ignore[attr-defined]
                "reminders": delta.stats.reminders,  # type: ignore[attr-defined]
            }
        )
    out: dict[str, object] = {"history": info, "reference_time": R, "rows": rows}
    out["proof"] = proof_figures(history, R, args.repeats)
    if args.ldk:
        from tests.ldk import LdkRgsClient

        full = encode(compute_delta(history.delta_input(0, R), params), 2)
        with LdkRgsClient() as client, client.new_graph("bitcoin") as graph:
            result = graph.apply(full, now=R)
            out["ldk_apply_full_v2_ms"] = result.apply_ms
    print(f"history: {info}")
    print(
        "| delta | compute + v2 wall (s) | CPU (s) | v2 size | v2 gzip | v1 size | announcements "
        "| updates | reminders |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['delta']} | {r['v2_seconds']} | {r['v2_cpu_seconds']} | {r['v2_bytes']:,} | "
            f"{r['v2_gzip_bytes']:,} | "
            f"{r['v1_bytes']:,} | {r['announcements']:,} | {r['updates']:,} | {r['reminders']:,} |"
        )
    full_v2 = rows[0]["v2_bytes"]
    ref = REFERENCE_FULL_SIZE / 1e6
    print(f"full v2 = {full_v2 / 1e6:.2f} MB vs the reference server's {ref:.1f} MB (2024)")
    if "ldk_apply_full_v2_ms" in out:
        print(f"LDK (WASM) applies the full v2 snapshot in {out['ldk_apply_full_v2_ms']:.0f} ms")
    p = out["proof"]
    print(
        f"proof of a generation (in memory): {p['proof_seconds']} s against the ladder's "
        f"{p['ladder_seconds']} s ({p['ratio']:.2f}x; truth {p['truth_seconds']} s, full v1+v2 "
        f"{p['full_seconds']} s, chains {p['chain_seconds']} s + {p['proof_samples']} sampled base(s) "
        f"{p['sample_base_seconds']} s, over {p['channels']:,} channels; {p['peak_mb']} MB traced at "
        "its peak)"
    )  # type: ignore[index]
    results.write(args.json, {"scale": args.scale, "repeats": args.repeats, **out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
