"""The observer report as JSON, CSV or one self-contained HTML page with inline SVG charts.

Charts are drawn with matplotlib (Agg backend, no display needed) and embedded as SVG text, so
the page needs no network, no scripts and no files beside it. :func:`charts` returns each chart's
figure so callers can also save PNGs (``lnsync observe report --png-dir``). matplotlib is the
``[report]`` extra, imported only by the charts (:func:`pyplot`); JSON and CSV do without it.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from lnsync.extras import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KIND_ORDER = ("channel_update", "channel_announcement", "node_announcement")
COLORS = {"channel_update": "#2b6cb0", "channel_announcement": "#c05621", "node_announcement": "#2f855a"}


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, or MissingExtraError naming the ``[report]`` extra."""
    matplotlib = require("matplotlib", "the observer report's charts (HTML page, --png-dir)")
    matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
    return require("matplotlib.pyplot", "the observer report's charts (HTML page, --png-dir)")


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flatten(f"{prefix}[{i}]", v)
    else:
        yield prefix, value


def to_csv(report: dict[str, Any]) -> str:
    """One ``key,value`` row per figure (``by_kind.channel_update.t50_p50``, ``peers[0].coverage``)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("key", "value"))
    for key, value in _flatten("", report):
        w.writerow((key, "" if value is None else value))
    return out.getvalue()


def _bin_labels(edges: list[float]) -> list[str]:
    def fmt(s: float) -> str:
        if s == 0:
            return "0"
        if s < 1:
            return f"{s * 1000:g}ms"
        if s < 120:
            return f"{s:g}s"
        if s < 7200:
            return f"{s / 60:g}m"
        return f"{s / 3600:g}h"

    return [f"≤{fmt(e)}" for e in edges] + [f">{fmt(edges[-1])}"]


def _used(hists: list[list[int]]) -> slice:
    """The bins from the first to the last that holds anything (all of them if none do)."""
    nonzero = [i for h in hists for i, v in enumerate(h) if v]
    return slice(min(nonzero), max(nonzero) + 1) if nonzero else slice(0, len(hists[0]))


def charts(report: dict[str, Any]) -> dict[str, tuple[str, Figure]]:
    """name -> (caption, figure) for every chart of the report."""
    plt = pyplot()
    out: dict[str, tuple[str, Figure]] = {}

    fig, ax = plt.subplots(figsize=(9, 3.2))
    series = report["series"]
    times = [p["start"] / 86400 for p in series]  # matplotlib date numbers: days since 1970
    width = report["window"]["interval"] / 86400 * 0.9  # date numbers count days
    bottom = [0] * len(series)
    for kind in KIND_ORDER:
        values = [p.get(kind, 0) for p in series]
        ax.bar(
            times,
            values,
            width=width,
            bottom=bottom,
            label=f"{kind} (unique)",
            color=COLORS[kind],
            align="edge",
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.step(
        times, [p["deliveries"] for p in series], where="post", color="black", label="deliveries (all peers)"
    )
    ax.xaxis_date()
    ax.set_ylabel("messages per interval")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.figure.autofmt_xdate()
    out["volume"] = (
        "Gossip volume: unique messages by kind (bars) and all deliveries (line), per interval.",
        fig,
    )

    fig, ax = plt.subplots(figsize=(6, 3.2))
    redundancy = report["total"]["redundancy"]
    ks = sorted(int(k) for k in redundancy)
    ax.bar([str(k) for k in ks], [redundancy[str(k)] for k in ks], color="#4a5568")
    ax.set_xlabel("peers that delivered the message (within max_delay)")
    ax.set_ylabel("messages")
    mean = report["total"]["redundancy_mean"]
    ax.set_title(f"Redundancy (mean {mean:.2f} peers per message)" if mean else "Redundancy")
    out["redundancy"] = ("How many peers delivered each unique message.", fig)

    h = report["histograms"]
    labels = _bin_labels(h["edges_seconds"])
    used = _used([h["t50"], h["t95"]])
    fig, ax = plt.subplots(figsize=(9, 3.2))
    x = list(range(len(labels)))[used]
    ax.bar([i - 0.2 for i in x], h["t50"][used], width=0.4, label="t50: 50 % of its peers", color="#3182ce")
    ax.bar([i + 0.2 for i in x], h["t95"][used], width=0.4, label="t95: 95 % of its peers", color="#e53e3e")
    ax.set_xticks(x, labels[used], rotation=45, fontsize=8)
    ax.set_ylabel("messages")
    ax.set_title("Propagation: time from first arrival until 50 % / 95 % of the peers had delivered it")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out["propagation"] = (
        "Per-message propagation time, binned (messages delivered by two or more peers).",
        fig,
    )

    peers = report["peers"]
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.35 * len(peers) + 1)))
    names = [_short(p["peer_id"]) for p in peers]
    ax.barh(names, [p["coverage"] * 100 for p in peers], color="#38a169")
    for i, p in enumerate(peers):
        rank = p["mean_rank"]
        ax.text(1, i, f" mean rank {rank:.2f}" if rank is not None else "", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("coverage: % of unique messages delivered (fastest peer on top)")
    fig.tight_layout()
    out["peers"] = ("Per-peer coverage, ordered by latency rank (mean arrival rank).", fig)

    top = report["top"]["channels"]
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.35 * len(top) + 1)))
    ax.barh([c["scid"] for c in top], [c["updates"] for c in top], color="#805ad5")
    ax.invert_yaxis()
    ax.set_xlabel("channel_updates stored in the window")
    ax.set_title("Most frequently updated channels")
    fig.tight_layout()
    out["spammers"] = ("Channels with the most channel_updates in the window.", fig)
    out["reconciliation"] = _reconciliation_chart(report["reconciliation"])
    return out


RECON_PARTS = (("transfer_bytes", "messages we lacked", "#2b6cb0"),
               ("sketch_bytes", "sketches", "#dd6b20"),
               ("id_bytes", "short ids", "#d69e2e"),
               ("header_bytes", "round headers", "#a0aec0"))  # fmt: skip


def _reconciliation_chart(rec: dict[str, Any]) -> tuple[str, Figure]:
    """Flooding vs reconciliation bytes per interval (all observed links), and the delay cost."""
    rows = rec["intervals"]
    labels = [_seconds(r["interval"]) for r in rows]
    x = list(range(len(rows)))
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    mb = 1e6
    left.bar([i - 0.2 for i in x], [r["flood_bytes"] / mb for r in rows], width=0.4, color="#4a5568",
             label="flooding (every delivery)")  # fmt: skip
    bottom = [0.0] * len(rows)
    for key, label, color in RECON_PARTS:
        values = [r[key] / mb for r in rows]
        left.bar([i + 0.2 for i in x], values, width=0.4, bottom=bottom, color=color, label=f"recon: {label}")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, r in enumerate(rows):
        if r["saving"] is not None:
            saving = r["saving"] * 100
            text = f"-{saving:.0f} %" if saving >= 0 else f"+{-saving:.0f} %"
            left.text(i + 0.2, bottom[i], text, ha="center", va="bottom", fontsize=8)
    left.set_xticks(x, labels)
    left.set_xlabel("reconciliation interval")
    left.set_ylabel("MB received from observed peers")
    left.set_title("Bandwidth: flooding vs reconciliation (change above)", fontsize=10)
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    means = [r["delay_mean"] or 0 for r in rows]
    worst = [r["delay_max"] or 0 for r in rows]
    right.bar([i - 0.2 for i in x], means, width=0.4, color="#3182ce", label="mean per hop")
    right.bar([i + 0.2 for i in x], worst, width=0.4, color="#e53e3e", label="worst per hop")
    right.set_yscale("symlog", linthresh=1)
    right.set_xticks(x, labels)
    right.set_xlabel("reconciliation interval")
    right.set_ylabel("extra delay (s)")
    right.set_title("Delay cost of each hop", fontsize=10)
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    return (
        "Set reconciliation: bytes the observed peers' flooding cost us against an Erlay-like estimate "
        "per interval (left), and the delay it adds per hop (right); see docs/observer.md.",
        fig,
    )


def _seconds(s: float) -> str:
    return f"{s / 3600:g} h" if s >= 3600 else f"{s / 60:g} min" if s >= 60 else f"{s:g} s"


def _short(peer_id: str) -> str:
    return peer_id if len(peer_id) <= 20 else f"{peer_id[:8]}…{peer_id[-8:]}"


def svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline SVG in HTML


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return html.escape(str(v))


RECON_COLUMNS = ("flood_bytes", "recon_bytes", "saving", "sketch_bytes", "transfer_bytes", "rounds",
                 "ours_only", "theirs_only", "common", "delay_mean", "delay_max")  # fmt: skip


def _savings_by_peer(rec: dict[str, Any]) -> str:
    """One row per observed peer, one column per interval: its link's saving."""
    intervals = [r["interval"] for r in rec["intervals"]]
    savings: dict[str, dict[int, Any]] = {}
    for row in rec["links"]:
        savings.setdefault(row["peer_id"], {})[row["interval"]] = row["saving"]
    head = "".join(f"<th>{_seconds(i)}</th>" for i in intervals)
    body = "".join(
        f"<tr><th>{html.escape(_short(peer))}</th>"
        + "".join(f"<td>{_fmt(by.get(i))}</td>" for i in intervals)
        + "</tr>"
        for peer, by in savings.items()
    )
    return f"<table><tr><th>peer</th>{head}</tr>{body}</table>"


def _outliers_html(flags: list[dict[str, Any]]) -> str:
    """The flags as a table, each linking to a table of the rows behind it."""
    if not flags:
        return "<p>No outliers in this window.</p>"
    head = (
        "<tr><th>flag</th><th>category</th><th>subject</th><th>score</th><th>what</th><th>interval</th></tr>"
    )
    lines = "".join(
        f'<tr><th><a href="#flag-{f["id"]}">#{f["id"]}</a></th><td>{html.escape(f["category"])}</td>'
        f"<td>{html.escape(_short(f['subject']))}</td><td>{_fmt(f['score'])}</td>"
        f"<td>{html.escape(f['summary'])}</td><td>{_fmt(_time_cell('seen', f['bucket']))}</td></tr>"
        for f in flags
    )
    details = []
    for f in flags:
        columns = list(f["rows"][0]) if f["rows"] else []
        body = "".join(
            "<tr>" + "".join(f"<td>{_fmt(_time_cell(c, r[c]))}</td>" for c in columns) + "</tr>"
            for r in f["rows"]
        )
        details.append(
            f'<section id="flag-{f["id"]}"><h3>#{f["id"]} {html.escape(f["category"])}: '
            f"{html.escape(f['subject'])}</h3><table><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            + f"</tr>{body}</table></section>"
        )
    return f"<table>{head}{lines}</table>{''.join(details)}"


def _peer_sets_html(epochs: list[dict[str, Any]]) -> str:
    """One row per random peer-set epoch in the window."""
    if not epochs:
        return "<p>No random peer sets in this window (observer.random_peers is 0).</p>"
    columns = ("epoch", "started", "peers", "deliveries", "messages", "rows ended as")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    body = "".join(
        f"<tr><th>{e['epoch']}</th><td>{_fmt(_time_cell('seen', e['started']))}</td><td>{e['peers']}</td>"
        f"<td>{e['deliveries']}</td><td>{e['messages']}</td><td>"
        + html.escape(", ".join(f"{k} {v}" for k, v in sorted(e["outcomes"].items())))
        + "</td></tr>"
        for e in epochs
    )
    return f"<table>{head}{body}</table>"


def _time_cell(column: str, value: Any) -> Any:
    """Times (seconds since the epoch) of the flag tables as UTC date and time."""
    if column in TIME_COLUMNS and value is not None:
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return value


TIME_COLUMNS = frozenset({"seen", "first_seen", "interval_start"})


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


def to_html(report: dict[str, Any], figures: dict[str, tuple[str, Figure]] | None = None) -> str:
    figures = figures if figures is not None else charts(report)
    w = report["window"]
    start, end = _when(w["start"]), _when(w["end"])
    columns = ("messages", "deliveries", "duplicates", "messages_per_second", "redundancy_mean",
               "t50_p50", "t50_p95", "t95_p50", "t95_p95", "delay_p50", "delay_p95")  # fmt: skip
    rows = [("all kinds", report["total"]), *report["by_kind"].items()]
    table = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_fmt(f[c])}</td>" for c in columns) + "</tr>"
        for name, f in rows
    )
    peer_columns = (
        "latency_rank",
        "coverage",
        "first_share",
        "mean_rank",
        "mean_delay",
        "messages",
        "deliveries",
    )
    peer_table = "".join(
        f"<tr><th>{html.escape(p['peer_id'])}</th>" + "".join(f"<td>{_fmt(p[c])}</td>" for c in peer_columns)
        + "</tr>"
        for p in report["peers"]
    )  # fmt: skip
    out = report["outliers"]
    rec = report["reconciliation"]
    recon_table = "".join(
        f"<tr><th>{_seconds(r['interval'])}</th>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in RECON_COLUMNS)
        + "</tr>"
        for r in rec["intervals"]
    )  # fmt: skip
    sections = "".join(
        f'<figure id="chart-{name}">{svg(fig)}<figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, (caption, fig) in figures.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lnsync gossip observer report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #1a202c; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }}
th, td {{ border: 1px solid #cbd5e0; padding: 0.25em 0.5em; text-align: right; }}
th {{ text-align: left; background: #f7fafc; }}
figure {{ margin: 1.5em 0; }} figure svg {{ max-width: 100%; height: auto; }}
figcaption {{ color: #4a5568; font-size: 0.9em; }}
</style></head><body>
<h1>Gossip observer report</h1>
<p>Window {start} to {end} UTC ({w["seconds"] / 3600:.1f} h), intervals of {w["interval"]} s;
arrivals more than {w["max_delay"]} s after a message's first arrival count as late.
Delays in seconds; percentiles are nearest-rank upper bin edges.</p>
<h2>Messages and propagation</h2>
<table><tr><th></th>{"".join(f"<th>{c}</th>" for c in columns)}</tr>{table}</table>
<h2>Peers</h2>
<table><tr><th>peer</th>{"".join(f"<th>{c}</th>" for c in peer_columns)}</tr>{peer_table}</table>
<h2>Set reconciliation vs flooding</h2>
<p>From the raw deliveries of {_when(rec["window"]["start"])} to {_when(rec["window"]["end"])} UTC;
bytes the observed peers sent us (direction peer to observer), BOLT 8 framing included. Model and
assumptions: docs/observer.md.</p>
<table><tr><th>interval</th>{"".join(f"<th>{c}</th>" for c in RECON_COLUMNS)}</tr>{recon_table}</table>
<p>Saving per observed peer and interval (1 - reconciliation / flooding bytes; negative: reconciliation
would cost more):</p>
{_savings_by_peer(rec)}
<h2>Patterns nobody asked about</h2>
<p>Outliers found without being told what to look for (docs/observer.md): counts in one interval
that jump against the {out["history_seconds"] // 86400}-day history of the same channel or node (or of new
nodes), chance below {out["alpha"]:g}; peers whose coverage or delay is off by a modified z-score
beyond {out["z_limit"]} in at least half of their intervals. Each flag links to its rows.</p>
{_outliers_html(out["flags"])}
<h2>Random peer sets</h2>
<p>Epochs of the observer's random peer sets in the window (docs/observer.md): peers observed,
their deliveries while in the set, and why their rows ended. Query peer_set_observations for any
other figure per epoch.</p>
{_peer_sets_html(report.get("peer_sets", {}).get("epochs", []))}
<h2>Charts</h2>
{sections}
</body></html>
"""
