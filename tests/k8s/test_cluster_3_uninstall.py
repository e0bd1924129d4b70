"""The cluster tier's last module: `helm uninstall` of the release the others used."""

from __future__ import annotations

import pytest

from tests.k8s.cluster import NS, Kube, Release, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.cluster, pytest.mark.timeout(600)]


def test_helm_uninstall_leaves_only_what_the_chart_keeps(kube: Kube, release: Release) -> None:
    kube.helm("uninstall", "lnsync", "-n", NS, "--wait", "--timeout", "3m")
    kube.kubectl("delete", "-n", NS, "deployment/demo-peer", "service/demo-peer")
    kinds = (
        "deployments,statefulsets,replicasets,pods,services,configmaps,secrets,networkpolicies,"
        "serviceaccounts,roles,rolebindings,persistentvolumeclaims,poddisruptionbudgets,jobs"
    )

    def leftovers() -> list[str]:
        items = kube.json("get", kinds, "-n", NS, "-l", "app.kubernetes.io/instance=lnsync")["items"]
        return sorted(f"{i['kind']}/{i['metadata']['name']}" for i in items)

    # Pods terminate within their grace period; then only the documented keepers remain.
    wait_for(lambda: not any(x.startswith("Pod/") for x in leftovers()), "the pods to go", 120, 1)
    assert leftovers() == [
        "PersistentVolumeClaim/data-lnsync-postgresql-0",  # the StatefulSet's data (Kubernetes keeps it)
        "Secret/lnsync-postgresql",  # its password (helm.sh/resource-policy: keep)
    ]
