"""Monitoring as code: the metrics the code registers and the docs' list of them, the chart's
metrics Services, and the Grafana dashboard and alerting rules (promtool checks and unit tests; every
metric they use exists, so a rename cannot silently break an alert)."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import subprocess

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import services
from lnsync import metrics
from tests.helm_tools import CHART, ROOT, by_kind, component, find_helm, helm, render, values_args
from tests.prometheus_tools import find_tool, needs

DOCS = ROOT / "docs" / "monitoring.md"
RULES = CHART / "monitoring" / "lnsync-alerts.yaml"
RULE_TESTS = ROOT / "tests" / "monitoring" / "lnsync-alerts.test.yaml"
DASHBOARD = CHART / "monitoring" / "lnsync-dashboard.json"
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
needs_helm = pytest.mark.skipif(find_helm() is None, reason="helm not installed: make test installs it")
# What each metric type is exposed as, beside its family name.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def registered_metrics() -> dict[str, str]:
    """Every lnsync metric family the services register: {name as documented: type}; counters by
    their ``_total`` name, histograms by their base name. Imports every module under services/."""
    for module in pkgutil.walk_packages(services.__path__, services.__name__ + "."):
        importlib.import_module(module.name)
    out = {}
    for family in REGISTRY.collect():
        if family.name.startswith("lnsync_"):
            name = family.name + "_total" if family.type == "counter" else family.name
            out[name] = family.type
    return out


def exposed_names(families: dict[str, str]) -> set[str]:
    """The sample names a scrape can show (what PromQL selects)."""
    return {
        name.removesuffix("_total") + s if t == "counter" else name + s
        for name, t in families.items()
        for s in SUFFIXES[t]
    }


def documented_metrics() -> dict[str, str]:
    text = DOCS.read_text()
    table = text.split("<!-- metrics:start -->")[1].split("<!-- metrics:end -->")[0]
    return dict(re.findall(r"^\| `(lnsync_[a-z0-9_]+)` \| (\w+) \|", table, re.M))


def test_the_docs_list_exactly_the_registered_metrics():
    assert documented_metrics() == registered_metrics()


@pytest.mark.parametrize("name", sorted(registered_metrics()))
def test_metric_names_follow_the_convention(name):
    kind = registered_metrics()[name]
    assert re.fullmatch(r"lnsync_[a-z][a-z0-9_]*", name)
    service = name.removeprefix("lnsync_").split("_")[0]
    assert service in {
        "build",
        "downloader",
        "persistence",
        "observer",
        "lookup",
        "snapshotter",
        "gateway",
        "peer",
    }
    assert name.endswith("_total") == (kind == "counter")
    if "timestamp" in name or "reference_time" in name or "until" in name:
        assert name.endswith("_seconds"), "unix times are ..._seconds"


def test_each_service_registers_its_metrics_in_its_metrics_py():
    """One place per service for its metrics (docs/architecture.md, "Where does X live")."""
    metric_types = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
    for path in sorted((ROOT / "services").rglob("*.py")):
        if path.name == "metrics.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus_client"):
                assert not {a.name for a in node.names} & metric_types, (
                    f"{path}: metrics belong in metrics.py"
                )


def test_build_info_names_version_python_and_service():
    metrics.set_build_info("lookup")
    value = REGISTRY.get_sample_value(
        "lnsync_build_info",
        {"version": metrics.__version__, "python": metrics.platform.python_version(), "service": "lookup"},
    )
    assert value == 1


@needs_helm
def test_every_component_has_a_metrics_service():
    docs = render({"peerController.enabled": True})
    scraped = {
        component(s)
        for s in by_kind(docs, "Service").values()
        if s["metadata"]["labels"].get("lnsync/metrics") == "true"
        and any(p["name"] in ("metrics", "admin") for p in s["spec"]["ports"])  # the gateway's: admin
    }
    workloads = {component(d) for d in by_kind(docs, "Deployment").values()}
    assert workloads == {"persistence", "lookup", "snapshotter", "gateway", "peer-controller"}
    assert scraped == workloads | {"downloader"}  # the controller's downloaders too
    controller = by_kind(docs, "Service")["lnsync-peer-controller"]
    assert controller["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod = by_kind(docs, "Deployment")["lnsync-peer-controller"]["spec"]["template"]["spec"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in pod["containers"][0]["ports"]
    off = render({"peerController.enabled": True, "metrics.enabled": False})
    assert "lnsync-peer-controller" not in by_kind(off, "Service")


# --- alerting rules and dashboard ------------------------------------------------------------------


needs_promtool = needs("promtool")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = find_tool("promtool")
    assert binary
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


@needs_promtool
def test_rules_pass_promtool_check_and_their_unit_tests():
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout
    unit = promtool("test", "rules", str(RULE_TESTS))
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_every_alert_has_a_unit_test():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    alerts = {r["alert"] for r in rules()}
    assert alerts == tested == quiet  # each fires in a test, and each stays quiet in one
    assert {
        "LnsyncSnapshotGenerationStale",
        "LnsyncPeerSilent",
        "LnsyncNoPeerSynced",
        "LnsyncGatewayErrors",
        "LnsyncGatewayRateLimited",
        "LnsyncIngestBacklogGrowing",
        "LnsyncPostgresUnreachable",
        "LnsyncSnapshotProofFailed",
    } <= alerts
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\blnsync_[a-z0-9_]+", expr))


def test_every_metric_in_the_rules_and_dashboard_exists():
    exposed = exposed_names(registered_metrics())
    for where, exprs in (("alert", [r["expr"] for r in rules()]), ("dashboard", dashboard_exprs())):
        for expr in exprs:
            assert _metrics_in(expr), f"{where} expression uses no lnsync metric: {expr}"
            assert _metrics_in(expr) <= exposed, f"{where}: {_metrics_in(expr) - exposed} not registered"


def test_dashboard_covers_what_operators_watch():
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    used = set().union(*map(_metrics_in, dashboard_exprs()))
    assert {
        "lnsync_gateway_requests_total",  # rate and errors by route
        "lnsync_gateway_request_seconds_bucket",  # latency by route
        "lnsync_snapshotter_reference_time_seconds",  # generation age
        "lnsync_downloader_connected",
        "lnsync_downloader_last_message_timestamp_seconds",
        "lnsync_downloader_messages_received_total",
        "lnsync_persistence_queued_messages",  # backlog
        "lnsync_downloader_unacked_messages",
        "lnsync_persistence_batch_seconds_bucket",  # commit latency
        "lnsync_lookup_compute_seconds_bucket",
        "lnsync_observer_t50_seconds",
        "lnsync_observer_t95_seconds",
        "lnsync_observer_redundancy_mean",
    } <= used
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace"}


@needs_helm
def test_chart_ships_dashboard_and_rules_only_when_enabled():
    api = ("--api-versions", PROMETHEUS_RULE_API)
    off = render({}, *api)
    assert "lnsync-dashboard" not in by_kind(off, "ConfigMap")
    assert not by_kind(off, "PrometheusRule")
    on = render(
        {
            "monitoring.dashboard.enabled": True,
            "monitoring.dashboard.annotations": {"grafana_folder": "lnsync"},
            "monitoring.prometheusRule.enabled": True,
            "monitoring.prometheusRule.labels": {"release": "prom"},
        },
        *api,
        kube_version="1.33.0",
    )
    board = by_kind(on, "ConfigMap")["lnsync-dashboard"]
    kubernetes_validate.validate(board, "1.33.0", strict=True)
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "lnsync"}
    assert json.loads(board["data"]["lnsync-dashboard.json"]) == json.loads(DASHBOARD.read_text())
    (rule,) = by_kind(on, "PrometheusRule").values()
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())  # the same file, not a copy
    # Without the Prometheus operator's API, asking for the rules fails with the reason.
    result = helm(
        "template", "x", str(CHART), *values_args({"monitoring.prometheusRule.enabled": True}), check=False
    )
    assert result.returncode != 0
    assert "monitoring.coreos.com/v1 PrometheusRule" in result.stderr


@needs_helm
@needs_promtool
def test_rendered_prometheus_rule_passes_promtool(tmp_path):
    docs = render({"monitoring.prometheusRule.enabled": True}, "--api-versions", PROMETHEUS_RULE_API)
    (rule,) = by_kind(docs, "PrometheusRule").values()
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    check = promtool("check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr
