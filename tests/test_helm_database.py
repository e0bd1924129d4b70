"""The chart's production PostgreSQL options, rendered: the bundled PostgreSQL's password from an
existing Secret, the CloudNativePG recipe (helm/examples/values-cloudnativepg.yaml) and lookup's
read replica."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml

from lnsync.config import load_settings
from tests.helm_tools import CHART, ROOT, by_kind, find_helm, helm, pod_specs, render, values_args

pytestmark = pytest.mark.skipif(find_helm() is None, reason="helm not installed: make test installs it")

DB_COMPONENTS = {"persistence", "lookup", "snapshotter"}
CNPG_VALUES = ROOT / "helm" / "examples" / "values-cloudnativepg.yaml"


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _database_containers(docs: list[dict]) -> dict[str, dict]:
    return {
        c["name"]: c for _, pod in pod_specs(docs) for c in pod["containers"] if c["name"] in DB_COMPONENTS
    }


def test_bundled_postgresql_takes_its_password_from_an_existing_secret():
    docs = render(
        {"postgresql.auth.existingSecret": "pg-auth", "postgresql.auth.existingSecretPasswordKey": "pw"}
    )
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    assert not by_kind(docs, "Secret")  # the chart never holds (or generates) the password
    sts = by_kind(docs, "StatefulSet")["lnsync-postgresql"]
    env = _env(sts["spec"]["template"]["spec"]["containers"][0])
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "pg-auth", "key": "pw"}}
    for name, container in _database_containers(docs).items():
        env = _env(container)
        # No password in the URL: the PostgreSQL client (asyncpg, libpq) reads PGPASSWORD.
        assert env["LNSYNC_DATABASE_URL"] == "postgresql://lnsync@lnsync-postgresql:5432/lnsync", name
        assert env["PGPASSWORD"] == {"secretKeyRef": {"name": "pg-auth", "key": "pw"}}, name
    assert len(_database_containers(docs)) == 3


def test_cloudnativepg_recipe_uses_the_operators_secret_and_reaches_only_its_pods():
    docs = render({}, "-f", str(CNPG_VALUES), kube_version="1.33.0")
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    assert not by_kind(docs, "StatefulSet")
    assert not by_kind(docs, "Secret")  # both URLs stay in Secrets the chart does not manage
    containers = _database_containers(docs)
    assert set(containers) == DB_COMPONENTS
    for name, container in containers.items():
        env = _env(container)
        assert env["LNSYNC_DATABASE_URL"] == {"secretKeyRef": {"name": "lnsync-db-app", "key": "uri"}}, name
        assert "PGPASSWORD" not in env
        replica = env.get("LNSYNC_LOOKUP__DATABASE_URL")
        assert replica == (
            {"secretKeyRef": {"name": "lnsync-db-ro", "key": "uri"}} if name == "lookup" else None
        )
    cnpg = [{"podSelector": {"matchLabels": {"cnpg.io/cluster": "lnsync-db"}}}]
    for name, policy in by_kind(docs, "NetworkPolicy").items():
        egress = policy["spec"]["egress"]
        to_database = [rule for rule in egress if rule.get("ports") == [{"port": 5432, "protocol": "TCP"}]]
        if name.removeprefix("lnsync-") in DB_COMPONENTS:
            assert to_database == [{"to": cnpg, "ports": [{"port": 5432, "protocol": "TCP"}]}], name
        else:
            assert not to_database, name


def test_read_replica_url_is_kept_in_a_secret_and_given_to_lookup_alone(monkeypatch):
    url = "postgresql://reader:secret@db-replica.example.com/lnsync"
    docs = render(
        {
            "postgresql.enabled": False,
            "database.url": "postgresql://u:p@db.example.com/lnsync",
            "database.readReplica.url": url,
        }
    )
    secret = by_kind(docs, "Secret")["lnsync-database-replica"]
    assert secret["stringData"] == {"database-url": url}
    for cm in by_kind(docs, "ConfigMap").values():
        assert "db-replica" not in json.dumps(cm.get("data", {}))
    containers = _database_containers(docs)
    assert _env(containers["lookup"])["LNSYNC_LOOKUP__DATABASE_URL"] == {
        "secretKeyRef": {"name": "lnsync-database-replica", "key": "database-url"}
    }
    assert all("LNSYNC_LOOKUP__DATABASE_URL" not in _env(c) for n, c in containers.items() if n != "lookup")
    # What lookup's settings make of that environment (Secrets resolved by hand).
    configmap = by_kind(docs, "ConfigMap")["lnsync"]["data"]
    for var in [v for v in __import__("os").environ if v.startswith("LNSYNC_")]:
        monkeypatch.delenv(var)
    for key, value in configmap.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LNSYNC_DATABASE_URL", "postgresql://u:p@db.example.com/lnsync")
    monkeypatch.setenv("LNSYNC_LOOKUP__DATABASE_URL", url)
    assert load_settings().lookup.database_url == url


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"database.readReplica.url": "postgresql://r@replica/lnsync"}, "the bundled one has no replica"),
        ({"database.readReplica.url": "mysql://r@replica/lnsync"}, "/database/readReplica/url"),
        ({"postgresql.auth.existingSecretPasswordKey": ""}, "/postgresql/auth/existingSecretPasswordKey"),
    ],
)
def test_bad_database_values_fail(values, message):
    result = helm("template", "x", str(CHART), *values_args(values), check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_recipe_cluster_is_a_cloudnativepg_cluster_with_a_replica():
    cluster = yaml.safe_load((ROOT / "helm" / "examples" / "cloudnativepg.yaml").read_text())
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["kind"] == "Cluster"
    name = cluster["metadata"]["name"]
    values = yaml.safe_load(CNPG_VALUES.read_text())
    # The names the operator derives from the cluster's: "<name>-app" (Secret), "<name>-ro" (Service).
    assert values["database"]["existingSecret"] == f"{name}-app"
    assert values["database"]["networkPolicyTo"][0]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": name}
    assert cluster["spec"]["instances"] >= 2  # a replica for lookup to read
