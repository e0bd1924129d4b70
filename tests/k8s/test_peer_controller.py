"""`lnsync serve peer-controller` against a real kube-apiserver, authenticated as the chart's own
ServiceAccount (so the chart's Role is what allows or forbids each call): ConfigMap changes create,
replace and delete downloader Deployments, and nothing else is touched."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lnsync import rpc
from lnsync.config import PeerAddress
from lnsync.gossip.addresses import AddressType, SocketAddress, encode_addresses
from lnsync.gossip.messages import decode_gossip
from lnsync.gossip.signing import sign_node_announcement
from services.observer import peerset as ps
from services.observer.random_peers import load_candidates
from services.peer_controller import spec
from services.persistence.store import Incoming, write_batch
from tests.conftest import free_port
from tests.helm_tools import PEER_A, PEER_B, PEER_C, render
from tests.k8s.cluster import wait_for
from tests.k8s.conftest import CONTROLLER_NAMESPACE, Cluster

pytestmark = pytest.mark.k8s

NS = CONTROLLER_NAMESPACE
CM = "lnsync-peers"


class Controller:
    """The controller as a process, the way its container runs it."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path, **extra_env: str) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LNSYNC_", "KUBERNETES_"))}
        env |= {
            "KUBECONFIG": str(kubeconfig),
            "LNSYNC_PEER_CONTROLLER__LISTEN": self.target,
            "LNSYNC_PEER_CONTROLLER__NAMESPACE": namespace,
            "LNSYNC_PEER_CONTROLLER__CONFIGMAP": CM,
            "LNSYNC_PEER_CONTROLLER__RESYNC_INTERVAL": "10",
        }
        env |= extra_env
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lnsync", "serve", "peer-controller"],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def serving(self) -> bool:
        return asyncio.run(rpc.check_health(self.target, timeout=1.0))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def apps(cluster: Cluster) -> client.AppsV1Api:
    return client.AppsV1Api(cluster.client())


@pytest.fixture
def core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.client())


@pytest.fixture
def release(cluster: Cluster) -> Iterator[None]:
    values = {"peerController.enabled": True, "peers": [PEER_A]}
    cluster.install(NS, values)
    yield
    cluster.helm("uninstall", "lnsync", "-n", NS, check=False)


def managed(apps: client.AppsV1Api, namespace: str = NS) -> dict[str, client.V1Deployment]:
    selector = f"{spec.MANAGED_BY_LABEL}={spec.MANAGED_BY}"
    return {
        d.metadata.name: d for d in apps.list_namespaced_deployment(namespace, label_selector=selector).items
    }


def set_peers(core: client.CoreV1Api, text: str, namespace: str = NS) -> None:
    core.patch_namespaced_config_map(CM, namespace, {"data": {spec.PEERS_KEY: text}})


def name(peer: str) -> str:
    return f"lnsync-downloader-{peer[:16]}"


def test_configmap_changes_drive_downloader_deployments(cluster, release, apps, core, tmp_path):
    assert managed(apps) == {}  # the chart itself renders no downloaders in this mode
    # A Deployment that looks like a downloader but is not the controller's must never be touched.
    bystander = {
        "metadata": {"name": "hand-made-downloader", "labels": {"app.kubernetes.io/component": "downloader"}},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "x", "image": "x"}]},
            },
        },
    }
    bystander_uid = apps.create_namespaced_deployment(NS, bystander).metadata.uid

    controller = Controller(cluster.controller_kubeconfig, NS, tmp_path / "controller.log")
    try:
        first = wait_for(lambda: managed(apps).get(name(PEER_A)), "the first downloader")
        wait_for(controller.serving, "SERVING")
        cm = core.read_namespaced_config_map(CM, NS)
        (owner,) = first.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "ConfigMap",
            CM,
            cm.metadata.uid,
            True,
        )
        assert first.spec.replicas == 1
        assert first.spec.strategy.type == "Recreate"
        # Same shape as the chart's own rendering of that peer.
        chart = next(
            d
            for d in render({"peers": [PEER_A]}, "-n", NS)
            if d["kind"] == "Deployment" and d["metadata"]["name"] == name(PEER_A)
        )
        container = first.spec.template.spec.containers[0]
        chart_container = chart["spec"]["template"]["spec"]["containers"][0]
        assert container.image == chart_container["image"]
        assert [(e.name, e.value) for e in container.env] == [
            (e["name"], e.get("value")) for e in chart_container["env"]
        ]
        assert first.spec.selector.match_labels == chart["spec"]["selector"]["matchLabels"]
        assert first.spec.template.spec.security_context.run_as_non_root is True

        # Add a peer: one new Deployment, the first one untouched.
        set_peers(core, f"{PEER_A}\n{PEER_B}\n")
        wait_for(lambda: name(PEER_B) in managed(apps), "the second downloader")
        assert managed(apps)[name(PEER_A)].metadata.resource_version == first.metadata.resource_version

        # Move a peer to a new address: its Deployment is replaced in place (same object, new spec).
        moved = PEER_A.replace("170.75.163.209", "node.example.org")
        set_peers(core, f"{moved}\n{PEER_B}\n")

        def env_of_a():
            d = managed(apps)[name(PEER_A)]
            return {e.name: e.value for e in d.spec.template.spec.containers[0].env}.get(
                "LNSYNC_DOWNLOADER__PEER"
            )

        wait_for(lambda: env_of_a() == moved, "the moved peer's Deployment")
        assert managed(apps)[name(PEER_A)].metadata.uid == first.metadata.uid

        # A bad line: the valid peers are applied, nothing is deleted, health says NOT_SERVING.
        set_peers(core, f"{moved}\nthis is not a peer\n{PEER_C}\n")
        wait_for(lambda: name(PEER_C) in managed(apps), "the third downloader despite a bad line")
        wait_for(lambda: not controller.serving(), "NOT_SERVING after a bad line")
        assert name(PEER_B) in managed(apps)  # dropped from the list, but held while the list is wrong

        # Fixed: the removed peer goes, health comes back.
        set_peers(core, f"{moved}\n{PEER_C}\n")
        wait_for(lambda: name(PEER_B) not in managed(apps), "deletion of the removed peer")
        wait_for(controller.serving, "SERVING again")
        assert set(managed(apps)) == {name(PEER_A), name(PEER_C)}

        # Someone deletes a managed Deployment by hand: the controller puts it back.
        apps.delete_namespaced_deployment(name(PEER_C), NS)
        wait_for(lambda: name(PEER_C) in managed(apps), "the deleted downloader to come back")
    finally:
        code = controller.stop()
    assert code == 0, controller.log.read_text()
    assert apps.read_namespaced_deployment("hand-made-downloader", NS).metadata.uid == bystander_uid
    log = controller.log.read_text()
    assert "this is not a peer" in log
    assert "Traceback" not in log


def test_the_role_is_all_the_controller_can_do(cluster, release):
    """The chart's Role, enforced by the real RBAC authorizer, for the controller's own account."""
    api = cluster.client(cluster.controller_kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    assert core.read_namespaced_config_map(CM, NS).metadata.name == CM
    apps.list_namespaced_deployment(NS)
    forbidden = [
        lambda: core.read_namespaced_config_map("lnsync", NS),  # another ConfigMap
        lambda: core.list_namespaced_secret(NS),
        lambda: core.list_namespaced_config_map(NS),  # listing all, not just its own
        lambda: apps.list_namespaced_deployment("default"),  # another namespace
        lambda: core.create_namespaced_pod(NS, {"metadata": {"name": "p"}, "spec": {"containers": []}}),
    ]
    for call in forbidden:
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403


def test_waits_for_its_configmap_without_crashing(cluster, apps, core, tmp_path):
    """Started before the release exists: alive, NOT_SERVING, retrying; works once it appears."""
    ns = "pc-late"
    core.create_namespace({"metadata": {"name": ns}})
    controller = Controller(cluster.kubeconfig, ns, tmp_path / "controller.log")
    try:
        wait_for(lambda: "does not exist" in controller.log.read_text(), "the missing-ConfigMap report")
        assert controller.proc.poll() is None
        assert not controller.serving()
        cluster.install(ns, {"peerController.enabled": True, "peers": [PEER_B]})
        wait_for(lambda: name(PEER_B) in managed(apps, ns), "the downloader after install", timeout=60)
        wait_for(controller.serving, "SERVING after install")
    finally:
        assert controller.stop() == 0
        cluster.helm("uninstall", "lnsync", "-n", ns, check=False)


# --- the observer's random peer set (observer.random_peers) -------------------------------------


def _node_secret(i: int) -> bytes:
    return hashlib.sha256(f"k8s-random-{i}".encode()).digest()


async def _announce_nodes(url: str, count: int) -> dict[str, PeerAddress]:
    """``count`` nodes announcing an IPv4 address each (no pods run here: nothing dials them)."""
    now = int(time.time())
    items = []
    for i in range(count):
        addrs = encode_addresses([SocketAddress(AddressType.IPV4, f"10.9.0.{i + 1}", 9735)])
        raw = sign_node_announcement(_node_secret(i), now, addresses=addrs)
        items.append(Incoming(decode_gossip(raw), now * 10**6))
    conn = await asyncpg.connect(url)
    try:
        await write_batch(conn, items)
        return await load_candidates(conn)
    finally:
        await conn.close()


async def _sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def _deliver(url: str, peer_id: str) -> None:
    """What persistence records when a downloader's delivery commits: the peer's last message."""
    asyncio.run(
        _sql(
            url,
            "INSERT INTO peers (peer_id, source, last_message_at) VALUES ($1, 'downloader', now())"
            " ON CONFLICT (peer_id) DO UPDATE SET last_message_at = now()",
            peer_id,
        )
    )


def test_random_peer_set_drives_downloader_deployments(cluster, release, apps, database_url, tmp_path):
    """With observer.random_peers the controller adds a Deployment per chosen node of the stored
    graph (the seed's choice for the epoch), keeps the one that delivers, replaces the one whose
    downloader never delivers (refused), and records both in peer_set_epochs."""
    candidates = asyncio.run(_announce_nodes(database_url, 6))
    seed, stall = 4, 3
    controller = Controller(
        cluster.controller_kubeconfig,
        NS,
        tmp_path / "controller.log",
        LNSYNC_DATABASE_URL=database_url,
        LNSYNC_OBSERVER__RANDOM_PEERS="2",
        LNSYNC_OBSERVER__SEED=str(seed),
        LNSYNC_OBSERVER__STALL_TIMEOUT=str(stall),
        LNSYNC_OBSERVER__ROTATE_INTERVAL="86400",
    )
    try:
        epoch = ps.epoch_of(time.time(), 86400)
        first = ps.choose(candidates, k=2, seed=seed, epoch=epoch, period=4)
        want = {name(PEER_A)} | {name(str(c.peer)) for c in first}
        wait_for(lambda: set(managed(apps)) == want, "the configured peer and the two chosen ones")
        live, dead = (c.peer.node_id for c in first)
        # The live one delivers (as persistence records it); the dead one never does.
        replacement = ps.choose(candidates, k=2, seed=seed, epoch=epoch, period=4, excluded={dead})
        want = {name(PEER_A)} | {name(str(c.peer)) for c in replacement}
        assert name(dead) not in want and name(live) in want

        def replaced() -> bool:
            _deliver(database_url, live)
            return set(managed(apps)) == want

        wait_for(replaced, "the silent peer replaced", timeout=stall * 10)
        wait_for(controller.serving, "SERVING")
        rows = asyncio.run(_sql(database_url, "SELECT peer_id, outcome FROM peer_set_epochs ORDER BY id"))
        outcomes = {r["peer_id"]: r["outcome"] for r in rows}
        assert outcomes[dead] == ps.REFUSED and outcomes[live] is None
    finally:
        assert controller.stop() == 0
