"""The two Kubernetes tiers' fixtures.

``cluster``: a real Kubernetes API server (kube-apiserver 1.20.2 + etcd, built offline by
scripts/build-kube.sh) on loopback for the whole session. There is no scheduler, kubelet or
controller-manager: objects are stored, validated and admitted (RBAC included), but pods never run
and nothing is garbage-collected. Skipped, with the reason, when the binaries have not been built.

``kube`` and ``release``: the real single-node cluster of scripts/k8s-cluster.sh (``make test-k8s``
runs this tier inside its network) and one release of the chart on it, shared in order by
test_cluster_1_operator.py, test_cluster_2_scale_out.py and test_cluster_3_uninstall.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.conftest import free_port
from tests.helm_tools import CHART, K8S_BIN, ROOT, find_helm, helm, values_args
from tests.k8s.cluster import (
    NS,
    PEER_A,
    Kube,
    Release,
    demo_peer_docs,
    inside_cluster_network,
    record,
    values,
)

T = TypeVar("T")

CONTROLLER_NAMESPACE = "pc"
CONTROLLER_ACCOUNT = "lnsync-peer-controller"  # the chart's ServiceAccount for release "lnsync"
CONTROLLER_TOKEN = "lnsync-test-peer-controller-token"


@dataclass
class Cluster:
    run_dir: Path
    kubeconfig: Path
    # Authenticates as the chart's peer-controller ServiceAccount in CONTROLLER_NAMESPACE, so the
    # controller runs with exactly the Role the chart grants.
    controller_kubeconfig: Path

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(*args, env={"KUBECONFIG": str(self.kubeconfig)}, check=check)

    def install(
        self, namespace: str, values: dict[str, Any], *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`helm install lnsync ./helm/lnsync -n NAMESPACE` with ``values`` (dotted keys)."""
        args = ["install", "lnsync", str(CHART), "-n", namespace, "--create-namespace", *values_args(values)]
        return self.helm(*args, *extra, check=check)

    def client(self, kubeconfig: Path | None = None) -> Any:
        from kubernetes import config

        return config.new_client_from_config(str(kubeconfig or self.kubeconfig))


def _write_kubeconfig(path: Path, server: str, ca: Path, token: str, namespace: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [
            {"name": "local", "context": {"cluster": "local", "user": "user", "namespace": namespace}}
        ],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    missing = [b for b in ("kube-apiserver", "etcd") if not os.access(K8S_BIN / b, os.X_OK)]
    if missing:
        pytest.skip(
            f"no {', '.join(missing)} in {K8S_BIN}: `make test-k8s` builds them once from Debian's "
            "kubernetes source package (~5-10 min), then this tier runs in every `make test`"
        )
    if find_helm() is None:
        pytest.skip("helm not installed: make test installs it")
    run_dir = Path(tempfile.mkdtemp(prefix="lnsync-k8s-", dir="/tmp"))
    account = f"system:serviceaccount:{CONTROLLER_NAMESPACE}:{CONTROLLER_ACCOUNT}"
    groups = f"system:serviceaccounts,system:serviceaccounts:{CONTROLLER_NAMESPACE}"
    (run_dir / "extra-tokens.csv").write_text(f'{CONTROLLER_TOKEN},{account},pc-uid,"{groups}"\n')
    port = free_port()
    env = {
        **os.environ,
        "LNSYNC_K8S_BIN": str(K8S_BIN),
        "KAPI_PORT": str(port),
        "ETCD_PORT": str(free_port()),
        "ETCD_PEER_PORT": str(free_port()),
    }
    script = str(ROOT / "scripts" / "kube-apiserver.sh")
    started = subprocess.run(
        [script, "start", str(run_dir)], env=env, capture_output=True, text=True, timeout=180
    )
    if started.returncode != 0:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise RuntimeError(f"kube-apiserver did not start:\n{started.stdout}\n{started.stderr}")
    controller = run_dir / "controller-kubeconfig"
    _write_kubeconfig(
        controller,
        f"https://127.0.0.1:{port}",
        run_dir / "certs" / "apiserver.crt",
        CONTROLLER_TOKEN,
        "default",
    )
    try:
        yield Cluster(run_dir, run_dir / "kubeconfig", controller)
    finally:
        subprocess.run([script, "stop", str(run_dir)], env=env, capture_output=True, timeout=60)


# --- the real node (scripts/k8s-cluster.sh): one release for the cluster tier's modules, in order:
# test_cluster_1_operator.py, test_cluster_2_scale_out.py, test_cluster_3_uninstall.py.


@pytest.fixture(scope="session")
def kube() -> Kube:
    why = inside_cluster_network()
    if why:
        pytest.skip(why)
    return Kube()


@pytest.fixture(scope="session")
def release(kube: Kube) -> Iterator[Release]:
    kube.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=180)
    kube.kubectl("create", "namespace", NS)
    kube.apply(demo_peer_docs(*PEER_A), NS)
    started = time.monotonic()
    install = kube.helm(
        "install", "lnsync", str(CHART), "-n", NS, *values_args(values(PEER_A)),
        "--wait", "--timeout", "8m", check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if install.returncode != 0:
        pytest.fail(f"helm install --wait failed after {elapsed:.0f} s:\n{install.stderr}\n"
                    f"{kube.describe_problems(NS)}")  # fmt: skip
    record("install", install_to_ready_s=round(elapsed, 1))
    yield Release(kube, NS, elapsed)
    kube.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)
