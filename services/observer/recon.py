"""What an Erlay-like set-reconciliation protocol would have spent on each observed link, against
what flooding did spend: definitions and arithmetic, no I/O.

The model (per observed peer P and reconciliation interval I; docs/observer.md explains it):

* Time is cut into *rounds* ``[k·I, (k+1)·I)`` aligned to the epoch; at the end of each round we
  and P reconcile, after which both hold the union of what either had.
* P *had* a message from its earliest delivery of it to us; *we* had it from its earliest delivery
  by any other peer (what we would have learnt without P). Each is an upper bound on when that
  side really knew it, so differences are those of the observed timing.
* A message is *common* if both sides first had it in the same round (the sketch covers it, no
  transfer); otherwise it is in the difference of the round in which the first side had it —
  *ours only* if that was us (or P never delivered it), *theirs only* if it was P. After that
  round both hold it, so later deliveries of it by P (flooding duplicates) cost reconciliation
  nothing.
* Only the part of the window in which P was connected counts for P: messages first had (by
  either side) between P's first and last delivery in the window.
* A round is *active* when some message falls in it (common or not); an active round with a
  difference of ``d`` messages costs a sketch of ``capacity(d) = ceil(d·(1 + margin)) + 1``
  elements of ``short_id_bits`` each (a minisketch of capacity c over b-bit elements serialises to
  c·b bits; the margin stands for estimating d from set sizes, a failed decode and its retry are
  not modelled), the ``d`` short ids of what each side wants, and ``ROUND_MESSAGES`` protocol
  messages' headers. Messages P lacked or we lacked then travel once, each in its own frame.
* Every message on the wire costs its own bytes plus ``FRAME_BYTES`` of BOLT 8 framing, in both
  protocols.
* Bandwidth is compared for the direction P → us, the one the observer sees: flooding spent every
  delivery P made (duplicates included); reconciliation would spend the sketches, short ids,
  headers and the messages only P had. Messages only we had would travel us → P in either
  protocol, so neither side counts them (this favours flooding, whose us → P duplicates are
  unobserved).
* Extra delay: a message in a difference waits from when its first side had it until the round's
  end (up to one interval per hop); flooding's own batching delay is not subtracted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from lnsync.gossip import messages as m

US = 1_000_000
FRAME_BYTES = 34  # BOLT 8: encrypted 2-byte length + its 16-byte MAC, then the body's 16-byte MAC
ROUND_MESSAGES = 3  # sketch request, sketch, and the short ids each side wants
MESSAGE_HEADER_BYTES = FRAME_BYTES + 2  # a protocol message's frame and its 2-byte type
DEFAULT_INTERVALS = (1, 10, 60, 600)
# Deliveries recorded before their sizes were (migration 006) count at their kind's smallest size.
NOMINAL_SIZE = {
    m.CHANNEL_ANNOUNCEMENT: m.CHANNEL_ANNOUNCEMENT_MIN_SIZE,
    m.NODE_ANNOUNCEMENT: m.NODE_ANNOUNCEMENT_MIN_SIZE,
    m.CHANNEL_UPDATE: m.CHANNEL_UPDATE_SIZE,
}


class SizedDelivery(NamedTuple):
    peer: int
    msg: int
    kind: int
    received_us: int
    size: int | None  # the message's bytes; None for rows stored before sizes were recorded


def size_of(kind: int, size: int | None) -> int:
    """A delivery's message size, the kind's smallest where it was not recorded."""
    return size if size is not None else NOMINAL_SIZE.get(kind, m.CHANNEL_UPDATE_SIZE)


@dataclass(frozen=True)
class SketchModel:
    """The reconciliation protocol's costs (see the module docstring)."""

    short_id_bits: int = 32
    capacity_margin: float = 0.25

    def capacity(self, d: int) -> int:
        return math.ceil(d * (1 + self.capacity_margin) - 1e-9) + 1

    def sketch_bytes(self, d: int) -> int:
        """Bytes of the sketch one round with a difference of ``d`` messages sends."""
        return (self.capacity(d) * self.short_id_bits + 7) // 8

    def id_bytes(self, d: int) -> int:
        """Bytes of the short ids of a round's ``d`` differing messages."""
        return (d * self.short_id_bits + 7) // 8


@dataclass
class LinkTally:
    """One observed peer at one interval: sums over messages, and active rounds by difference."""

    ours_only: int = 0
    theirs_only: int = 0
    common: int = 0
    transfer_bytes: int = 0  # sizes of the messages only P had (what P would send us)
    delay_sum_us: int = 0  # over the differing messages: round end minus when the first side had it
    delay_max_us: int = 0
    rounds: dict[int, int] = field(default_factory=dict)  # difference size -> active rounds with it

    def add_round(self, d: int, count: int = 1) -> None:
        self.rounds[d] = self.rounds.get(d, 0) + count


@dataclass
class FloodTally:
    """What one peer delivered: every delivery, duplicates included."""

    deliveries: int = 0
    bytes: int = 0


Links = dict[tuple[int, int], LinkTally]  # (peer, interval seconds) -> tally


def classify(o: int | None, p: int | None, interval_us: int) -> tuple[int, int]:
    """(side, time) of one message on one link: side 0 common, 1 ours only, 2 theirs only; time is
    when the first side had it. ``o`` / ``p``: when we / P had it (None: never)."""
    if p is None:
        assert o is not None
        return 1, o
    if o is None:
        return 2, p
    if o // interval_us == p // interval_us:
        return 0, min(o, p)
    return (1, o) if o < p else (2, p)


def tally(
    deliveries: Iterable[SizedDelivery], intervals: Sequence[int]
) -> tuple[Links, dict[int, FloodTally]]:
    """Per (peer, interval) reconciliation tallies and per-peer flooding tallies of ``deliveries``
    (the reference the SQL edge, :func:`services.observer.queries.reconciliation`, must equal)."""
    floods: dict[int, FloodTally] = defaultdict(FloodTally)
    arrivals: dict[int, dict[int, tuple[int, int]]] = defaultdict(dict)  # msg -> peer -> (at, size)
    span: dict[int, tuple[int, int]] = {}
    for d in deliveries:
        size = size_of(d.kind, d.size)
        f = floods[d.peer]
        f.deliveries += 1
        f.bytes += size
        mine = arrivals[d.msg]
        if d.peer not in mine or d.received_us < mine[d.peer][0]:
            mine[d.peer] = (d.received_us, size)
        lo, hi = span.get(d.peer, (d.received_us, d.received_us))
        span[d.peer] = (min(lo, d.received_us), max(hi, d.received_us))
    links: Links = {}
    for peer, (first, last) in span.items():
        for interval in intervals:
            iu = interval * US
            link = links[peer, interval] = LinkTally()
            per_round: dict[int, int] = {}  # active round -> its difference size
            for mine in arrivals.values():
                others = [at for q, (at, _) in mine.items() if q != peer]
                o = min(others) if others else None
                own = mine.get(peer)
                p = own[0] if own else None
                side, at = classify(o, p, iu)
                if not first <= at <= last:
                    continue
                round_ = at // iu
                per_round[round_] = per_round.get(round_, 0) + (side != 0)
                if side == 0:
                    link.common += 1
                    continue
                delay = (round_ + 1) * iu - at
                link.delay_sum_us += delay
                link.delay_max_us = max(link.delay_max_us, delay)
                if side == 1:
                    link.ours_only += 1
                else:
                    link.theirs_only += 1
                    assert own is not None
                    link.transfer_bytes += own[1]
            for diff in per_round.values():
                link.add_round(diff)
    return links, dict(floods)


def link_figures(link: LinkTally, flood: FloodTally, model: SketchModel) -> dict[str, float | int | None]:
    """Bytes each protocol spends on one link (direction P → us) and reconciliation's delay."""
    rounds = sum(link.rounds.values())
    sketch = sum(n * model.sketch_bytes(d) for d, n in link.rounds.items())
    ids = sum(n * model.id_bytes(d) for d, n in link.rounds.items())
    headers = rounds * ROUND_MESSAGES * MESSAGE_HEADER_BYTES
    transfers = link.transfer_bytes + link.theirs_only * FRAME_BYTES
    flood_bytes = flood.bytes + flood.deliveries * FRAME_BYTES
    recon = sketch + ids + headers + transfers
    differing = link.ours_only + link.theirs_only
    return {
        "rounds": rounds,
        "ours_only": link.ours_only,
        "theirs_only": link.theirs_only,
        "common": link.common,
        "deliveries": flood.deliveries,
        "flood_bytes": flood_bytes,
        "sketch_bytes": sketch,
        "id_bytes": ids,
        "header_bytes": headers,
        "transfer_bytes": transfers,
        "recon_bytes": recon,
        "saving": 1 - recon / flood_bytes if flood_bytes else None,
        "delay_mean": link.delay_sum_us / differing / US if differing else None,
        "delay_max": link.delay_max_us / US if differing else None,
    }


SUMMED = ("rounds", "ours_only", "theirs_only", "common", "deliveries", "flood_bytes", "sketch_bytes",
          "id_bytes", "header_bytes", "transfer_bytes", "recon_bytes")  # fmt: skip


def figures(
    links: Links, floods: dict[int, FloodTally], intervals: Sequence[int], model: SketchModel
) -> dict[str, list[dict[str, float | int | None]]]:
    """The report's reconciliation rows: ``links`` (per peer and interval) and ``intervals`` (all
    observed links together, per interval)."""
    rows = []
    totals = []
    for interval in intervals:
        total: dict[str, float | int | None] = dict.fromkeys(SUMMED, 0)
        delay_sum = delay_n = delay_max = 0
        for (peer, iv), link in sorted(links.items()):
            if iv != interval:
                continue
            f = link_figures(link, floods.get(peer, FloodTally()), model)
            rows.append({"peer": peer, "interval": interval, **f})
            for key in SUMMED:
                total[key] = int(total[key] or 0) + int(f[key] or 0)
            delay_sum += link.delay_sum_us
            delay_n += link.ours_only + link.theirs_only
            delay_max = max(delay_max, link.delay_max_us)
        flood_bytes = int(total["flood_bytes"] or 0)
        total["saving"] = 1 - int(total["recon_bytes"] or 0) / flood_bytes if flood_bytes else None
        total["delay_mean"] = delay_sum / delay_n / US if delay_n else None
        total["delay_max"] = delay_max / US if delay_n else None
        totals.append({"interval": interval, **total})
    return {"intervals": totals, "links": rows}
