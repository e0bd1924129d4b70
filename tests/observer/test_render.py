"""The report's JSON and CSV carry the same figures; HTML escapes peer names."""

from __future__ import annotations

import csv
import io
import json

from services.observer import outliers, recon, render, report, stats
from services.observer.stats import US, Delivery


def small_report() -> dict[str, object]:
    rows = [Delivery(1, 10, 258, 0), Delivery(2, 10, 258, 2 * US), Delivery(2, 11, 257, 5 * US)]
    kinds, peers = stats.summarise(rows, interval=60, max_delay_us=60 * US, lo_us=0, hi_us=120 * US)
    names = {1: "<peer one>", 2: "peer-two"}
    top = {"channels": [{"scid": "1x2x3", "updates": 4, "directions": 2}]}
    data = report.build(kinds, peers, names, top, start=0, end=120, step=60, max_delay=60, edge=0)
    sized = [recon.SizedDelivery(d.peer, d.msg, d.kind, d.received_us, 150) for d in rows]
    links, floods = recon.tally(sized, [1, 60])
    data["reconciliation"] = report.build_reconciliation(
        links, floods, names, intervals=(1, 60), start=0, end=120
    )
    flag = outliers.Flag(
        "peer_late", "<peer one>", 1.0, "late", rows=[{"interval_start": 0, "coverage": 0.5}]
    )
    data["outliers"] = report.build_outliers([flag])
    return data


def test_json_and_csv_agree() -> None:
    data = small_report()
    parsed = json.loads(render.to_json(data))
    assert parsed["total"]["messages"] == 2 and parsed["total"]["redundancy"] == {"1": 1, "2": 1}
    assert parsed["total"]["t50_p50"] == 0.0 and parsed["total"]["t95_p50"] == 2.0
    rows = dict(csv.reader(io.StringIO(render.to_csv(data))))
    assert rows["total.messages"] == "2" and rows["by_kind.channel_update.t95_p50"] == "2.0"
    assert rows["peers[0].peer_id"] == "<peer one>" and rows["peers[0].coverage"] == "0.5"
    assert rows["top.channels[0].scid"] == "1x2x3"
    # Peer 2 alone had message 11 (theirs only), message 10 was common: one 150-byte transfer.
    assert rows["reconciliation.links[1].peer_id"] == "peer-two"
    assert rows["reconciliation.links[1].transfer_bytes"] == str(150 + recon.FRAME_BYTES)
    assert parsed["reconciliation"]["intervals"][1]["interval"] == 60


def test_html_escapes_peer_names() -> None:
    page = render.to_html(small_report())
    assert "&lt;peer one&gt;" in page and "<peer one>" not in page
    assert page.count("<svg") == 6 and '<figure id="chart-reconciliation">' in page
    assert "<h2>Set reconciliation vs flooding</h2>" in page
    assert "<tr><th>peer</th><th>1 s</th><th>1 min</th></tr><tr><th>&lt;peer one&gt;</th>" in page
    assert '<a href="#flag-1">' in page and '<section id="flag-1"><h3>#1 peer_late: &lt;peer one&gt;' in page
