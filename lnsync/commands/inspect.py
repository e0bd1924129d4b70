"""Decode an RGS blob and describe it: version, chain, timestamp, counts, defaults and, with
--records, every node, announcement and update. What an operator uses to debug a blob."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lnsync.chain import network_of
from lnsync.gossip.scid import scid_str
from lnsync.rgs.decode import DecodedBlob, RgsDecodeError, decode

FIELD_NAMES = (
    "cltv_expiry_delta",
    "htlc_minimum_msat",
    "fee_base_msat",
    "fee_proportional_millionths",
    "htlc_maximum_msat",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the blob to inspect ('-' reads standard input)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--records", action="store_true", help="include every node, announcement and update")


def describe(blob: DecodedBlob, size: int, records: bool) -> dict[str, Any]:
    updates = blob.updates
    out: dict[str, Any] = {
        "version": blob.version,
        "size": size,
        "chain_hash": blob.chain_hash.hex(),
        "network": network_of(blob.chain_hash) or "unknown",
        "timestamp": blob.timestamp,
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(blob.timestamp)),
        "nodes": len(blob.nodes),
        "nodes_with_details": sum(
            1 for n in blob.nodes if n.addresses is not None or n.features is not None or n.reminder
        ),
        "announcements": len(blob.announcements),
        "announcements_with_funding": sum(1 for a in blob.announcements if a.funding_sats is not None),
        "updates": len(updates),
        "full_updates": sum(1 for u in updates if u.extra is None and not u.incremental),
        "incremental_updates": sum(1 for u in updates if u.incremental and not u.reminder),
        "reminders": sum(1 for u in updates if u.reminder and u.extra is None),
        "defaults": dict(zip(FIELD_NAMES, blob.defaults, strict=True)) if blob.defaults else None,
        "default_node_features": [x.hex() for x in blob.default_node_features],
        "trailing_bytes": blob.trailing_bytes,
    }
    if records:
        out["node_records"] = [
            {
                "node_id": n.node_id.hex(),
                "addresses": None if n.addresses is None else [a.hex() for a in n.addresses],
                "features": None if n.features is None else n.features.hex(),
                "reminder": n.reminder,
            }
            for n in blob.nodes
        ]
        out["announcement_records"] = [
            {
                "scid": str(a.scid),
                "scid_bxtxo": scid_str(a.scid),
                "features": a.features.hex(),
                "node_1": blob.nodes[a.node_1].node_id.hex(),
                "node_2": blob.nodes[a.node_2].node_id.hex(),
                "funding_sats": a.funding_sats,
            }
            for a in blob.announcements
        ]
        out["update_records"] = [
            {
                "scid": str(u.scid),
                "scid_bxtxo": scid_str(u.scid),
                "direction": u.direction,
                "kind": "extra"
                if u.extra is not None
                else ("reminder" if u.reminder else "incremental" if u.incremental else "full"),
                "disabled": u.disabled,
                **{
                    name: value
                    for name, value in zip(
                        FIELD_NAMES,
                        blob.full_values(u) if not u.incremental and u.extra is None else u.values,
                        strict=True,
                    )
                    if value is not None
                },
            }
            for u in updates
        ]
    return out


def _text(d: dict[str, Any]) -> str:
    lines = [
        f"RGS v{d['version']}, {d['size']} bytes, {d['network']} ({d['chain_hash'][:16]}...)",
        f"timestamp      {d['timestamp']} ({d['timestamp_utc']})",
        f"nodes          {d['nodes']} ({d['nodes_with_details']} with details)",
        f"announcements  {d['announcements']} ({d['announcements_with_funding']} with funding amount)",
        f"updates        {d['updates']}: {d['full_updates']} full, {d['incremental_updates']} incremental, "
        f"{d['reminders']} reminders",
    ]
    if d["defaults"]:
        lines.append("defaults       " + ", ".join(f"{k}={v}" for k, v in d["defaults"].items()))
    if d["default_node_features"]:
        lines.append("node features  " + ", ".join(d["default_node_features"]))
    if d["trailing_bytes"]:
        lines.append(f"trailing bytes {d['trailing_bytes']} (ignored by clients)")
    for rec in d.get("announcement_records", []):
        nodes = f"{rec['node_1'][:16]}.. {rec['node_2'][:16]}.."
        lines.append(f"ann  {rec['scid_bxtxo']:<20} {nodes} funding={rec['funding_sats']}")
    for rec in d.get("update_records", []):
        fields = " ".join(f"{k}={rec[k]}" for k in FIELD_NAMES if k in rec)
        head = f"upd  {rec['scid_bxtxo']:<20} dir={rec['direction']} {rec['kind']:<11}"
        lines.append(f"{head} disabled={rec['disabled']} {fields}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"lnsync inspect: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        blob = decode(data)
    except RgsDecodeError as exc:
        print(f"lnsync inspect: not a valid RGS blob: {exc} [{exc.kind}]", file=sys.stderr)
        return 1
    d = describe(blob, len(data), args.records)
    print(json.dumps(d, indent=2) if args.json else _text(d))
    return 0
