"""channel_updates parsed + validated + signature-verified per second on one core, against raw
coincurve verification of the same signatures in the same run.

Reference: ``coincurve.PublicKey(pub).verify(der_sig, digest, hasher=None)`` with the DER
signatures and digests built beforehand, i.e. the bare cost of libsecp256k1 through coincurve's
public API. Ours: :meth:`GossipValidator.channel_update` on the raw wire bytes (decode, chain and
field checks, double-SHA256, key lookup, verification), and the batch call ``validate_many``.
For scale, "floor" is ``secp256k1_ecdsa_verify`` alone on pre-parsed keys and signatures: no
Python-side work at all, which no real code path can beat.
Repeats alternate reference and ours so that machine noise hits both; we report medians and the
median of the per-repeat ratios. Data: the 1,868 re-signed real-topology updates in data/.

    python -m bench.bench_gossip [--repeats 9] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import coincurve
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from coincurve.ecdsa import cdata_to_der, deserialize_compact

from bench import results
from lnsync.chain import chain_hash
from lnsync.gossip import messages as m
from lnsync.gossip.signing import sha256d
from lnsync.gossip.validate import GossipValidator

DATA = Path(__file__).resolve().parent.parent / "data" / "cln2026_top50_resigned_mainnet.bin"


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">H", data, pos)
        out.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return out


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the updates per measurement")
    parser.add_argument("--json", metavar="FILE", help="also write the key figures as JSON (- = stdout)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    raws = _records(DATA)
    validator = GossipValidator(chain_hash("bitcoin"))
    updates = []
    for raw in raws:
        if raw[:2] == b"\x01\x00":
            validator.channel_announcement(raw)
        elif raw[:2] == b"\x01\x02":
            updates.append(raw)
    reference_inputs = []
    for raw in updates:
        u = m.decode_channel_update(raw)
        node_ids = validator.node_ids(u.short_channel_id)
        assert node_ids is not None
        der = cdata_to_der(deserialize_compact(u.signature))
        reference_inputs.append((node_ids[u.direction], der, sha256d(u.signed_part)))
    work = updates * args.rounds
    reference_work = reference_inputs * args.rounds
    ctx = GLOBAL_CONTEXT.ctx
    floor_work = []
    for pub, der, digest in reference_inputs:
        key = ffi.new("secp256k1_pubkey *")
        sig = ffi.new("secp256k1_ecdsa_signature *")
        lib.secp256k1_ec_pubkey_parse(ctx, key, pub, 33)
        lib.secp256k1_ecdsa_signature_parse_der(ctx, sig, der, len(der))
        floor_work.append((sig, digest, key))
    floor_work *= args.rounds

    def floor() -> None:
        verify = lib.secp256k1_ecdsa_verify
        for sig, digest, key in floor_work:
            verify(ctx, sig, digest, key)

    def reference() -> None:
        for pub, der, digest in reference_work:
            if not coincurve.PublicKey(pub).verify(der, digest, hasher=None):
                raise AssertionError("reference verification failed")

    def ours() -> None:
        check = validator.channel_update
        for raw in work:
            check(raw)

    def ours_batch() -> None:
        results = validator.validate_many(work)
        if not isinstance(results[-1], m.ChannelUpdate):
            raise AssertionError(results[-1])

    ours()  # warm the key cache, as a running downloader would have it
    n = len(work)
    rates: dict[str, list[float]] = {"reference": [], "ours": [], "ours_batch": [], "floor": []}
    ratios: dict[str, list[float]] = {"ours": [], "ours_batch": [], "floor": []}
    for _ in range(args.repeats):
        ref_rate = n / _timed(reference)
        rates["reference"].append(ref_rate)
        for name, fn in (("ours", ours), ("ours_batch", ours_batch), ("floor", floor)):
            rate = n / _timed(fn)
            rates[name].append(rate)
            ratios[name].append(rate / ref_rate)

    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, pinned to one;"
    )
    print(
        f"load average {os.getloadavg()[0]:.2f}; "
        f"{len(updates)} updates x {args.rounds} rounds, {args.repeats} repeats"
    )
    print(f"{'':24}{'median /s':>12}{'min /s':>10}{'max /s':>10}{'ratio':>8}")
    for name, label in (
        ("reference", "coincurve verify"),
        ("ours", "channel_update()"),
        ("ours_batch", "validate_many()"),
        ("floor", "floor (bare verify)"),
    ):
        ratio = f"{statistics.median(ratios[name]):.2f}x" if name in ratios else "1.00x"
        values = rates[name]
        print(
            f"{label:24}{statistics.median(values):>12,.0f}{min(values):>10,.0f}{max(values):>10,.0f}{ratio:>8}"
        )
    sys.stdout.flush()
    results.write(
        args.json,
        {
            "updates": len(work),
            "repeats": args.repeats,
            "rates": {k: round(statistics.median(v)) for k, v in rates.items()},
            "ratio": round(statistics.median(ratios["ours"]), 3),
            "ratio_batch": round(statistics.median(ratios["ours_batch"]), 3),
            "ratio_floor": round(statistics.median(ratios["floor"]), 3),
        },
    )


if __name__ == "__main__":
    main()
