"""The Helm chart, without a cluster: lint, render with several value sets, validate every manifest
strictly against the Kubernetes 1.29 and 1.33 schemas, and check the shape the design relies on
(one downloader per peer, secrets never in ConfigMaps, hardened pods, network rules).

Needs the real `helm` binary (`make test` installs it with scripts/install-helm.sh).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from lnsync import certs, rpc
from lnsync.config import ConfigError, load_settings
from services.peer_controller import spec
from tests.helm_tools import (
    CHART,
    PEER_A,
    PEER_B,
    PEER_C,
    PEER_DIGITS,
    PEER_V6,
    ROOT,
    by_kind,
    component,
    find_helm,
    helm,
    pod_specs,
    render,
    values_args,
)

pytestmark = pytest.mark.skipif(find_helm() is None, reason="helm not installed: make test installs it")

KUBE_VERSIONS = ["1.29.0", "1.33.0"]
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
DB_COMPONENTS = {"persistence", "lookup", "snapshotter"}
LNSYNC_COMPONENTS = {"persistence", "lookup", "snapshotter", "gateway", "downloader", "peer-controller"}
# The roles the chart makes a certificate for: every component's plus the operator's (helm test).
CHART_ROLES = ("persistence", "lookup", "snapshotter", "gateway", "downloader", "operator")

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-db-existing-secret": {
        "postgresql.enabled": False,
        "database.existingSecret": "lnsync-db",
        "database.existingSecretKey": "url",
        "database.networkPolicyTo": [{"ipBlock": {"cidr": "10.20.0.0/24"}}],
    },
    "external-db-url": {
        "postgresql.enabled": False,
        "database.url": "postgresql://u:p@db.example.com/lnsync",
    },
    "three-peers": {"peers": [PEER_A, PEER_DIGITS, PEER_V6]},
    "ingress": {
        "ingress.enabled": True,
        "ingress.className": "nginx",
        "ingress.tls": [{"secretName": "rgs-tls", "hosts": ["rgs.example.com"]}],
        "networkPolicy.gatewayFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
    },
    "peer-controller": {"peerController.enabled": True, "peers": [PEER_A, PEER_B]},
    "plaintext": {"tls.enabled": False},
    "mtls-shared": {"tls.existingSecret": "lnsync-grpc-tls", "peers": [PEER_A, PEER_V6]},
    "mtls-per-role-secrets": {"tls.existingSecrets": {r: f"grpc-{r}" for r in CHART_ROLES}},
    "mtls-peer-controller": {"tls.serverName": "grpc.lnsync.internal", "peerController.enabled": True},
    "chain-source": {
        "chain.source": "bitcoind",
        "chain.url": "http://bitcoind.bitcoin.svc:8332",
        "chain.user": "rgs",
        "chain.existingSecret": "bitcoind-rpc",
        "chain.egressTo": [{"namespaceSelector": {"matchLabels": {"name": "bitcoin"}}}],
        "peers": [PEER_A, PEER_B],
    },
    "minimal": {
        "metrics.enabled": False,
        "networkPolicy.enabled": False,
        "lookup.autoscaling.enabled": False,
        "gateway.autoscaling.enabled": False,
        "gateway.pdb.enabled": False,
        "postgresql.persistence.enabled": False,
        "peers": [],
    },
}


def _validate_all(docs: list[dict[str, Any]], version: str) -> None:
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{doc['kind']}/{doc['metadata']['name']} against {version}: {exc}"
            ) from None


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_lint_strict(name):
    result = helm("lint", "--strict", str(CHART), *values_args(VALUE_SETS[name]), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_manifest_validates_strictly(name, version):
    docs = render(VALUE_SETS[name], kube_version=version)
    assert len(docs) > 10
    _validate_all(docs, version)


def test_strict_validation_catches_mistakes():
    """The validator really is strict: a misspelled field, a wrong type and a removed API fail."""
    deployment = by_kind(render(), "Deployment")["lnsync-persistence"]
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, "1.33.0", strict=True)
    hpa = next(d for d in render() if d["kind"] == "HorizontalPodAutoscaler")
    hpa["spec"]["minReplicas"] = "2"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, "1.33.0", strict=True)
    hpa["apiVersion"] = "autoscaling/v2beta2"  # removed in 1.26
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(hpa, "1.29.0", strict=True)


# A ServiceMonitor is a CRD kind: kubernetes-validate has no schema for it, so it is checked
# here against the fields the chart uses (from the Prometheus operator's CRD).
_SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?)$",
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_service_monitor_only_where_the_crd_exists():
    on = {"metrics.serviceMonitor.enabled": True, "metrics.serviceMonitor.labels": {"release": "prom"}}
    assert not by_kind(render(on, kube_version="1.33.0"), "ServiceMonitor")
    docs = render(on, "--api-versions", SERVICE_MONITOR_API, kube_version="1.33.0")
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == 1
    jsonschema.validate(monitors[0], _SERVICE_MONITOR_SCHEMA)
    assert monitors[0]["metadata"]["labels"]["release"] == "prom"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(monitors[0], "1.33.0", strict=True)
    _validate_all([d for d in docs if d["kind"] != "ServiceMonitor"], "1.33.0")
    # Every Service the monitor selects exposes one of its endpoint ports.
    selector = monitors[0]["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitors[0]["spec"]["endpoints"]}
    selected = [
        s for s in by_kind(docs, "Service").values() if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert {component(s) for s in selected} == {
        "persistence",
        "lookup",
        "snapshotter",
        "gateway",
        "downloader",
    }
    for svc in selected:
        assert ports & {p["name"] for p in svc["spec"]["ports"]}
    # The gateway is scraped on its admin Service, never through the public one.
    assert {s["metadata"]["name"] for s in selected if component(s) == "gateway"} == {"lnsync-gateway-admin"}
    assert ports == {"metrics", "admin"}


# --- one downloader per peer -------------------------------------------------------------------


def _downloaders(docs):
    return {n: d for n, d in by_kind(docs, "Deployment").items() if component(d) == "downloader"}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_one_downloader_deployment_per_peer():
    peers = [PEER_A, PEER_DIGITS, PEER_V6]
    docs = render({"peers": peers})
    downloaders = _downloaders(docs)
    assert len(downloaders) == 3
    by_peer = {}
    for name, d in downloaders.items():
        assert d["spec"]["replicas"] == 1
        assert d["spec"]["strategy"] == {"type": "Recreate"}
        container = d["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", "downloader"]
        peer = _env(container)["LNSYNC_DOWNLOADER__PEER"]
        by_peer[peer] = d
        pubkey = peer.split("@")[0]
        peer_label = d["metadata"]["labels"]["lnsync/peer"]
        # A label value: a string (even when all digits), at most 63 characters, a key prefix.
        assert isinstance(peer_label, str)
        assert len(peer_label) <= 63
        assert pubkey.startswith(peer_label)
        assert d["spec"]["selector"]["matchLabels"]["lnsync/peer"] == peer_label
        assert d["spec"]["template"]["metadata"]["labels"]["lnsync/peer"] == peer_label
        assert d["metadata"]["annotations"]["lnsync/peer-pubkey"] == pubkey
        assert name.endswith(peer_label)
        assert len(name) <= 63
    assert set(by_peer) == set(peers)
    # Selectors never overlap: no workload or Service of another component picks up downloader pods.
    for other in by_kind(docs, "Deployment").values():
        if component(other) != "downloader":
            assert other["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] != "downloader"


def test_adding_a_peer_leaves_the_other_downloaders_untouched():
    before = _downloaders(render({"peers": [PEER_A, PEER_B]}))
    after = _downloaders(render({"peers": [PEER_A, PEER_B, PEER_C]}))
    assert set(after) - set(before) == {"lnsync-downloader-02f1a8c87607f415"}
    for name, d in before.items():
        assert after[name] == d  # byte-for-byte the same object: Kubernetes does not restart it


def test_peers_sharing_an_id_are_rejected():
    same_id = PEER_A.split("@")[0][:16] + "0" * 50 + "@10.0.0.1:9735"
    result = helm(
        "template",
        "x",
        str(CHART),
        "--set-json",
        json.dumps([PEER_A, same_id]).join(["peers=", ""]),
        check=False,
    )
    assert result.returncode != 0
    assert "share the id 035e4ff418fc8b55" in result.stderr


def test_long_release_names_stay_dns_labels():
    docs = render({"peers": [PEER_A]}, release="a-long-release-name-for-lnsync-that-goes-on-and-on-x")
    for d in docs:
        # StatefulSets: 52, their controller-revision-hash label value appends 11 characters.
        limit = 52 if d["kind"] == "StatefulSet" else 63
        assert len(d["metadata"]["name"]) <= limit, d["metadata"]["name"]


# --- configuration and secrets -----------------------------------------------------------------


def test_database_url_only_in_secrets_and_only_for_database_users():
    for name in ("defaults", "external-db-url"):
        docs = render(VALUE_SETS[name])
        for cm in by_kind(docs, "ConfigMap").values():
            text = json.dumps(cm.get("data", {}))
            assert "postgresql://" not in text
            assert "PASSWORD" not in text.upper()
        secret_urls = [
            s
            for s in by_kind(docs, "Secret").values()
            if "postgresql://" in s.get("stringData", {}).get("database-url", "")
        ]
        assert len(secret_urls) == 1
        for workload, pod in pod_specs(docs):
            for c in pod["containers"]:
                env = _env(c)
                if c["name"] in DB_COMPONENTS:
                    ref = env["LNSYNC_DATABASE_URL"]["secretKeyRef"]
                    assert ref == {"name": secret_urls[0]["metadata"]["name"], "key": "database-url"}
                else:
                    assert "LNSYNC_DATABASE_URL" not in env, workload


def test_external_database_with_existing_secret():
    docs = render(VALUE_SETS["external-db-existing-secret"])
    assert not by_kind(docs, "StatefulSet")
    assert not [s for s in by_kind(docs, "Secret").values() if "database-url" in s.get("stringData", {})]
    refs = [
        _env(c)["LNSYNC_DATABASE_URL"]["secretKeyRef"]
        for _, pod in pod_specs(docs)
        for c in pod["containers"]
        if c["name"] in DB_COMPONENTS
    ]
    assert refs == [{"name": "lnsync-db", "key": "url"}] * 3


def test_bundled_postgresql_keeps_its_credentials_in_a_secret():
    docs = render()
    sts = by_kind(docs, "StatefulSet")["lnsync-postgresql"]
    secret = by_kind(docs, "Secret")["lnsync-postgresql"]
    password = secret["stringData"]["password"]
    assert len(password) >= 32
    assert (
        secret["stringData"]["database-url"]
        == f"postgresql://lnsync:{password}@lnsync-postgresql:5432/lnsync"
    )
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    env = _env(sts["spec"]["template"]["spec"]["containers"][0])
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "lnsync-postgresql", "key": "password"}}
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"


def _container_env(docs, container) -> dict[str, str]:
    """The environment Kubernetes would give ``container`` (ConfigMaps resolved, secrets faked)."""
    configmaps = by_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = "postgresql://u:p@db:5432/lnsync"
        else:
            env[item["name"]] = "some-namespace"
    return env


def _use_container_env(docs: list[dict[str, Any]], container: dict[str, Any], monkeypatch: Any) -> None:
    """Make the process environment exactly the container's LNSYNC_* variables."""
    for var in [v for v in __import__("os").environ if v.startswith("LNSYNC_")]:
        monkeypatch.delenv(var)
    for key, value in _container_env(docs, container).items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(
    "name",
    [
        "defaults",
        "peer-controller",
        "ingress",
        "plaintext",
        "mtls-shared",
        "mtls-peer-controller",
        "chain-source",
    ],
)
def test_rendered_environment_is_valid_lnsync_configuration(name, monkeypatch):
    """Every container's env passes lnsync's own settings loader (unknown keys are errors there)."""
    docs = render(VALUE_SETS[name])
    checked = set()
    for _, pod in pod_specs(docs):
        for c in pod["containers"]:
            if c["name"] not in LNSYNC_COMPONENTS:
                continue
            _use_container_env(docs, c, monkeypatch)
            try:
                settings = load_settings()
            except ConfigError as exc:
                raise AssertionError(f"{c['name']}: {exc}") from None
            section = getattr(settings, c["name"].replace("-", "_"))
            port = next(p["containerPort"] for p in c["ports"] if p["name"] in ("grpc", "http"))
            assert section.listen == f"0.0.0.0:{port}"
            # Every ready pod of a component, through its headless Service (grpcBalancing).
            for svc, port in (("persistence", 50051), ("lookup", 50052), ("snapshotter", 50053)):
                target = getattr(settings, svc).target
                assert target == f"dns:///lnsync-{svc}-pods.default.svc.cluster.local:{port}"
            if c["name"] == "gateway":
                defaults = yaml.safe_load((CHART / "values.yaml").read_text())
                g = settings.gateway
                assert g.workers == defaults["gateway"]["workers"]
                admin = next(p["containerPort"] for p in c["ports"] if p["name"] == "admin")
                assert g.admin_listen == f"0.0.0.0:{admin}"
                assert g.cors_origins == defaults["gateway"]["corsOrigins"]
                assert (g.cache_s_maxage, g.cache_stale_while_revalidate, g.cache_stale_if_error) == (
                    defaults["gateway"]["cacheSMaxAge"],
                    defaults["gateway"]["cacheStaleWhileRevalidate"],
                    defaults["gateway"]["cacheStaleIfError"],
                )
            assert settings.tls.enabled is VALUE_SETS[name].get("tls.enabled", True)
            checked.add(c["name"])
    expected = {"persistence", "lookup", "snapshotter", "gateway"}
    expected |= {"peer-controller"} if "peer-controller" in name else {"downloader"}
    assert checked == expected


def _role_secret(values: dict[str, Any], role: str) -> str:
    """The Secret the chart mounts for ``role``: tls.existingSecrets', else the generated one."""
    return str(values.get("tls.existingSecrets", {}).get(role, f"lnsync-tls-{role}"))


def _mounted_files(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Path -> (Secret, key) of every file ``container`` sees from a Secret volume."""
    secrets = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
    files: dict[str, tuple[str, str]] = {}
    for mount in container.get("volumeMounts", []):
        secret = secrets.get(mount["name"])
        if secret is None:
            continue
        assert mount.get("readOnly") is True, mount
        for item in secret["items"]:
            files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


def test_chain_source_settings_secret_and_egress(monkeypatch):
    """chain.*: the settings in every container, the RPC password file mounted (read-only, not
    world-readable) exactly where the settings point in the downloaders, persistence and the
    gateway, and an egress rule to the source for those three."""
    values = VALUE_SETS["chain-source"]
    docs = render(values)
    mounted = set()
    for workload, pod in pod_specs(docs):
        for c in pod["containers"]:
            if c["name"] not in LNSYNC_COMPONENTS:
                continue
            _use_container_env(docs, c, monkeypatch)
            chain = load_settings().chain
            assert (chain.source, chain.url, chain.user) == ("bitcoind", values["chain.url"], "rgs")
            files = _mounted_files(pod, c)
            if c["name"] in ("downloader", "persistence", "gateway"):
                assert files[chain.password_file] == ("bitcoind-rpc", "password"), workload
                volume = next(v for v in pod["volumes"] if v["name"] == "chain")
                assert volume["secret"]["defaultMode"] & 0o007 == 0
                mounted.add(c["name"])
            else:
                assert chain.password_file not in files, workload
    assert mounted == {"downloader", "persistence", "gateway"}
    policies = by_kind(docs, "NetworkPolicy")
    rule = {"to": values["chain.egressTo"], "ports": [{"port": 8332, "protocol": "TCP"}]}
    for name in ("downloader", "persistence", "gateway", "lookup", "snapshotter"):
        egress = next(p for key, p in policies.items() if key.endswith(f"-{name}"))["spec"]["egress"]
        assert (rule in egress) == (name in ("downloader", "persistence", "gateway")), name
    assert "LNSYNC_CHAIN__SOURCE" in by_kind(render(), "ConfigMap")["lnsync"]["data"]  # "none" by default


@pytest.mark.parametrize("name", ["defaults", "mtls-shared", "mtls-per-role-secrets", "mtls-peer-controller"])
def test_tls_secret_is_mounted_where_the_settings_point(name, monkeypatch):
    """With tls.enabled (the default) every lnsync container (gRPC services, gateway, downloaders,
    controller) reads its certificate, key and CA from its own role's Secret (or the one shared
    tls.existingSecret), and gRPC readiness runs `lnsync healthcheck` (the kubelet's native probe
    cannot present a client certificate)."""
    values = VALUE_SETS[name]
    docs = render(values, kube_version="1.33.0")
    if values.get("peerController.enabled"):
        cm = by_kind(docs, "ConfigMap")["lnsync-peers"]
        template = spec.load_template(cm["data"][spec.TEMPLATE_KEY])
        listed = spec.parse_peers(cm["data"][spec.PEERS_KEY])
        made = [spec.render(template, p) for p in listed.peers.values()]
        docs = docs + made
    seen = set()
    for workload, pod in pod_specs(docs):
        for c in pod["containers"]:
            if c["name"] not in LNSYNC_COMPONENTS:
                assert not _mounted_files(pod, c), workload
                continue
            _use_container_env(docs, c, monkeypatch)
            tls = load_settings().tls
            files = _mounted_files(pod, c)
            secret_name = values.get("tls.existingSecret") or _role_secret(values, c["name"])
            assert files[tls.ca_file] == (secret_name, "ca.crt"), workload
            assert files[tls.cert_file] == (secret_name, "tls.crt"), workload
            assert files[tls.key_file] == (secret_name, "tls.key"), workload
            assert tls.server_name == values.get("tls.serverName", "lnsync-grpc")
            tls_volume = next(
                v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret_name
            )
            assert tls_volume["secret"]["defaultMode"] & 0o007 == 0, workload  # not world-readable
            if c["name"] != "gateway":
                command = c["readinessProbe"]["exec"]["command"]
                assert command[:2] == ["lnsync", "healthcheck"], workload
                port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
                assert command[3] == f"127.0.0.1:{port}", workload
            seen.add(c["name"])
    expected = {"persistence", "lookup", "snapshotter", "gateway", "downloader"}
    expected |= {"peer-controller"} if values.get("peerController.enabled") else set()
    assert seen == expected
    # Plaintext (opt-in): no Secret volume anywhere, native gRPC probes.
    for workload, pod in pod_specs(render({"tls.enabled": False}, kube_version="1.33.0")):
        for c in pod["containers"]:
            assert not _mounted_files(pod, c), workload


# --- a certificate per role ---------------------------------------------------------------------


def _cert(secret: dict[str, Any], key: str = "tls.crt") -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def _check_role_secrets(secrets: dict[str, dict[str, Any]], roles: tuple[str, ...], server_name: str) -> None:
    """Every role's Secret holds a certificate named for the role (lnsync-<role>, what the servers
    check against rpc.POLICY), signed by the release's CA, with its key and the server name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca = _cert(secrets["lnsync-tls-ca"], "ca.crt")
    for role in roles:
        secret = secrets[f"lnsync-tls-{role}"]
        assert secret["type"] == "kubernetes.io/tls"
        assert secret["data"]["ca.crt"] == secrets["lnsync-tls-ca"]["data"]["ca.crt"], role
        cert = _cert(secret)
        cert.verify_directly_issued_by(ca)
        (cn,) = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert certs.role_of(str(cn.value)) == role
        key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers(), role
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert server_name in names.get_values_for_type(x509.DNSName), role


@pytest.mark.parametrize("name", ["defaults", "mtls-peer-controller"])
def test_install_generates_a_certificate_per_role(name):
    values = VALUE_SETS[name]
    docs = render(values)
    secrets = by_kind(docs, "Secret")
    roles = CHART_ROLES + (("peer-controller",) if values.get("peerController.enabled") else ())
    made = {n for n in secrets if n.startswith("lnsync-tls-")}
    assert made == {"lnsync-tls-ca", *(f"lnsync-tls-{r}" for r in roles)}
    _check_role_secrets(secrets, roles, values.get("tls.serverName", "lnsync-grpc"))
    assert set(secrets["lnsync-tls-ca"]["data"]) == {"ca.crt", "ca.key"}  # mounted nowhere
    for _, pod in pod_specs(docs):
        assert "lnsync-tls-ca" not in json.dumps(pod)
    # The gateway's identity is the gateway role, which may not store gossip.
    gateway = next(pod for _, pod in pod_specs(docs) if component_of(pod) == "gateway")
    (volume,) = [v for v in gateway["volumes"] if v["name"] == "tls"]
    (cn,) = _cert(secrets[volume["secret"]["secretName"]]).subject.rdns
    assert cn.rfc4514_string() == "CN=lnsync-gateway"
    assert "gateway" not in rpc.POLICY["/lnsync.v1.Persistence/Ingest"]
    # `helm test` runs as the operator.
    (test_pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert test_pod["spec"]["volumes"][-1]["secret"]["secretName"] == "lnsync-tls-operator"
    # Nothing generated with Secrets of one's own (per role, or the one shared).
    for own in ("mtls-shared", "mtls-per-role-secrets", "plaintext"):
        assert not [n for n in by_kind(render(VALUE_SETS[own]), "Secret") if n.startswith("lnsync-tls-")]


def test_cert_manager_certificate_per_role():
    issuer = {"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    values = {"tls.certManager.enabled": True, "tls.certManager.issuerRef": issuer}
    docs = render(values)
    assert not [n for n in by_kind(docs, "Secret") if n.startswith("lnsync-tls-")]
    made = by_kind(docs, "Certificate")
    assert set(made) == {f"lnsync-tls-{r}" for r in CHART_ROLES}
    for role in CHART_ROLES:
        spec_ = made[f"lnsync-tls-{role}"]["spec"]
        assert certs.role_of(spec_["commonName"]) == role
        assert spec_["secretName"] == f"lnsync-tls-{role}"  # what the role's pods mount
        assert "lnsync-grpc" in spec_["dnsNames"]
        assert {"server auth", "client auth"} <= set(spec_["usages"])
        assert spec_["issuerRef"] == issuer


def _render_reusing(tmp_path: Any, existing: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Secrets lnsync.tlsGeneratedSecrets makes when the cluster holds ``existing`` (what
    templates/tls.yaml passes it from `lookup`, which `helm template` cannot do): the chart copied,
    with a template that calls the helper with ``existing``."""
    chart = tmp_path / "lnsync"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-reuse.yaml").write_text(
        "{{- $existing := `" + json.dumps(existing) + "` | fromJson }}\n"
        '{{- include "lnsync.tlsGeneratedSecrets" (dict "root" . "existing" $existing) }}\n'
    )
    out = helm("template", "lnsync", str(chart), "--show-only", "templates/zz-reuse.yaml").stdout
    return by_kind([d for d in yaml.safe_load_all(out) if d], "Secret")


def test_upgrade_keeps_the_certificates(tmp_path):
    """What `lookup` finds is kept: an upgrade serves the same CA and certificates; a role's
    certificate that is missing (or from another CA) is made anew, signed by the kept CA."""
    first = {n: s for n, s in by_kind(render(), "Secret").items() if n.startswith("lnsync-tls-")}
    kept = _render_reusing(tmp_path / "a", first)
    assert {n: s["data"] for n, s in kept.items()} == {n: s["data"] for n, s in first.items()}
    partial = {n: s for n, s in first.items() if n != "lnsync-tls-gateway"}
    other_ca = by_kind(render(), "Secret")["lnsync-tls-lookup"]
    partial["lnsync-tls-lookup"] = other_ca
    again = _render_reusing(tmp_path / "b", partial)
    for name in ("lnsync-tls-ca", "lnsync-tls-persistence", "lnsync-tls-downloader"):
        assert again[name]["data"] == first[name]["data"], name
    for name in ("lnsync-tls-gateway", "lnsync-tls-lookup"):
        made_again = again[name]["data"]["tls.crt"]
        assert made_again not in (first[name]["data"]["tls.crt"], other_ca["data"]["tls.crt"])
    _check_role_secrets(again, CHART_ROLES, "lnsync-grpc")
    # Without the CA's key nothing can be signed: everything is made anew.
    fresh = _render_reusing(tmp_path / "c", {n: s for n, s in first.items() if n != "lnsync-tls-ca"})
    assert fresh["lnsync-tls-ca"]["data"]["ca.crt"] != first["lnsync-tls-ca"]["data"]["ca.crt"]
    _check_role_secrets(fresh, CHART_ROLES, "lnsync-grpc")


# --- hardening ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "peer-controller"])
def test_every_pod_is_hardened(name):
    docs = render(VALUE_SETS[name])
    workloads = list(pod_specs(docs))
    assert len(workloads) >= 6
    for workload, pod in workloads:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, workload
        assert psc["runAsUser"] > 0, workload
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        assert pod["automountServiceAccountToken"] is (component_of(pod) == "peer-controller"), workload
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, workload
            assert sc["readOnlyRootFilesystem"] is True, workload
            assert sc["capabilities"] == {"drop": ["ALL"]}, workload
            assert c["resources"]["requests"]["memory"], workload
            assert c["resources"]["limits"]["memory"], workload
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, workload
            assert {"startupProbe", "livenessProbe", "readinessProbe"} <= c.keys(), workload


def component_of(pod: dict[str, Any]) -> str:
    return str(pod["containers"][0]["name"])


def test_readiness_probe_follows_the_cluster_version():
    """Without mTLS (with it, always the exec probe: tests above)."""
    plain = {"tls.enabled": False}
    native = by_kind(render(plain, kube_version="1.29.0"), "Deployment")["lnsync-lookup"]
    exec_ = by_kind(render(plain, kube_version="1.23.0"), "Deployment")["lnsync-lookup"]
    c_native = native["spec"]["template"]["spec"]["containers"][0]
    c_exec = exec_["spec"]["template"]["spec"]["containers"][0]
    assert c_native["readinessProbe"]["grpc"] == {"port": 50052}
    assert c_exec["readinessProbe"]["exec"]["command"][:4] == [
        "lnsync",
        "healthcheck",
        "--target",
        "127.0.0.1:50052",
    ]
    # Liveness never depends on dependencies: only the port.
    assert c_native["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    forced = by_kind(render({**plain, "probes.grpc": "exec"}, kube_version="1.33.0"), "Deployment")
    forced = forced["lnsync-lookup"]
    assert "exec" in forced["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    gateway = by_kind(render(), "Deployment")["lnsync-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_autoscaling_and_disruption_budgets():
    docs = render(kube_version="1.29.0")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"lnsync-lookup", "lnsync-gateway"}
    assert {h["apiVersion"] for h in hpas.values()} == {"autoscaling/v2"}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == {"lnsync-lookup", "lnsync-gateway"}
    assert {p["apiVersion"] for p in pdbs.values()} == {"policy/v1"}
    deployments = by_kind(docs, "Deployment")
    # The HPA owns the replica count of what it scales; the rest is fixed.
    assert "replicas" not in deployments["lnsync-lookup"]["spec"]
    assert deployments["lnsync-persistence"]["spec"]["replicas"] == 1
    # Two snapshotters by default: one generates (a database lock), both serve; rolling updates.
    assert deployments["lnsync-snapshotter"]["spec"]["replicas"] == 2
    assert "strategy" not in deployments["lnsync-snapshotter"]["spec"]
    fixed = by_kind(render(VALUE_SETS["minimal"]), "Deployment")
    assert fixed["lnsync-lookup"]["spec"]["replicas"] == 2


def test_ingress_routes_to_the_gateway():
    docs = render(VALUE_SETS["ingress"])
    ingress = by_kind(docs, "Ingress")["lnsync-gateway"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "lnsync-gateway", "port": {"name": "http"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert not by_kind(render(), "Ingress")
    services = by_kind(docs, "Service")
    assert [n for n, s in services.items() if s["spec"].get("type", "ClusterIP") != "ClusterIP"] == []


def test_only_the_public_port_leaves_the_cluster():
    """The gateway's operator routes (metrics, status page) are on its admin port: the pod has it,
    the ClusterIP Service "-gateway-admin" exposes it, Prometheus is pointed at it; the public
    Service (whatever its type), the Ingress and the NetworkPolicy's open rule have only the public
    port."""
    scrapers = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    values = {
        **VALUE_SETS["ingress"],
        "gateway.service.type": "LoadBalancer",
        "networkPolicy.gatewayFrom": [],
        "networkPolicy.metricsFrom": scrapers,
    }
    docs = render(values)
    gateway = by_kind(docs, "Deployment")["lnsync-gateway"]["spec"]["template"]
    container = gateway["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "admin": 8081}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LNSYNC_GATEWAY__ADMIN_LISTEN"] == "0.0.0.0:8081"
    annotations = gateway["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "8081")
    lookup = by_kind(docs, "Deployment")["lnsync-lookup"]["spec"]["template"]["metadata"]["annotations"]
    assert lookup["prometheus.io/port"] == "9090"
    # Probes stay on the public port (what the load balancer and the kubelet see).
    assert container["readinessProbe"]["httpGet"]["port"] == "http"

    services = by_kind(docs, "Service")
    public, admin = services["lnsync-gateway"], services["lnsync-gateway-admin"]
    assert public["spec"]["type"] == "LoadBalancer"
    assert [(p["name"], p["targetPort"]) for p in public["spec"]["ports"]] == [("http", "http")]
    assert admin["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"], p["targetPort"]) for p in admin["spec"]["ports"]] == [
        ("admin", 8081, "admin")
    ]
    assert admin["spec"]["selector"] == public["spec"]["selector"]
    assert "lnsync/metrics" not in public["metadata"]["labels"]
    assert admin["metadata"]["labels"]["lnsync/metrics"] == "true"
    for name, svc in services.items():
        if name != "lnsync-gateway":
            assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", name

    ingress = by_kind(docs, "Ingress")["lnsync-gateway"]
    backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends and all(b == {"name": "lnsync-gateway", "port": {"name": "http"}} for b in backends)

    policy = by_kind(docs, "NetworkPolicy")["lnsync-gateway"]["spec"]
    open_rules = [r for r in policy["ingress"] if "from" not in r]
    assert [_ports(r) for r in open_rules] == [{8080}]
    admin_rules = [r for r in policy["ingress"] if 8081 in _ports(r)]
    assert admin_rules == [{"from": scrapers, "ports": [{"port": 8081, "protocol": "TCP"}]}]
    # Without metrics scrapers named, nobody outside the pod reaches the admin port.
    closed = by_kind(render({"networkPolicy.metricsFrom": []}), "NetworkPolicy")["lnsync-gateway"]["spec"]
    assert all(8081 not in _ports(r) for r in closed["ingress"])
    # Without metrics, no scrape annotations, and the admin Service is not selected for scraping.
    quiet = render({"metrics.enabled": False})
    templates = [d["spec"]["template"]["metadata"] for d in by_kind(quiet, "Deployment").values()]
    assert not any("prometheus.io/scrape" in t.get("annotations", {}) for t in templates)
    assert "lnsync/metrics" not in by_kind(quiet, "Service")["lnsync-gateway-admin"]["metadata"]["labels"]


def test_admin_port_must_differ_from_the_public_one():
    result = helm("template", "x", str(CHART), *values_args({"gateway.adminPort": 8080}), check=False)
    assert result.returncode != 0 and "gateway.adminPort must differ" in result.stderr


# --- network policies -----------------------------------------------------------------------------


def _ports(rule) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def _selects(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer (podSelector only, same namespace) selects a pod with ``labels``."""
    selector = peer.get("podSelector")
    if selector is None:
        return False
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_network_policies():
    docs = render({"peers": [PEER_A, PEER_V6]})
    policies = {component(p): p["spec"] for p in by_kind(docs, "NetworkPolicy").values()}
    assert set(policies) == {"persistence", "lookup", "snapshotter", "gateway", "downloader", "postgresql"}
    pods = {
        component(d): d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }

    # PostgreSQL: ingress only from persistence, lookup and snapshotter; no egress at all.
    pg = policies["postgresql"]
    assert pg["egress"] == []
    allowed = {
        c
        for c, labels in pods.items()
        if any(_selects(peer, labels) for r in pg["ingress"] for peer in r["from"])
    }
    assert allowed == DB_COMPONENTS
    assert all(_ports(r) == {5432} for r in pg["ingress"])

    for name, policy in policies.items():
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        for rule in policy["ingress"]:
            if name == "gateway":
                assert "from" not in rule
                assert _ports(rule) == {8080}
            else:
                # From release pods only: every peer is a podSelector on this release.
                assert rule["from"]
                assert all(
                    p["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "lnsync"
                    for p in rule["from"]
                )
        if name == "postgresql":
            continue
        assert any(_ports(r) == {53} and "to" not in r for r in policy["egress"]), name  # DNS
        reaches_db = any(
            any(_selects(peer, pods["postgresql"]) for peer in r.get("to", [])) and 5432 in _ports(r)
            for r in policy["egress"]
        )
        assert reaches_db == (name in DB_COMPONENTS), name

    # Downloaders: peers on the peer ports only, never the database port.
    dl = policies["downloader"]
    open_rules = [r for r in dl["egress"] if any("ipBlock" in p for p in r.get("to", []))]
    assert len(open_rules) == 1
    assert _ports(open_rules[0]) == {9735, 19735}
    assert all(5432 not in _ports(r) for r in dl["egress"])
    assert not any(
        "ipBlock" in p
        for n, pol in policies.items()
        if n != "downloader"
        for r in pol["egress"]
        for p in r.get("to", [])
    )


def test_network_policies_allow_each_grpc_call_only_from_its_callers():
    """Least privilege between the components (issue 25): downloaders reach persistence only, the
    gateway lookup and the snapshotter only, nobody but the gateway reaches the snapshotter."""
    docs = render({"peers": [PEER_A]})
    policies = {component(p): p["spec"] for p in by_kind(docs, "NetworkPolicy").values()}
    pods = {
        component(d): d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    grpc = {"persistence": 50051, "lookup": 50052, "snapshotter": 50053, "downloader": 50060}

    def reaches(caller: str, target: str) -> bool:
        out = any(
            any(_selects(peer, pods[target]) for peer in r.get("to", [])) and grpc[target] in _ports(r)
            for r in policies[caller]["egress"]
        )
        inn = any(
            any(_selects(peer, pods[caller]) for peer in r.get("from", [])) and grpc[target] in _ports(r)
            for r in policies[target]["ingress"]
        )
        return out and inn

    matrix = {(a, b) for a in ("gateway", "downloader", "persistence", "lookup", "snapshotter") for b in grpc
              if a != b and reaches(a, b)}  # fmt: skip
    assert matrix == {
        ("gateway", "lookup"),  # also the sync state lookup relays: the gateway never reaches persistence
        ("gateway", "snapshotter"),
        ("downloader", "persistence"),
        ("lookup", "persistence"),
        ("snapshotter", "persistence"),
        ("snapshotter", "lookup"),
    }
    # The same as the roles rpc.POLICY lets call each service: one rule, checked in both places.
    service = {
        "Persistence": "persistence",
        "Lookup": "lookup",
        "Snapshots": "snapshotter",
        "Downloader": "downloader",
    }
    allowed = {
        (role, service[method.split(".")[-1].split("/")[0]])
        for method, roles in rpc.POLICY.items()
        for role in roles
        if role in {a for a, _ in matrix} | {"persistence", "downloader"}
    }
    assert allowed == matrix


def test_network_policy_for_external_database_and_controller():
    docs = render({**VALUE_SETS["external-db-existing-secret"], "peerController.enabled": True})
    policies = {component(p): p["spec"] for p in by_kind(docs, "NetworkPolicy").values()}
    assert "postgresql" not in policies
    db_rule = {"ports": [{"port": 5432, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}]}
    for name, policy in policies.items():
        assert (db_rule in policy["egress"]) == (name in DB_COMPONENTS), name
    controller = policies["peer-controller"]
    assert controller["ingress"] == []
    assert any(_ports(r) == {443, 6443} for r in controller["egress"])


def test_the_controllers_random_peer_set_reaches_the_database_and_any_peer_port():
    """peerController.randomPeers: the controller gets the database URL and the observer setting,
    NetworkPolicy lets it (only it, besides the database users) reach PostgreSQL, and downloaders
    may dial any port (random peers are not all on the configured peers' ports)."""
    off = render(VALUE_SETS["peer-controller"])
    on = render({**VALUE_SETS["peer-controller"], "peerController.randomPeers": 8})
    for docs, random in ((off, False), (on, True)):
        pod = by_kind(docs, "Deployment")["lnsync-peer-controller"]["spec"]["template"]
        env = _env(pod["spec"]["containers"][0])
        assert ("LNSYNC_DATABASE_URL" in env) is random
        assert env.get("LNSYNC_OBSERVER__RANDOM_PEERS") == ("8" if random else None)
        assert env.get("LNSYNC_OBSERVER__MAX_RANDOM_PEERS") == ("8" if random else None)
        policies = {component(p): p["spec"] for p in by_kind(docs, "NetworkPolicy").values()}
        labels = pod["metadata"]["labels"]
        pg_from = [peer for r in policies["postgresql"]["ingress"] for peer in r["from"]]
        assert any(_selects(peer, labels) for peer in pg_from) is random
        assert any(5432 in _ports(r) for r in policies["peer-controller"]["egress"]) is random
        (open_rule,) = [
            r for r in policies["downloader"]["egress"] if any("ipBlock" in p for p in r.get("to", []))
        ]
        assert ("ports" not in open_rule) is random


# --- the peer controller ------------------------------------------------------------------------


def test_peer_controller_replaces_static_downloaders_with_least_rbac():
    docs = render(VALUE_SETS["peer-controller"])
    assert not _downloaders(docs)
    controller = by_kind(docs, "Deployment")["lnsync-peer-controller"]
    assert controller["spec"]["replicas"] == 1
    assert controller["spec"]["strategy"] == {"type": "Recreate"}
    pod = controller["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "lnsync-peer-controller"
    role = by_kind(docs, "Role")["lnsync-peer-controller"]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["lnsync-peers"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        },
    ]
    binding = by_kind(docs, "RoleBinding")["lnsync-peer-controller"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "lnsync-peer-controller", "namespace": "default"}
    ]
    assert binding["roleRef"]["name"] == "lnsync-peer-controller"
    assert not by_kind(docs, "ClusterRole")
    assert not by_kind(docs, "ClusterRoleBinding")
    env = _env(pod["containers"][0])
    assert env["LNSYNC_PEER_CONTROLLER__CONFIGMAP"] == "lnsync-peers"
    assert env["LNSYNC_PEER_CONTROLLER__NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def _images(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {
        name: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for name, d in by_kind(docs, "Deployment").items()
    }


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "lnsync-controller:0.1.0"),
        (
            {"image.repository": "reg.example.com/lnsync", "image.tag": "1.2"},
            "reg.example.com/lnsync-controller:1.2",
        ),
        (
            {"peerController.image.repository": "reg.example.com/ctl", "peerController.image.tag": "7"},
            "reg.example.com/ctl:7",
        ),
        (
            {"peerController.image.repository": "ctl", "peerController.image.digest": "sha256:" + "ab" * 32},
            "ctl@sha256:" + "ab" * 32,
        ),
    ],
    ids=["default", "follows-image", "explicit-tag", "digest"],
)
def test_only_the_peer_controller_runs_the_controller_image(extra, expected):
    """The Kubernetes client is in the Dockerfile's `controller` target only: the controller's pod
    runs it, every other lnsync pod (the downloaders it makes too) the services image."""
    docs = render({**VALUE_SETS["peer-controller"], **extra})
    images = _images(docs)
    assert images.pop("lnsync-peer-controller") == expected
    services = set(images.values())
    assert len(services) == 1
    assert "controller" not in services.pop()
    template = json.loads(by_kind(docs, "ConfigMap")["lnsync-peers"]["data"][spec.TEMPLATE_KEY])
    assert "controller" not in template["spec"]["template"]["spec"]["containers"][0]["image"]
    assert not any("controller" in image for image in _images(render({"peers": [PEER_A]})).values())


@pytest.mark.parametrize(
    "extra",
    [{"tls.enabled": False}, {}, {"tls.existingSecret": "grpc-certs"}],
    ids=["plain", "mtls", "mtls-shared"],
)
def test_controller_builds_the_same_deployment_as_the_chart(extra):
    """One definition: the controller's Deployment for a peer equals the chart's static one, apart
    from who manages it (also with mTLS: the same Secret volume, env and exec probe)."""
    peers = [PEER_A, PEER_DIGITS, PEER_V6]
    static = _downloaders(render({"peers": peers, **extra}))
    cm = by_kind(render({"peerController.enabled": True, "peers": peers, **extra}), "ConfigMap")[
        "lnsync-peers"
    ]
    template = spec.load_template(cm["data"][spec.TEMPLATE_KEY])
    listed = spec.parse_peers(cm["data"][spec.PEERS_KEY])
    assert listed.errors == []
    assert [p.text for p in listed.peers.values()] == peers
    for peer in listed.peers.values():
        made = spec.render(template, peer)
        chart = static[made["metadata"]["name"]]
        assert made["metadata"]["labels"].pop("app.kubernetes.io/managed-by") == spec.MANAGED_BY
        assert chart["metadata"]["labels"].pop("app.kubernetes.io/managed-by") == "Helm"
        assert made["metadata"]["annotations"].pop(spec.HASH_ANNOTATION)
        assert made == chart
    assert template.label_selector == (
        "app.kubernetes.io/component=downloader,app.kubernetes.io/instance=lnsync,"
        "app.kubernetes.io/managed-by=lnsync-peer-controller,app.kubernetes.io/name=lnsync"
    )


# --- bad values fail the schema ---------------------------------------------------------------------

BAD_VALUES = [
    ({"peers": ["not-a-peer"]}, "/peers/0"),
    ({"peers": ["02" + "a" * 64]}, "/peers/0"),  # no host
    ({"peers": [PEER_A, PEER_A]}, "/peers"),  # listed twice
    ({"persistence.port": 70000}, "/persistence/port"),
    ({"gateway.service.port": 0}, "/gateway/service/port"),
    ({"gateway.workers": 0}, "/gateway/workers"),
    ({"gateway.adminPort": 0}, "/gateway/adminPort"),
    ({"gateway.cacheStaleIfError": -1}, "/gateway/cacheStaleIfError"),
    ({"gateway.corsOrigins": ["https://a.example/path"]}, "/gateway/corsOrigins/0"),
    ({"network": "litecoin"}, "/network"),
    ({"logLevel": "verbose"}, "/logLevel"),
    ({"probes.grpc": "sometimes"}, "/probes/grpc"),
    ({"lookup.replicaCount": "two"}, "/lookup/replicaCount"),
    ({"snapshotter.interval": 3600}, "/snapshotter/interval"),
    ({"unknownKey": 1}, "unknownKey"),
    ({"gateway.replicas": 3}, "replicas"),
    ({"postgresql.enabled": False}, "/database"),
    ({"postgresql.auth.password": "p@ss/word"}, "/postgresql/auth/password"),
    ({"database.url": "mysql://x"}, "/database/url"),
    ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
    (
        {"ingress.hosts": [{"host": "Not_A_Host", "paths": [{"path": "/", "pathType": "Prefix"}]}]},
        "/ingress/hosts/0/host",
    ),
    ({"securityContext.runAsUser": 0}, "/securityContext/runAsUser"),
    ({"probes.grpc": "native"}, "/probes/grpc"),  # mTLS is on by default
    ({"tls.certManager.enabled": True}, "/tls/certManager/issuerRef/name"),
    ({"tls.existingSecrets": {"gateway": "x", "admin": "y"}}, "admin"),
    ({"tls.serverName": "Not A Name"}, "/tls/serverName"),
    ({"networkPolicy.gatewayFrom": [{"ipBlock": {}}]}, "/networkPolicy/gatewayFrom/0/ipBlock"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_bad_values_fail_the_schema(values, where):
    result = helm("template", "x", str(CHART), *values_args(values), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr


# --- documentation stays in step with values --------------------------------------------------------


def _load_table_script():
    path = ROOT / "scripts" / "helm_params_table.py"
    module_spec = importlib.util.spec_from_file_location("helm_params_table", path)
    assert module_spec
    assert module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _leaves(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return set().union(*(_leaves(v, f"{prefix}{k}.") for k, v in node.items()))
    return {prefix.rstrip(".")}


def test_every_value_is_documented_and_in_the_schema():
    table = _load_table_script()
    values_text = (CHART / "values.yaml").read_text()
    documented = {key for _, key, _ in table.params(values_text)}
    values = yaml.safe_load(values_text)
    for leaf in _leaves(values):
        parts = leaf.split(".")
        assert any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1)), (
            f"{leaf} has no @param"
        )
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key in documented:
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        table.lookup(values, key)  # every documented key exists
    readme = (CHART / "README.md").read_text()
    assert table.updated_readme(readme, values_text) == readme, "run: python scripts/helm_params_table.py"
    assert "helm install lnsync ./helm/lnsync" in readme
    assert "postgresql.enabled=false" in readme
    assert "database.existingSecret" in readme


def test_scaling_out_headless_services_drain_and_spread():
    docs = render()
    services = by_kind(docs, "Service")
    for svc, port in (("persistence", 50051), ("lookup", 50052), ("snapshotter", 50053)):
        headless = services[f"lnsync-{svc}-pods"]
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["selector"] == services[f"lnsync-{svc}"]["spec"]["selector"]
        assert headless["spec"]["ports"][0]["port"] == port
    for name, pod in pod_specs(docs):
        if name == "lnsync-postgresql":
            continue
        assert pod["terminationGracePeriodSeconds"] == 30, name
        (container,) = pod["containers"]
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"], name
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        assert {c["whenUnsatisfiable"] for c in spread} == {"ScheduleAnyway"}  # soft: one node still works
    plain = render({"grpcBalancing": False, "shutdown.preStopSeconds": 0, "topologySpread.enabled": False})
    assert not [n for n in by_kind(plain, "Service") if n.endswith("-pods")]
    config = by_kind(plain, "ConfigMap")["lnsync"]["data"]
    assert config["LNSYNC_LOOKUP__ADDRESS"] == "lnsync-lookup:50052"
    for name, pod in pod_specs(plain):
        assert "topologySpreadConstraints" not in pod, name
        if name != "lnsync-postgresql":
            assert "lifecycle" not in pod["containers"][0], name
