"""The data generator: the decoded mainnet snapshot, BOLT 7 validity and signatures of what it
generates, determinism, the promised cadence, and the gossip_store file ``lnsync gen`` writes."""

from __future__ import annotations

import contextlib
import gzip
import io
import ipaddress
import statistics
import tracemalloc
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnsync.chain import chain_hash
from lnsync.cli import main as cli_main
from lnsync.gen import DEFAULT_END_TIME, GeneratedMessage, generate_history
from lnsync.gen.build import build_stream
from lnsync.gen.gossmap import HEADER, GossmapError, decode_gossmap, load
from lnsync.gen.history import DAY, Planned, block_height_at
from lnsync.gen.topology import DEFAULT_GOSSMAP, DEFAULT_NODE_MAP, load_snapshot, select
from lnsync.gossip import features
from lnsync.gossip import messages as m
from lnsync.gossip.addresses import AddressType, onion_v3_checksum_ok
from lnsync.gossip.archive import ArchiveFormat, detect_format, read_archive
from lnsync.gossip.validate import GossipValidator

DATA = Path(__file__).resolve().parents[2] / "data"
MAINNET = chain_hash("bitcoin")


@pytest.fixture(scope="module")
def snapshot():
    return load_snapshot()


# -- the snapshot ----------------------------------------------------------------------------------


def test_snapshot_decodes_to_the_documented_graph(snapshot) -> None:
    gm, node_map = load(DEFAULT_GOSSMAP, DEFAULT_NODE_MAP)
    assert (gm.channel_count, gm.node_count, len(node_map)) == (50_808, 17_324, 17_324)
    assert len(snapshot.channels) == 50_808
    assert len(snapshot.nodes) == 17_324
    assert node_map[0].alias == "ACINQ"
    for c in snapshot.channels[:2000]:
        for p in (c.policy_a, c.policy_b):
            assert p.htlc_minimum_msat <= p.htlc_maximum_msat <= c.capacity_sat * 1000


def test_policies_belong_to_the_node_that_publishes_them(snapshot) -> None:
    """Nodes set their own cltv and base fee alike on all their channels: attached to the right
    endpoint, a node's policies mostly agree; attached to the wrong one, they would not."""

    def agreement(swap: bool) -> float:
        published = defaultdict(list)
        for c in snapshot.channels:
            for node, p in ((c.node_a, c.policy_a), (c.node_b, c.policy_b)):
                if not p.disabled:
                    other = c.node_b if node == c.node_a else c.node_a
                    published[other if swap else node].append((p.cltv_expiry_delta, p.fee_base_msat))
        groups = [v for v in published.values() if len(v) >= 5]
        return sum(Counter(v).most_common(1)[0][1] for v in groups) / sum(map(len, groups))

    assert agreement(swap=False) > 0.75
    assert agreement(swap=True) < 0.4


def test_top50_fixture_policies_come_from_the_same_channels(snapshot) -> None:
    """The bundled top-50 fixture (made by another decoder) carries the policies we decode for the
    same channels. It numbers directions by its synthetic keys, so only the pair is compared."""
    _, node_map = load(DEFAULT_GOSSMAP, DEFAULT_NODE_MAP)
    real_index = {info.node_id: i for i, info in node_map.items()}
    synthetic_to_real = {}
    for line in (DATA / "cln2026_top50_keymap.tsv").read_text().splitlines():
        _, synthetic, real = line.split("\t")
        synthetic_to_real[bytes.fromhex(synthetic)] = real_index[bytes.fromhex(real)]
    policies = defaultdict(set)
    for c in snapshot.channels:
        for p in (c.policy_a, c.policy_b):
            key = frozenset((c.node_a, c.node_b))
            policies[key].add(
                (p.disabled, p.cltv_expiry_delta, p.fee_base_msat, p.fee_proportional_millionths)
            )
    anns = {}
    checked = 0
    with (DATA / "cln2026_top50_resigned_mainnet.bin").open("rb") as f:
        for r in read_archive(f):
            msg = m.decode_gossip(r.raw)
            if isinstance(msg, m.ChannelAnnouncement):
                anns[msg.short_channel_id] = msg
            elif isinstance(msg, m.ChannelUpdate):
                ann = anns[msg.short_channel_id]
                pair = frozenset((synthetic_to_real[ann.node_id_1], synthetic_to_real[ann.node_id_2]))
                fees = (
                    msg.disabled,
                    msg.cltv_expiry_delta,
                    msg.fee_base_msat,
                    msg.fee_proportional_millionths,
                )
                assert fees in policies[pair]
                checked += 1
    assert checked == 1868


@pytest.mark.parametrize("scale", [0.01, 0.1, 0.5])
def test_scale_keeps_a_connected_part_among_the_best_connected_nodes(snapshot, scale: float) -> None:
    part = select(snapshot, scale)
    assert 0.8 * scale * 50_808 <= len(part.channels) <= 1.3 * scale * 50_808
    adjacency = defaultdict(set)
    for c in part.channels:
        adjacency[c.node_a].add(c.node_b)
        adjacency[c.node_b].add(c.node_a)
    seen, todo = {part.nodes[0]}, [part.nodes[0]]
    while todo:
        for peer in adjacency[todo.pop()] - seen:
            seen.add(peer)
            todo.append(peer)
    assert seen == set(part.nodes)
    assert 0 in seen  # the best-connected node is always kept
    assert select(snapshot, 1.0) is snapshot


@settings(max_examples=100)
@given(st.binary(max_size=200))
def test_corrupt_gossmap_raises_only_gossmap_errors(tail: bytes) -> None:
    with contextlib.suppress(GossmapError):
        decode_gossmap(gzip.compress(HEADER + tail))


# -- generated messages ----------------------------------------------------------------------------


def _verify_history(history: list[GeneratedMessage], *, signed: bool) -> Counter[str]:
    """Every rule the gossip core enforces (signatures too when ``signed``, through
    GossipValidator), plus what the generator promises beyond BOLT 7's minimum."""
    validator = GossipValidator(MAINNET, verify_signatures=signed, strict_alias=True)
    funding: dict[int, int] = {}
    announced_nodes: set[bytes] = set()
    last_update: dict[tuple[int, int], int] = {}
    last_node: dict[bytes, int] = {}
    counts: Counter[str] = Counter()
    previous = 0.0
    for msg in history:
        assert msg.received_at >= previous
        previous = msg.received_at
        decoded = validator.validate(msg.raw)
        counts[type(decoded).__name__] += 1
        if isinstance(decoded, m.ChannelAnnouncement):
            assert decoded.short_channel_id not in funding
            assert msg.funding_sats is not None
            assert msg.funding_sats > 0
            funding[decoded.short_channel_id] = msg.funding_sats
            announced_nodes |= {decoded.node_id_1, decoded.node_id_2}
        elif isinstance(decoded, m.ChannelUpdate):
            assert msg.funding_sats is None
            capacity_msat = funding[decoded.short_channel_id] * 1000  # announced (received) first
            assert decoded.htlc_maximum_msat <= capacity_msat
            assert msg.received_at >= decoded.timestamp + 1
            key = (decoded.short_channel_id, decoded.direction)
            assert decoded.timestamp > last_update.get(key, 0)
            last_update[key] = decoded.timestamp
        else:
            assert isinstance(decoded, m.NodeAnnouncement)
            assert decoded.node_id in announced_nodes  # only after one of its channels
            assert decoded.timestamp > last_node.get(decoded.node_id, 0)
            last_node[decoded.node_id] = decoded.timestamp
            addresses = decoded.address_list
            assert not addresses.excess
            types = [a.type for a in addresses.addresses]
            assert types == sorted(set(types))
            for a in addresses.addresses:
                assert a.usable
                if a.type == AddressType.TOR_V3:
                    assert onion_v3_checksum_ok(a.host)
                if a.type in (AddressType.IPV4, AddressType.IPV6):
                    assert ipaddress.ip_address(a.host).is_global
            assert features.missing_dependencies(decoded.features) == []
    return counts


def test_signed_history_is_valid_and_every_signature_verifies() -> None:
    history = list(generate_history(seed=5, scale=0.01, days=2, sign=True, workers=1))
    counts = _verify_history(history, signed=True)
    assert counts["ChannelAnnouncement"] >= 500
    assert counts["ChannelUpdate"] > 2 * counts["ChannelAnnouncement"]
    assert counts["NodeAnnouncement"] >= 30
    assert history[-1].received_at <= DEFAULT_END_TIME


def test_unsigned_history_differs_only_in_signatures() -> None:
    signed = list(generate_history(seed=9, scale=0.005, days=1, sign=True, workers=1))
    unsigned = list(generate_history(seed=9, scale=0.005, days=1, sign=False))
    assert len(signed) == len(unsigned)
    for a, b in zip(signed, unsigned, strict=True):
        assert a.received_at == b.received_at
        t = m.message_type(a.raw)
        sig_bytes = {256: slice(2, 258), 257: slice(2, 66), 258: slice(2, 66)}[t]
        assert b.raw[sig_bytes] == bytes(sig_bytes.stop - 2)
        assert a.raw[sig_bytes.stop :] == b.raw[sig_bytes.stop :]


def test_same_seed_same_bytes_whatever_the_worker_count() -> None:
    one = [(x.raw, x.received_at) for x in generate_history(seed=3, scale=0.005, days=2, workers=1)]
    two = [(x.raw, x.received_at) for x in generate_history(seed=3, scale=0.005, days=2, workers=2)]
    assert one == two
    other = [(x.raw, x.received_at) for x in generate_history(seed=4, scale=0.005, days=2, workers=1)]
    assert other != one
    assert len(one) > 1000


@pytest.mark.slow
def test_cadence_statistics_are_in_the_promised_ranges() -> None:
    days = 14
    start = DEFAULT_END_TIME - days * DAY
    history = list(generate_history(seed=11, scale=0.05, days=days, sign=False))
    counts = _verify_history(history, signed=False)

    updates: dict[tuple[int, int], list[m.ChannelUpdate]] = defaultdict(list)
    heights, delays, nodes = [], [], Counter()
    for msg in history:
        t = m.message_type(msg.raw)
        if t == 258:
            u = m.decode_channel_update(msg.raw)
            updates[(u.short_channel_id, u.direction)].append(u)
            delays.append(msg.received_at - u.timestamp)
        elif t == 256:
            heights.append(m.decode_channel_announcement(msg.raw).short_channel_id >> 40)
        else:
            nodes[m.decode_node_announcement(msg.raw).node_id] += 1

    def per_day(seq: list[m.ChannelUpdate]) -> float:
        return sum(u.timestamp >= start for u in seq) / days

    rates = [per_day(seq) for seq in updates.values()]
    share = lambda cond: sum(map(cond, rates)) / len(rates)  # noqa: E731
    assert 0.55 <= share(lambda r: 0.7 <= r <= 1.5) <= 0.9  # most refresh about daily
    assert 0.03 <= share(lambda r: r >= 3) <= 0.1  # a minority many times a day
    flapped = sum(
        any(a.disabled and not b.disabled for a, b in pairwise(seq))
        and any(not a.disabled and b.disabled for a, b in pairwise(seq))
        for seq in updates.values()
    )
    assert 0.04 <= flapped / len(updates) <= 0.15
    same = sum(
        (a.fee_base_msat, a.fee_proportional_millionths, a.htlc_maximum_msat, a.channel_flags)
        == (b.fee_base_msat, b.fee_proportional_millionths, b.htlc_maximum_msat, b.channel_flags)
        for seq in updates.values()
        for a, b in pairwise(seq)
    )
    assert same / sum(len(s) - 1 for s in updates.values()) > 0.5  # refreshes repeat the content

    n_topology = len(select(load_snapshot(), 0.05).channels)
    closed = counts["ChannelAnnouncement"] - n_topology
    assert 0.7 * 0.004 * days * n_topology <= closed <= 1.3 * 0.004 * days * n_topology
    tip = block_height_at(start)
    opened = sum(h > tip - 6 for h in heights)
    assert 0.7 * 0.005 * days * n_topology <= opened <= 1.3 * 0.005 * days * n_topology
    assert all(505_000 <= h <= block_height_at(DEFAULT_END_TIME) for h in heights)
    assert statistics.median(heights) < tip - 10_000  # most channels are months or years old

    assert min(delays) >= 2
    assert 20 <= statistics.median(delays) <= 120
    assert sorted(delays)[int(0.95 * len(delays))] <= 600
    assert 3 <= statistics.mean(nodes.values()) <= 12


# -- the command -----------------------------------------------------------------------------------


def test_lnsync_gen_writes_a_gossip_store_the_archive_reader_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "history.gossip_store"
    args = [
        "gen",
        "-o",
        str(out),
        "--seed",
        "2",
        "--scale",
        "0.005",
        "--days",
        "2",
        "--quiet",
        "--workers",
        "1",
    ]
    assert cli_main(args) == 0
    data = out.read_bytes()
    assert detect_format(data) is ArchiveFormat.GOSSIP_STORE
    records = list(read_archive(io.BytesIO(data)))
    expected = list(generate_history(seed=2, scale=0.005, days=2, workers=1))
    assert [r.raw for r in records] == [e.raw for e in expected]
    assert [r.timestamp for r in records] == [int(e.received_at) for e in expected]
    assert [r.funding_sats for r in records] == [e.funding_sats for e in expected]
    assert not (tmp_path / "history.gossip_store.tmp").exists()


def test_lnsync_gen_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["gen", "-o", str(tmp_path / "x"), "--scale", "0"]) == 2
    assert cli_main(["gen", "-o", str(tmp_path / "x"), "--network", "dogecoin"]) == 2
    assert cli_main(["gen", "-o", str(tmp_path / "x"), "--gossmap", str(tmp_path / "missing")]) == 1
    assert "cannot read the topology" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_memory_does_not_grow_with_the_length_of_the_history(snapshot) -> None:
    """Streaming: four times the days, about the same peak memory (it follows the graph)."""

    def peak(days: float) -> int:
        tracemalloc.start()
        try:
            count = sum(
                1 for _ in generate_history(seed=1, scale=0.01, days=days, sign=False, topology=snapshot)
            )
            assert count > 1000 * days
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak(3), peak(12)
    assert long < 1.3 * short


def test_a_failing_signing_worker_is_a_clear_error() -> None:
    bogus = iter([Planned(1.0, ("x",))] * 5)
    with pytest.raises(RuntimeError, match="signing worker"):
        list(build_stream(bogus, MAINNET, signed=True, workers=2))
