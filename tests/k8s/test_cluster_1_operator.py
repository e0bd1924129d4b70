"""`helm install lnsync` on a real node: images built here (scripts/build-image.sh), pods run by a
kubelet on containerd + runc, Services routed by kube-proxy and named by cluster DNS
(scripts/k8s-cluster.sh). The release (tests/k8s/conftest.py, shared with the scale-out and
uninstall modules) is exercised in order as an operator would: install, sync from an in-cluster
demo peer, serve the real LDK client, `helm test`, a second peer by `helm upgrade`, pods deleted
while the peer sends.

Figures (install-to-ready, recovery times, failed requests) go to $LNSYNC_K8S_FIGURES for
docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from collections import Counter
from typing import Any

import grpc
import pytest

from lnsync.gossip import messages as m
from lnsync.rgs.decode import decode
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc, persistence_pb2, persistence_pb2_grpc
from tests.helm_tools import CHART, values_args
from tests.k8s.cluster import (
    CHANNELS,
    NODES,
    NS,
    PEER_A,
    PEER_B,
    Kube,
    Release,
    address,
    demo_peer_docs,
    http_get,
    pod_ready,
    record,
    values,
    wait_for,
)
from tests.ldk import LdkRgsClient
from tests.stack import until

pytestmark = [pytest.mark.k8s, pytest.mark.cluster, pytest.mark.timeout(900)]


def test_every_pod_runs_and_is_ready(kube: Kube, release: Release) -> None:
    pods = kube.pods(NS, "app.kubernetes.io/instance=lnsync")
    by_component = Counter(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods)
    assert by_component == {
        "persistence": 1, "lookup": 1, "snapshotter": 2, "gateway": 2, "downloader": 1, "postgresql": 1,
    }  # fmt: skip
    for pod in pods:
        statuses = pod["status"]["containerStatuses"]
        assert all(s["ready"] for s in statuses), pod["metadata"]["name"]
        # Non-root, as the chart says, in the image built here.
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        images = {s["image"] for s in statuses}
        assert images <= {"docker.io/library/lnsync:0.1.0", "docker.io/library/lnsync-postgres:15"}, images


def _full_snapshot(release: Release) -> tuple[int, bytes] | None:
    code, headers, body = http_get(release.gateway() + "/snapshot/v2/0", timeout=20)
    if code != 200:
        return None
    if len(decode(body).announcements) < CHANNELS:
        return None  # a generation from before the first sync finished
    return int(headers["X-RGS-Timestamp"]), body


def test_gateway_serves_the_peers_graph_to_the_real_ldk_client(
    release: Release, ldk_client: LdkRgsClient
) -> None:
    started = time.monotonic()
    T, full = wait_for(lambda: _full_snapshot(release), "a full snapshot of the peer's graph", 300, 2)
    record("install", full_snapshot_after_ready_s=round(time.monotonic() - started, 1))
    with ldk_client.new_graph("bitcoin") as graph:
        applied = graph.apply(full, now=int(time.time()))
        assert applied.accepted, applied.error_message
        assert (applied.channels, applied.nodes) == (CHANNELS, NODES)

        def delta() -> bytes | None:
            code, _, body = http_get(f"{release.gateway()}/delta/v2/{T}", timeout=20)
            return body if code == 200 and decode(body).updates else None

        # The demo peer changes a few fees every 5 s: a later delta carries them.
        body = wait_for(delta, f"/delta/v2/{T} with the peer's newer updates", 120, 2)
        applied = graph.apply(body, now=int(time.time()))
        assert applied.accepted, applied.error_message
        assert applied.channels == CHANNELS


async def _compute_delta(kube: Kube, release: Release) -> tuple[lookup_pb2.BlobInfo, bytes]:
    """A full v2 delta from lookup's Service over gRPC, from this process (outside every pod), with
    the operator's certificate (mutual TLS is on by default)."""
    target = f"{kube.service_ip(NS, 'lnsync-lookup')}:50052"
    async with release.channel(target, "operator") as channel:
        stub = lookup_pb2_grpc.LookupStub(channel)
        request = lookup_pb2.ComputeDeltaRequest(last_sync_timestamp=0, version=2)
        # Waits for a reachable lookup (within the timeout): right after a pod is replaced, the
        # Service IP refuses connections until kube-proxy has the new endpoint.
        call = stub.ComputeDelta(request, timeout=60, wait_for_ready=True)
        chunks = [c async for c in call]
    return chunks[0].info, b"".join(c.data for c in chunks)


async def test_lookup_compute_delta_over_grpc_from_outside_the_pods(kube: Kube, release: Release) -> None:
    info, blob = await _compute_delta(kube, release)
    assert (info.version, info.size, info.announcement_count) == (2, len(blob), CHANNELS)
    assert len(decode(blob).announcements) == CHANNELS


async def _ingest_code(release: Release, target: str, role: str, peer_id: str) -> grpc.StatusCode:
    """How a header-only Ingest stream (stores nothing) as ``role`` ends: OK once accepted."""
    header = persistence_pb2.IngestRequest(header=persistence_pb2.StreamHeader(peer_id=peer_id))
    async with release.channel(target, role) as channel:
        try:
            async for _ in persistence_pb2_grpc.PersistenceStub(channel).Ingest(iter([header]), timeout=10):
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_only_the_downloaders_identity_may_store_gossip(kube: Kube, release: Release) -> None:
    """Issue 25, finding 3 on the cluster: each pod has its own role's certificate (generated at
    install); with the gateway's, persistence refuses Ingest; with a downloader's, it accepts it.
    From inside the cluster network, so only mutual TLS and the roles decide (not NetworkPolicy)."""
    started = time.monotonic()
    (pod,) = kube.ready_pods(NS, release.selector("persistence"))
    target = f"{pod['status']['podIP']}:50051"
    peer_id = address(PEER_A).split("@")[0]  # the demo peer's id: a header alone changes nothing
    assert await _ingest_code(release, target, "gateway", peer_id) == grpc.StatusCode.PERMISSION_DENIED
    assert await _ingest_code(release, target, "downloader", peer_id) == grpc.StatusCode.OK
    # Without a certificate nothing gets through at all.
    async with grpc.aio.insecure_channel(target) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await plain.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 15


def test_helm_test_checks_health_and_a_snapshot(kube: Kube, release: Release) -> None:
    out = kube.helm("test", "lnsync", "-n", NS, "--logs", "--timeout", "3m", check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "lookup: SERVING" in out.stdout
    assert "bytes of RGS v2" in out.stdout


async def test_helm_upgrade_adds_and_removes_a_peer(kube: Kube, release: Release) -> None:
    kube.apply(demo_peer_docs(*PEER_B), NS)
    b_id = address(PEER_B).split("@")[0]
    name_b = f"lnsync-downloader-{b_id[:16]}"
    started = time.monotonic()
    kube.helm(
        "upgrade", "lnsync", str(CHART), "-n", NS, *values_args(values(PEER_A, PEER_B)),
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    record("upgrade", second_downloader_ready_s=round(time.monotonic() - started, 1))
    deployment = kube.json("get", "deployment", name_b, "-n", NS)
    assert deployment["status"].get("readyReplicas") == 1

    async def stored_from_b() -> int:
        rows = await release.store_query(
            "SELECT channel_announcements + channel_updates + node_announcements AS n FROM peers "
            "WHERE peer_id = $1",
            b_id,
        )
        return int(rows[0]["n"]) if rows else 0

    async def all_of_b_stored() -> bool:
        return await stored_from_b() >= CHANNELS

    await until(all_of_b_stored, 180, "the second peer's graph committed (peers row)", interval=2)

    kube.helm("upgrade", "lnsync", str(CHART), "-n", NS, *values_args(values(PEER_A)), "--wait")
    gone = kube.kubectl("get", "deployment", name_b, "-n", NS, check=False)
    assert gone.returncode != 0 and b"NotFound" in gone.stderr
    kube.kubectl("delete", "-n", NS, "deployment/demo-peer-b", "service/demo-peer-b")


class Prober:
    """GETs /snapshot/v2/0 through the gateway's Service, back to back, and counts the answers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.codes: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            code, _, body = http_get(self.url, timeout=10)
            self.codes[code if (code != 200 or body[:3] == b"LDK") else -1] += 1
            time.sleep(0.1)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def _peer_state(kube: Kube) -> list[m.ChannelUpdate]:
    """The demo peer's current channel_updates, read from its state file in the pod."""
    raw = kube.kubectl("exec", "-n", NS, "deploy/demo-peer", "--", "cat", "/tmp/demo-peer.gossip").stdout
    updates, i = [], 0
    while i < len(raw):
        (size,) = struct.unpack_from(">H", raw, i)
        msg = raw[i + 2 : i + 2 + size]
        i += 2 + size
        if m.message_type(msg) == m.CHANNEL_UPDATE:
            updates.append(m.decode_channel_update(msg))
    return updates


def _i64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _delete_and_wait_for_replacement(kube: Kube, selector: str) -> dict[str, float]:
    """Delete the one Ready pod of ``selector``; seconds until it was gone and a new one Ready."""
    (old,) = kube.ready_pods(NS, selector)
    uid = old["metadata"]["uid"]  # a StatefulSet's pod comes back under the same name
    t0 = time.monotonic()
    kube.kubectl("delete", "pod", "-n", NS, old["metadata"]["name"], "--wait=false")
    seen: dict[str, float] = {}

    def both() -> bool:
        pods = kube.pods(NS, selector)
        now = time.monotonic() - t0
        if all(p["metadata"]["uid"] != uid for p in pods):
            seen.setdefault("gone", now)
        if any(p["metadata"]["uid"] != uid and pod_ready(p) for p in pods):
            seen.setdefault("ready", now)
        return len(seen) == 2

    wait_for(both, f"a new Ready pod for {selector}", 240, 0.5)
    return seen


async def test_pods_deleted_while_the_peer_sends_recover_and_lose_nothing(
    kube: Kube, release: Release
) -> None:
    outcomes: dict[str, Any] = {}

    def persistence_ready() -> bool:
        return bool(kube.ready_pods(NS, release.selector("persistence")))

    with Prober(release.gateway() + "/snapshot/v2/0") as prober:
        # Persistence and lookup at once (they do not depend on each other), then the database.
        for components in (("persistence", "lookup"), ("postgresql",)):
            t0 = time.monotonic()
            seen = await asyncio.gather(
                *(
                    asyncio.to_thread(_delete_and_wait_for_replacement, kube, release.selector(c))
                    for c in components
                )
            )
            # Recovered = the whole path works again: persistence healthy (it follows the database)
            # and lookup answering a delta.
            await asyncio.to_thread(wait_for, persistence_ready, "persistence Ready", 240)
            _, blob = await _compute_delta(kube, release)
            assert len(decode(blob).announcements) == CHANNELS
            for component, times in zip(components, seen, strict=True):
                outcomes[component] = {
                    "old_pod_gone_s": round(times["gone"], 1),
                    "replacement_ready_s": round(times["ready"], 1),
                    "recovered_s": round(time.monotonic() - t0, 1),
                }
        served_during = dict(prober.codes)

    failed = {code: n for code, n in served_during.items() if code != 200}
    record("faults", **outcomes, snapshot_requests=sum(served_during.values()), failed_requests=failed)
    assert not failed, f"the gateway failed snapshot requests during the faults: {served_during}"

    # Nothing lost: every channel_update the peer holds now is in the store within a minute.
    published = await asyncio.to_thread(_peer_state, kube)
    assert len(published) >= CHANNELS
    wanted = {(_i64(u.short_channel_id), u.direction, u.timestamp) for u in published}

    async def missing() -> set[tuple[int, int, int]]:
        rows = await release.store_query(
            "SELECT u.scid, u.direction, u.timestamp FROM channel_updates u "
            "JOIN unnest($1::int8[], $2::int2[], $3::int8[]) AS w(scid, direction, timestamp) "
            "USING (scid, direction, timestamp)",
            [w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted],
        )  # fmt: skip
        return wanted - {(r["scid"], r["direction"], r["timestamp"]) for r in rows}

    lost: set[tuple[int, int, int]] = set()

    async def nothing_missing() -> bool:
        lost.clear()
        lost.update(await missing())
        return not lost

    with contextlib.suppress(AssertionError):
        await until(nothing_missing, 90, "every update the peer holds in the store", interval=3)
    record("faults", peer_updates_checked=len(wanted), lost=len(lost))
    assert not lost, f"{len(lost)} of the peer's {len(wanted)} current updates never reached the store"
