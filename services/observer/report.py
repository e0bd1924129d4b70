"""The observer report's figures for a window, gathered from PostgreSQL.

The window ``[start, now)`` starts on an interval boundary. Intervals the aggregation job has
folded (before ``observer_state.summarised_until``) come from the stored summaries; the rest from
the raw rows, summarised the same way on the fly. Both add up exactly (integer sums and
histograms), so a report does not change when the job folds intervals and retention prunes their
raw rows.
"""

from __future__ import annotations

import math
from typing import Any

from services.observer import outliers, queries, recon, stats

DEFAULT_INTERVAL = 3600  # bins of the volume series when the job is disabled
DEFAULT_MODEL = recon.SketchModel()


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``24h``, ``7d`` (or plain seconds) as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip().lower()
    scale = units.get(text[-1:], 0)
    number = text[:-1] if scale else text
    if not number.isdigit() or int(number) <= 0:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 15m, 24h, 7d)")
    return int(number) * (scale or 1)


async def gather(
    conn: Any,
    *,
    now: float,
    since: int,
    interval: int,
    max_delay: int,
    top: int = 10,
    reconcile_intervals: tuple[int, ...] = recon.DEFAULT_INTERVALS,
) -> dict[str, Any]:
    """Every figure of the report, as plain JSON-able data."""
    step = interval or DEFAULT_INTERVAL
    start = int(now - since) // step * step
    done = await queries.summarised_until(conn) if interval else None
    edge = start if done is None else min(max(int(done), start), int(now))
    kinds, peers = await queries.load_summaries(conn, start, edge)
    async with conn.transaction():
        raw_kinds, raw_peers = await queries.summarise_range(
            conn, edge, now, interval=step, max_delay=max_delay
        )
    kinds.update(raw_kinds)
    peers.update(raw_peers)
    names = await queries.peer_names(conn)
    top_lists = await queries.top_updaters(conn, start, now, top)
    data = build(
        kinds, peers, names, top_lists, start=start, end=now, step=step, max_delay=max_delay, edge=edge
    )
    data["reconciliation"] = await reconciliation(conn, start, now, reconcile_intervals, names)
    window = outliers.Window(start, now, step)
    flags = [
        *await queries.rate_jumps(conn, window),
        *await queries.new_node_bursts(conn, window),
        *outliers.peer_flags(kinds, peers, names),
    ]
    data["outliers"] = build_outliers(flags)
    data["peer_sets"] = {"epochs": await queries.peer_set_epochs(conn, start, now)}
    return data


def build_outliers(flags: list[outliers.Flag]) -> dict[str, Any]:
    return {
        "history_seconds": outliers.HISTORY,
        "alpha": outliers.ALPHA,
        "z_limit": outliers.Z_LIMIT,
        "flags": outliers.as_json(flags),
    }


async def reconciliation(
    conn: Any, start: float, end: float, intervals: tuple[int, ...], names: dict[int, str]
) -> dict[str, Any]:
    """The set-reconciliation estimate over the part of ``[start, end)`` whose raw deliveries are
    still kept (summaries do not hold what it needs)."""
    oldest = await queries.oldest_delivery(conn)
    lo = max(start, oldest) if oldest is not None else end
    async with conn.transaction():
        links, floods = await queries.reconciliation(conn, lo, end, intervals)
    return build_reconciliation(links, floods, names, intervals=intervals, start=lo, end=end)


def build_reconciliation(
    links: recon.Links,
    floods: dict[int, recon.FloodTally],
    names: dict[int, str],
    *,
    intervals: tuple[int, ...],
    start: float,
    end: float,
    model: recon.SketchModel = DEFAULT_MODEL,
) -> dict[str, Any]:
    table = recon.figures(links, floods, intervals, model)
    rows: list[dict[str, Any]] = []
    for row in table["links"]:
        num = int(row.pop("peer") or 0)
        rows.append({"peer_id": names.get(num, str(num)), **row})
    table["links"] = rows
    return {
        "window": {"start": start, "end": end, "seconds": end - start},
        "model": {
            "short_id_bits": model.short_id_bits,
            "capacity_margin": model.capacity_margin,
            "frame_bytes": recon.FRAME_BYTES,
            "round_header_bytes": recon.ROUND_MESSAGES * recon.MESSAGE_HEADER_BYTES,
        },
        **table,
    }


def build(
    kinds: stats.Kinds,
    peers: stats.Peers,
    names: dict[int, str],
    top: dict[str, Any],
    *,
    start: float,
    end: float,
    step: int,
    max_delay: int,
    edge: float,
) -> dict[str, Any]:
    seconds = end - start
    total = stats.merge_kinds(kinds, by_kind=False).get(0, stats.KindSummary())
    by_kind = stats.merge_kinds(kinds)
    series: dict[int, dict[str, int]] = {}
    for (interval_start, kind), s in sorted(kinds.items()):
        point = series.setdefault(interval_start, {"deliveries": 0})
        point["deliveries"] += s.deliveries
        point[stats.KINDS.get(kind, str(kind))] = s.messages
    peer_rows = [
        {
            "peer_id": names.get(f.peer, str(f.peer)),
            **{k: _finite(v) for k, v in vars(f).items() if k != "peer"},
        }
        for f in stats.peer_figures(stats.merge_peers(peers), total.messages)
    ]
    return {
        "window": {
            "start": start,
            "end": end,
            "seconds": seconds,
            "interval": step,
            "max_delay": max_delay,
            "summarised_until": edge,
        },
        "total": stats.kind_figures(total, seconds),
        "by_kind": {
            stats.KINDS.get(k, str(k)): stats.kind_figures(s, seconds) for k, s in sorted(by_kind.items())
        },
        "histograms": {
            "edges_seconds": [e / stats.US for e in stats.DELAY_EDGES_US],
            "t50": total.t50_hist,
            "t95": total.t95_hist,
            "delay": total.delay_hist,
        },
        "peers": peer_rows,
        "series": [{"start": t, **point} for t, point in sorted(series.items())],
        "top": top,
    }


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
