"""The real single-node cluster of scripts/k8s-cluster.sh, as the cluster tier's tests use it.

The tests run inside the cluster's network namespace (``make test-k8s`` starts them with
``scripts/k8s-cluster.sh exec``), so Service and pod IPs are reachable from here as from a pod.
Outside it (a plain ``make test``) the tier is skipped with that reason.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import yaml

from services.demopeer.server import demo_peer_address
from tests.helm_tools import K8S_BIN, ROOT, find_helm

T = TypeVar("T")

RUN = Path(os.environ.get("LNSYNC_K8S_RUN", "/tmp/lnsync-k8s"))
SCRIPT = ROOT / "scripts" / "k8s-cluster.sh"
DEMO_PEER_MANIFEST = ROOT / "helm" / "examples" / "demo-peer.yaml"
FIGURES = Path(os.environ.get("LNSYNC_K8S_FIGURES", RUN / "figures.json"))


def inside_cluster_network() -> str | None:
    """None when this process can reach the cluster, else why not."""
    netns = os.environ.get("LNSYNC_K8S_NETNS")
    if not netns:
        return "not inside the cluster's network: run `make test-k8s` (scripts/k8s-cluster.sh exec)"
    try:
        if os.stat(f"/run/netns/{netns}").st_ino != os.stat("/proc/self/ns/net").st_ino:
            return f"LNSYNC_K8S_NETNS={netns} but this process is not in that network namespace"
    except FileNotFoundError:
        return f"no network namespace {netns}: the cluster is not up"
    if subprocess.run([str(SCRIPT), "status"], capture_output=True, check=False).returncode != 0:
        return "the cluster is not running: scripts/k8s-cluster.sh up"
    return None


def wait_for(check: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def record(section: str, **figures: Any) -> None:
    """Keep a measured figure for docs/kubernetes.md (``make test-k8s`` prints the file)."""
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data.setdefault(section, {}).update(figures)
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True))


def http_get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); status 0 when no HTTP answer came at all."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, {}, b""


@dataclass
class Kube:
    """kubectl and helm against the cluster, and the Kubernetes Python client."""

    kubeconfig: Path = field(default_factory=lambda: RUN / "kubeconfig")

    def kubectl(
        self, *args: str, input: bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        out = subprocess.run(
            [str(K8S_BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stderr.decode(errors='replace')}")
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, docs: list[dict[str, Any]], namespace: str) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs).encode())

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        helm = find_helm()
        assert helm, "helm not found: make test-k8s installs it"
        out = subprocess.run(
            [helm, *args], capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )  # fmt: skip
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out

    def service_ip(self, namespace: str, name: str) -> str:
        return str(self.json("get", "service", name, "-n", namespace)["spec"]["clusterIP"])

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self.json("get", "pods", "-n", namespace, "-l", selector)["items"])

    def ready_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(namespace, selector) if pod_ready(p)]

    def describe_problems(self, namespace: str) -> str:
        """What a person would look at when something is not Ready: pods, events, logs of the unready."""
        parts = [self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout.decode()]
        events = self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)
        parts.append(events.stdout.decode()[-4000:])
        for pod in self.pods(namespace, ""):
            if not pod_ready(pod):
                name = pod["metadata"]["name"]
                logs = self.kubectl(
                    "logs", "-n", namespace, name, "--tail=30", "--all-containers", check=False
                )
                parts.append(f"--- {name}\n{logs.stdout.decode(errors='replace')}{logs.stderr.decode()}")
        return "\n".join(parts)


def pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def demo_peer_docs(name: str, identity: str) -> list[dict[str, Any]]:
    """helm/examples/demo-peer.yaml renamed: another Deployment and Service with its own node id."""
    docs = [d for d in yaml.safe_load_all(DEMO_PEER_MANIFEST.read_text()) if d]
    labels = {"app.kubernetes.io/name": name}
    for d in docs:
        d["metadata"]["name"] = name
        d["metadata"]["labels"] = labels
        if d["kind"] == "Deployment":
            d["spec"]["selector"]["matchLabels"] = labels
            template = d["spec"]["template"]
            template["metadata"]["labels"] = labels
            args = template["spec"]["containers"][0]["args"]
            args[args.index("--identity") + 1] = identity
        else:
            d["spec"]["selector"] = labels
    return docs


# --- the release the cluster tier's modules share (tests/k8s/conftest.py installs it once) ---------

NS = "lnsync-e2e"
PEER_A = ("demo-peer", "lnsync-demo-peer")  # (Deployment and Service name, --identity)
PEER_B = ("demo-peer-b", "second-demo-peer")
CHANNELS, NODES = 934, 50  # the demo peer's bundled graph (data/cln2026_top50_resigned_mainnet.bin)
SERVER_NAME = "lnsync-grpc"  # the chart's tls.serverName: every certificate names it


def address(peer: tuple[str, str]) -> str:
    return demo_peer_address(f"{peer[0]}:9735", peer[1])


def values(*peers: tuple[str, str]) -> dict[str, Any]:
    """The chart's defaults but for what this one node and its locally built images need."""
    return {
        "peers": [address(p) for p in peers],
        "image.pullPolicy": "Never",  # built here and imported: nothing may be pulled
        "postgresql.image.repository": "lnsync-postgres",
        "postgresql.image.tag": "15",
        "postgresql.image.pullPolicy": "Never",
        "postgresql.persistence.size": "1Gi",
        "gateway.autoscaling.enabled": False,  # no metrics-server: an HPA would only log errors
        "gateway.replicaCount": 2,
        "gateway.workers": 1,
        "lookup.autoscaling.enabled": False,
        "lookup.replicaCount": 1,
        # Start-up probes (a TCP connect) every second instead of 5 s: pods count as started
        # sooner. Readiness keeps its 10 s: on 1.20 it is an exec of `lnsync healthcheck`, a Python
        # start-up per pod and probe, which at 2 s saturated this 2-core node.
        "probes.startup.periodSeconds": 1,
        "probes.startup.failureThreshold": 120,
        # The first generation waits ingestLag after the first full sync (anything seen before its
        # reference time must be committed); the peers here are pods on the same node, so 10 s is
        # ample and saves 50 s of every install. docs/kubernetes.md gives the default's figure.
        "ingestLag": 10,
    }


@dataclass
class Release:
    kube: Kube
    namespace: str
    installed_in: float

    def gateway(self) -> str:
        return f"http://{self.kube.service_ip(self.namespace, 'lnsync-gateway')}"

    def selector(self, component: str) -> str:
        return f"app.kubernetes.io/instance=lnsync,app.kubernetes.io/component={component}"

    def credentials(self, role: str) -> grpc.ChannelCredentials:
        """mTLS credentials with ``role``'s certificate, read from the release's Secret."""
        data = self.kube.json("get", "secret", f"lnsync-tls-{role}", "-n", self.namespace)["data"]
        ca, cert, key = (base64.b64decode(data[k]) for k in ("ca.crt", "tls.crt", "tls.key"))
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel(self, target: str, role: str) -> grpc.aio.Channel:
        """A channel to ``target`` (an address of a pod or Service) as ``role`` (the chart's
        certificates name tls.serverName, not addresses)."""
        options = [("grpc.ssl_target_name_override", SERVER_NAME)]
        return grpc.aio.secure_channel(target, self.credentials(role), options=options)

    @contextlib.asynccontextmanager
    async def store(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection to the release's PostgreSQL (its Service IP, the password from its Secret)."""
        secret = self.kube.json("get", "secret", "lnsync-postgresql", "-n", self.namespace)
        password = base64.b64decode(secret["data"]["password"]).decode()
        host = self.kube.service_ip(self.namespace, "lnsync-postgresql")
        conn = await asyncpg.connect(
            host=host, user="lnsync", password=password, database="lnsync", timeout=10
        )
        try:
            yield conn
        finally:
            await conn.close()

    async def store_query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One query on a connection of its own (see :meth:`store`)."""
        async with self.store() as conn:
            return list(await conn.fetch(sql, *args))
