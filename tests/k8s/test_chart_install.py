"""`helm install lnsync` against a real kube-apiserver (1.20): server-side dry run, install,
upgrade with one more peer, uninstall, and an external-database install."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from kubernetes import client

from tests.helm_tools import CHART, PEER_A, PEER_B, PEER_C, values_args
from tests.k8s.conftest import Cluster

pytestmark = pytest.mark.k8s


def _manifests(output: str) -> list[dict]:
    """The manifests in `helm --dry-run` output (after the MANIFEST: line)."""
    text = output.split("MANIFEST:", 1)[1].split("\nNOTES:", 1)[0]
    return [d for d in yaml.safe_load_all(text) if d]


def _labels(**extra: str) -> str:
    labels = {"app.kubernetes.io/instance": "lnsync", **extra}
    return ",".join(f"{k}={v}" for k, v in labels.items())


def test_server_side_dry_run_uses_what_this_server_offers(cluster: Cluster):
    out = cluster.install("default", {"peers": [PEER_A]}, "--dry-run=server").stdout
    docs = _manifests(out)
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    # 1.20 has neither autoscaling/v2 (1.23) nor policy/v1 (1.21): the chart asked the server.
    assert ("autoscaling/v2beta2", "HorizontalPodAutoscaler") in kinds
    assert ("policy/v1beta1", "PodDisruptionBudget") in kinds
    lookup = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "lnsync-lookup")
    probe = lookup["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["exec"]["command"][:2] == ["lnsync", "healthcheck"]  # no native gRPC probe before 1.24
    apps = client.AppsV1Api(cluster.client())
    assert apps.list_namespaced_deployment("default", label_selector=_labels()).items == []


def test_server_rejects_what_it_does_not_support(cluster: Cluster):
    """What only the server knows: 1.20 has no native gRPC probe (why the chart asks for the version)."""
    # Native probes cannot present a client certificate: the chart allows them without mutual TLS only.
    values = {"probes.grpc": "native", "tls.enabled": False}
    native = cluster.install("default", values, "--dry-run=server", check=False)
    assert native.returncode != 0
    assert "grpc" in native.stderr
    assert 'unknown field "grpc"' in native.stderr


def test_install_upgrade_with_one_more_peer_and_uninstall(cluster: Cluster):
    api = cluster.client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    ns = "chart"

    def deployments() -> dict[str, client.V1Deployment]:
        return {
            d.metadata.name: d for d in apps.list_namespaced_deployment(ns, label_selector=_labels()).items
        }

    cluster.install(ns, {"peers": [PEER_A, PEER_B]})
    first = deployments()
    dl_a, dl_b, dl_c = (f"lnsync-downloader-{p[:16]}" for p in (PEER_A, PEER_B, PEER_C))
    assert set(first) == {
        "lnsync-persistence",
        "lnsync-lookup",
        "lnsync-snapshotter",
        "lnsync-gateway",
        dl_a,
        dl_b,
    }
    for name in (dl_a, dl_b):
        assert first[name].spec.replicas == 1
        assert first[name].spec.strategy.type == "Recreate"
    assert [s.metadata.name for s in apps.list_namespaced_stateful_set(ns).items] == ["lnsync-postgresql"]
    services = {s.metadata.name: s for s in core.list_namespaced_service(ns).items}
    assert services["lnsync-gateway"].spec.cluster_ip.startswith("10.96.")
    assert services["lnsync-downloaders"].spec.cluster_ip == "None"
    # This client has no classes for the 1.20-era APIs; the generic path reads them all the same.
    custom = client.CustomObjectsApi(api)
    hpas = custom.list_namespaced_custom_object("autoscaling", "v2beta2", ns, "horizontalpodautoscalers")[
        "items"
    ]
    assert {h["metadata"]["name"] for h in hpas} == {"lnsync-lookup", "lnsync-gateway"}
    pdbs = custom.list_namespaced_custom_object("policy", "v1beta1", ns, "poddisruptionbudgets")["items"]
    assert {p["metadata"]["name"] for p in pdbs} == {"lnsync-lookup", "lnsync-gateway"}
    policies = client.NetworkingV1Api(api).list_namespaced_network_policy(ns).items
    assert len(policies) == 6
    role_names = {r.metadata.name for r in client.RbacAuthorizationV1Api(api).list_namespaced_role(ns).items}
    assert role_names == set()  # no API access without the peer controller
    # The database URL lives in a Secret; the generated password survives upgrades.
    secret = core.read_namespaced_secret("lnsync-postgresql", ns)
    password = base64.b64decode(secret.data["password"]).decode()
    assert "lnsync-postgresql:5432" in base64.b64decode(secret.data["database-url"]).decode()
    config = core.read_namespaced_config_map("lnsync", ns)
    assert "postgresql://" not in json.dumps(config.data)
    # mTLS (on by default): the CA and a certificate per role, generated at install.
    tls_names = [f"lnsync-tls-{n}" for n in ("ca", "persistence", "gateway", "downloader", "operator")]
    certificates = {n: core.read_namespaced_secret(n, ns).data for n in tls_names}

    cluster.helm("upgrade", "lnsync", str(CHART), "-n", ns, *values_args({"peers": [PEER_A, PEER_B, PEER_C]}))
    second = deployments()
    assert set(second) - set(first) == {dl_c}
    for name in first:  # the others were not touched: same object, no new rollout
        assert second[name].metadata.uid == first[name].metadata.uid
        assert second[name].metadata.generation == first[name].metadata.generation
    again = core.read_namespaced_secret("lnsync-postgresql", ns)
    assert base64.b64decode(again.data["password"]).decode() == password
    # The upgrade found them (lookup) and kept them: no pod needs new certificates.
    assert {n: core.read_namespaced_secret(n, ns).data for n in tls_names} == certificates

    cluster.helm("upgrade", "lnsync", str(CHART), "-n", ns, *values_args({"peers": [PEER_A, PEER_C]}))
    assert set(deployments()) == set(second) - {dl_b}
    history = cluster.helm("history", "lnsync", "-n", ns, "-o", "json").stdout
    assert [r["revision"] for r in json.loads(history)] == [1, 2, 3]

    cluster.helm("uninstall", "lnsync", "-n", ns)
    assert deployments() == {}
    assert apps.list_namespaced_stateful_set(ns).items == []
    # Kept on purpose (resource-policy keep), like the PVC: a reinstall finds its password.
    assert core.read_namespaced_secret("lnsync-postgresql", ns).data["password"] == secret.data["password"]


def test_install_with_external_database(cluster: Cluster):
    api = cluster.client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    ns = "ext"
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_secret(
        ns,
        {"metadata": {"name": "lnsync-db"}, "stringData": {"url": "postgresql://u:p@db.example.com/lnsync"}},
    )
    values = {
        "postgresql.enabled": False,
        "database.existingSecret": "lnsync-db",
        "database.existingSecretKey": "url",
    }
    cluster.install(ns, values)
    assert apps.list_namespaced_stateful_set(ns).items == []
    persistence = apps.read_namespaced_deployment("lnsync-persistence", ns)
    env = {e.name: e for e in persistence.spec.template.spec.containers[0].env}
    ref = env["LNSYNC_DATABASE_URL"].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("lnsync-db", "url")
    secrets = {s.metadata.name for s in core.list_namespaced_secret(ns).items}
    assert "lnsync-postgresql" not in secrets
    cluster.helm("uninstall", "lnsync", "-n", ns)
