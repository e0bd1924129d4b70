"""The RGS worker itself: exact u64 values, a fixture-sized graph read back field by field,
save/load, panics reported and survived, and bad requests refused clearly."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lnsync import bigsize
from lnsync.chain import chain_hash
from lnsync.gossip.messages import ChannelAnnouncement, ChannelUpdate, decode_gossip
from tests.interop.rgs_vectors import DAY, VALID, VALID_TS, V
from tests.ldk import LdkRgsClient, LdkToolError, read_records

pytestmark = pytest.mark.interop

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "cln2026_top50_resigned_mainnet.bin"


def minimal_rgs_v1(
    timestamp: int, announcements: list[ChannelAnnouncement], updates: list[ChannelUpdate]
) -> bytes:
    """An RGS v1 snapshot written the plainest way (all-zero defaults, every field explicit).

    An independent oracle for this test only: it lets LDK build a graph whose every value we
    know, without depending on the project's own encoder.
    """
    anns = sorted(announcements, key=lambda a: a.short_channel_id)
    nodes = sorted({n for a in anns for n in (a.node_id_1, a.node_id_2)})
    index = {n: i for i, n in enumerate(nodes)}
    out = bytearray(b"LDK\x01" + chain_hash("bitcoin") + struct.pack(">II", timestamp, len(nodes)))
    out += b"".join(nodes) + struct.pack(">I", len(anns))
    prev = 0
    for a in anns:
        out += struct.pack(">H", len(a.features)) + a.features + bigsize.encode(a.short_channel_id - prev)
        out += bigsize.encode(index[a.node_id_1]) + bigsize.encode(index[a.node_id_2])
        prev = a.short_channel_id
    ups = sorted(updates, key=lambda u: (u.short_channel_id, u.direction))
    out += struct.pack(">I", len(ups)) + bytes(26)  # defaults: all zero
    prev = 0
    for u in ups:
        flags = 0x7C | (0x02 if u.disabled else 0) | u.direction
        out += bigsize.encode(u.short_channel_id - prev) + bytes([flags])
        out += struct.pack(
            ">HQIIQ",
            u.cltv_expiry_delta,
            u.htlc_minimum_msat,
            u.fee_base_msat,
            u.fee_proportional_millionths,
            u.htlc_maximum_msat,
        )
        prev = u.short_channel_id
    return bytes(out)


def test_fixture_graph_reads_back_exactly(ldk_client: LdkRgsClient) -> None:
    msgs = [decode_gossip(raw) for raw in read_records(FIXTURE)]
    anns = [m for m in msgs if isinstance(m, ChannelAnnouncement)]
    updates = [m for m in msgs if isinstance(m, ChannelUpdate)]
    assert (len(anns), len(updates)) == (934, 1868)
    ts = max(u.timestamp for u in updates)
    with ldk_client.new_graph("mainnet") as g:
        r = g.apply(minimal_rgs_v1(ts, anns, updates), now=ts)
        assert (r.accepted, r.timestamp, r.channels, r.nodes) == (True, ts, 934, 50), r
        dump = g.dump()
    assert dump.network == "bitcoin"
    assert dump.chain_hash == chain_hash("bitcoin")
    by_scid = {a.short_channel_id: a for a in anns}
    assert set(dump.channels) == set(by_scid)
    for u in updates:
        ch = dump.channels[u.short_channel_id]
        a = by_scid[u.short_channel_id]
        assert (ch.node_one, ch.node_two, ch.features) == (a.node_id_1, a.node_id_2, a.features)
        d = ch.two_to_one if u.direction else ch.one_to_two
        assert d is not None
        got = (d.fee_base_msat, d.fee_proportional_millionths, d.cltv_expiry_delta)
        assert got == (u.fee_base_msat, u.fee_proportional_millionths, u.cltv_expiry_delta)
        assert (d.htlc_minimum_msat, d.htlc_maximum_msat) == (u.htlc_minimum_msat, u.htlc_maximum_msat)
        assert (d.enabled, d.last_update) == (not u.disabled, ts - 7 * DAY)
    assert any(u.disabled for u in updates)
    assert any(u.htlc_maximum_msat > 2**32 for u in updates)


def test_u64_values_stay_exact(ldk_client: LdkRgsClient) -> None:
    default_htlc_max = struct.pack(">Q", 495_000_000)
    at = VALID.index(default_htlc_max, 206)  # the defaults block (see rgs-reference §5.7)
    huge = 2**53 + 1  # the first integer a double cannot hold; still below LDK's 21e6 BTC cap
    patched = VALID[:at] + struct.pack(">Q", huge) + VALID[at + 8 :]
    with ldk_client.new_graph() as g, ldk_client.new_graph() as plain:
        assert g.apply(patched, now=None).accepted
        assert plain.apply(VALID, now=None).accepted
        before, after = plain.dump(), g.dump()
    inherited = 0
    for scid, ch in before.channels.items():
        now = after.channels[scid]
        for d0, d1 in ((ch.one_to_two, now.one_to_two), (ch.two_to_one, now.two_to_one)):
            assert d0 is not None
            assert d1 is not None
            if d0.htlc_maximum_msat == 495_000_000:
                inherited += 1
                assert d1.htlc_maximum_msat == huge
            else:
                assert d1.htlc_maximum_msat == d0.htlc_maximum_msat
    assert inherited == 2


def test_save_and_load_round_trip(ldk_client: LdkRgsClient) -> None:
    with ldk_client.new_graph() as g:
        g.apply(V["vector 10"], now=None)
        g.apply(V["vector 11"], now=None)
        saved, original = g.save(), g.dump()
    with ldk_client.load_graph(saved) as restored:
        copy = restored.dump()
        assert restored.network == "bitcoin"
        assert (copy.channels, copy.nodes) == (original.channels, original.nodes)
        assert copy.last_rapid_gossip_sync_timestamp == 1642444711
        assert original.last_rapid_gossip_sync_timestamp == 1642444711
        # a restored graph keeps working: an older blob's updates are ignored, not re-applied
        assert restored.apply(VALID, now=None).accepted
        assert restored.dump().channels == copy.channels


def test_panic_is_reported_and_the_worker_recovers() -> None:
    with LdkRgsClient() as client:  # its own worker: the session one stays untouched
        g = client.new_graph()
        assert g.apply(VALID, now=None).accepted
        r = g.apply_holding_read_lock(VALID, now=None)
        assert (r.accepted, r.error_kind) == (False, "panic")
        assert "already borrowed: BorrowMutError" in (r.error_message or "")
        with pytest.raises(LdkToolError, match="worker exited"):
            g.dump()
        fresh = client.new_graph()  # a new worker starts on demand
        assert fresh.apply(VALID, now=VALID_TS).channels == 2


def test_bad_requests_are_refused_clearly(ldk_client: LdkRgsClient) -> None:
    with pytest.raises(LdkToolError, match="unknown network"):
        ldk_client.new_graph("testnet4")  # LDK 0.1 predates testnet4
    with pytest.raises(LdkToolError, match="not a serialized NetworkGraph"):
        ldk_client.load_graph(b"\x01\x02garbage")
    with ldk_client.new_graph() as g:
        with pytest.raises(ValueError, match="u64"):
            g.apply(VALID, now=-1)
        r = g.apply(b"", now=None)
        assert (r.accepted, r.error_kind, r.error_detail) == (False, "DecodeError", "Io(UnexpectedEof)")
        assert g.apply(VALID, now=None).accepted  # the worker is fine afterwards
