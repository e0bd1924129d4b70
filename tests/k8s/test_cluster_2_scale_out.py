"""Scaling out on the real node, with the release of tests/k8s/conftest.py: replicas share the work
(gRPC round robin over a headless Service, connections aged out so new pods are found), rollouts
fail no request (preStop pause, then a graceful drain), and a second snapshotter finishes the
generation the first was killed in.

Load comes from threads that open a new connection per request (as the gateway's wallets do
between syncs), through the gateway's Service IP; any answer but 200 counts as failed, 429
included. Figures go to $LNSYNC_K8S_FIGURES for docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections import Counter
from typing import Any

import pytest

from lnsync.v1 import snapshots_pb2, snapshots_pb2_grpc
from services.snapshotter import storage
from tests.k8s.cluster import NS, Kube, Release, http_get, record, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.cluster, pytest.mark.timeout(900)]

METRICS_PORT = 9090


class Load:
    """``threads`` clients asking the gateway in a loop; every answer's status and latency kept."""

    def __init__(self, release: Release, threads: int, paths: Any) -> None:
        self.base = release.gateway()
        self.paths = paths  # an iterator of paths, shared (next() under a lock)
        self.lock = threading.Lock()
        self.codes: Counter[int] = Counter()
        self.latencies: list[float] = []
        self.failures: list[str] = []  # the first few, to say which path failed and why
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                path = next(self.paths)
            t0 = time.monotonic()
            code, _, body = http_get(self.base + path, timeout=30)
            took = time.monotonic() - t0
            if code == 200 and body[:3] != b"LDK":
                code = -1  # a 200 that is not an RGS blob
            with self.lock:
                self.codes[code] += 1
                self.latencies.append(took)
                if code != 200 and len(self.failures) < 10:
                    when = time.monotonic() - self.started
                    self.failures.append(f"{when:.1f} s {path} -> {code} {body[:120]!r}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(40)

    @property
    def failed(self) -> dict[int, int]:
        return {code: n for code, n in self.codes.items() if code != 200}

    def figures(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        return {
            "requests": sum(self.codes.values()),
            "failed": self.failed,
            "failures": self.failures,
            "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else 0.0,
            "p99_ms": round(p99 * 1000, 1),
        }


def deltas() -> Any:
    """/delta/v2/<T> paths, a different T each time: each is a computation of its own in lookup
    (the gateway caches by T, so repeating one would only measure its cache)."""
    base = int(time.time()) - 6 * 3600
    return (f"/delta/v2/{base - i}" for i in itertools.count())


def mixed(snapshot_ts: int) -> Any:
    """Alternating precomputed snapshots (/snapshot/v2/<T>) and dynamic deltas."""
    return itertools.chain.from_iterable(
        zip(itertools.repeat(f"/snapshot/v2/{snapshot_ts}"), deltas(), strict=False)
    )


def lookup_requests(kube: Kube, release: Release) -> dict[str, float]:
    """ComputeDelta requests each Ready lookup pod has answered, from its own metrics."""
    out = {}
    for pod in kube.ready_pods(NS, release.selector("lookup")):
        code, _, body = http_get(f"http://{pod['status']['podIP']}:{METRICS_PORT}/metrics", timeout=5)
        assert code == 200, f"no metrics from {pod['metadata']['name']}"
        out[pod["metadata"]["name"]] = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("lnsync_lookup_requests_total{")
        )
    return out


def scale(kube: Kube, deployment: str, replicas: int) -> None:
    kube.kubectl("scale", "-n", NS, f"deployment/{deployment}", f"--replicas={replicas}")
    kube.kubectl("rollout", "status", "-n", NS, f"deployment/{deployment}", "--timeout=180s", timeout=200)


def test_new_lookup_pods_receive_requests_within_a_minute(kube: Kube, release: Release) -> None:
    scale(kube, "lnsync-lookup", 1)
    wait_for(lambda: len(kube.pods(NS, release.selector("lookup"))) == 1, "one lookup pod", 120)
    (first,) = lookup_requests(kube, release)
    with Load(release, 2, deltas()) as load:
        time.sleep(3)
        t0 = time.monotonic()
        kube.kubectl("scale", "-n", NS, "deployment/lnsync-lookup", "--replicas=3")
        ready_at: dict[str, float] = {}
        first_call: dict[str, float] = {}

        def every_new_pod_called() -> bool:
            for pod in kube.ready_pods(NS, release.selector("lookup")):
                ready_at.setdefault(pod["metadata"]["name"], time.monotonic() - t0)
            for name, n in lookup_requests(kube, release).items():
                if name != first and n > 0:
                    first_call.setdefault(name, time.monotonic() - t0)
            return len(first_call) == 2

        wait_for(every_new_pod_called, "both new lookup pods to answer a request", 180, 1)
    after_ready = {name: first_call[name] - ready_at[name] for name in first_call}
    record(
        "scale_out",
        lookup_1_to_3={
            "first_request_after_scale_s": {k: round(v, 1) for k, v in first_call.items()},
            "first_request_after_ready_s": {k: round(v, 1) for k, v in after_ready.items()},
            **load.figures(),
        },
    )
    assert max(after_ready.values()) <= 60, after_ready
    assert not load.failed, load.codes


def test_deltas_through_one_gateway_spread_evenly_over_three_lookups(kube: Kube, release: Release) -> None:
    wait_for(lambda: len(kube.ready_pods(NS, release.selector("lookup"))) == 3, "three lookup pods", 180)
    gateway = kube.ready_pods(NS, release.selector("gateway"))[0]["status"]["podIP"]
    paths = deltas()

    def gateway_reaches_all_three() -> bool:
        """This gateway's channel has resolved every pod (it re-resolves at least every connection
        age, 30 s +- 10 %): a few requests through it reach each of them."""
        before = lookup_requests(kube, release)
        for _ in range(12):
            http_get(f"http://{gateway}:8080{next(paths)}", timeout=30)
        after = lookup_requests(kube, release)
        return len(after) == 3 and all(after[n] > before.get(n, 0) for n in after)

    wait_for(gateway_reaches_all_three, "the gateway to reach all three lookup pods", 90, 1)
    before = lookup_requests(kube, release)
    codes: Counter[int] = Counter()
    lock = threading.Lock()

    def client() -> None:
        for _ in range(100):
            with lock:
                path = next(paths)
            code, _, _ = http_get(f"http://{gateway}:8080{path}", timeout=30)
            with lock:
                codes[code] += 1

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    after = lookup_requests(kube, release)
    served = {name: after[name] - before.get(name, 0) for name in after}
    mean = sum(served.values()) / len(served)
    record("scale_out", three_lookups_300_deltas={"per_pod": served, "answers": dict(codes)})
    assert codes == {200: 300}
    # Lookup answers some requests from its own cache, uncounted (157 to 300 of the 300 counted
    # in runs so far): enough must reach every pod for the spread to mean something.
    assert all(n >= 30 for n in served.values()), served
    assert all(abs(n - mean) <= 0.25 * mean for n in served.values()), served


def test_a_rollout_of_gateway_and_lookup_together_under_load_fails_no_request(
    kube: Kube, release: Release
) -> None:
    """What `helm upgrade` to a new image does: every Deployment rolls at once."""
    components = ("gateway", "lookup")
    for component in components:
        scale(kube, f"lnsync-{component}", 2)
    for component in components:
        wait_for(
            lambda c=component: len(kube.pods(NS, release.selector(c))) == 2,
            f"2 {component} pods and no terminating one",
            120,
        )
    _, headers, _ = http_get(release.gateway() + "/snapshot/v2/0", timeout=20)
    T = int(headers["X-RGS-Timestamp"]) - 86400
    old = {c: {p["metadata"]["uid"] for p in kube.pods(NS, release.selector(c))} for c in components}
    gone: dict[str, float] = {}
    with Load(release, 4, mixed(T)) as load:
        time.sleep(3)
        t0 = time.monotonic()
        kube.kubectl("rollout", "restart", "-n", NS, *(f"deployment/lnsync-{c}" for c in components))

        def old_pods_gone() -> bool:
            for c in components:
                if c not in gone and not old[c] & {
                    p["metadata"]["uid"] for p in kube.pods(NS, release.selector(c))
                }:
                    gone[c] = time.monotonic() - t0
            return len(gone) == len(components)

        wait_for(old_pods_gone, "every old gateway and lookup pod gone", 300, 1)
        for c in components:
            kube.kubectl(
                "rollout", "status", "-n", NS, f"deployment/lnsync-{c}", "--timeout=120s", timeout=140
            )
        time.sleep(3)
    record(
        "rollouts",
        gateway_and_lookup={**{f"{c}_rollout_s": round(gone[c], 1) for c in components}, **load.figures()},
    )
    assert sum(load.codes.values()) > 100
    assert not load.failed, f"failed requests during the rollout: {dict(load.codes)}: {load.failures}"


async def test_killing_the_generating_snapshotter_hands_the_generation_to_the_other(
    kube: Kube, release: Release
) -> None:
    pods = kube.ready_pods(NS, release.selector("snapshotter"))
    assert len(pods) == 2, "the chart runs two snapshotters by default"
    first_R = int(time.time()) - 120  # past the ingest lag, newer than the current generation
    lock_holder = (
        "SELECT host(a.client_addr) AS ip FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2"
    )
    key = storage.SNAPSHOT_LOCK

    with Load(release, 2, iter(itertools.repeat("/snapshot/v2/0"))) as load:
        channels = [release.channel(f"{p['status']['podIP']}:50053", "operator") for p in pods]
        # A generation of this small graph holds the lock for a few tenths of a second: watch it on
        # one open connection every 20 ms, and ask again for the next second's R if it still ended
        # unseen (a connection per look missed it in a clean-clone run).
        holder: str | None = None
        async with release.store() as store:
            for R in range(first_R, first_R + 5):
                request = snapshots_pb2.RegenerateRequest(reference_time=R)
                stubs = [snapshots_pb2_grpc.SnapshotsStub(ch) for ch in channels]
                calls = [asyncio.ensure_future(stub.Regenerate(request, timeout=300)) for stub in stubs]
                deadline = time.monotonic() + 60
                while holder is None and not all(c.done() for c in calls):
                    holder = await store.fetchval(lock_holder, key >> 32, key & 0xFFFFFFFF)
                    assert time.monotonic() < deadline, "no snapshotter took the generation lock"
                    await asyncio.sleep(0.02)
                if holder is not None:
                    break
                for c in calls:
                    assert c.result().reference_time == R  # done unseen: published all the same
        assert holder is not None, "five generations ended before their lock was seen"
        (generator,) = (p for p in pods if p["status"]["podIP"] == holder)
        t0 = time.monotonic()
        kube.kubectl("delete", "pod", "-n", NS, generator["metadata"]["name"], "--grace-period=0", "--force")
        survivor = next(i for i, p in enumerate(pods) if p is not generator)
        resp = await calls[survivor]
        takeover_s = time.monotonic() - t0
        for c in calls:
            c.cancel()
        for ch in channels:
            await ch.close()

        def gateway_serves_R() -> bool:
            code, headers, _ = http_get(release.gateway() + "/snapshot/v2/0", timeout=20)
            return code == 200 and int(headers["X-RGS-Timestamp"]) >= R - R % 60

        wait_for(gateway_serves_R, "the gateway serving the new generation", 120, 1)
        served_s = time.monotonic() - t0
    published = await release.store_query(
        "SELECT g.reference_time FROM snapshot_current c "
        "JOIN snapshot_generations g ON g.id = c.generation_id"
    )
    record(
        "snapshotter_takeover",
        published_after_kill_s=round(takeover_s, 1),
        served_by_gateway_after_kill_s=round(served_s, 1),
        **load.figures(),
    )
    assert resp.reference_time == R and published[0]["reference_time"] == R
    assert not load.failed, f"the gateway failed snapshot requests: {dict(load.codes)}"
    wait_for(lambda: len(kube.ready_pods(NS, release.selector("snapshotter"))) == 2, "two snapshotters", 120)
