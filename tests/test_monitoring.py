"""Monitoring as code: the metrics the code registers, the docs' list of them, and the chart's
metrics Services."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from prometheus_client import REGISTRY

import services
from lnsync import metrics
from tests.helm_tools import ROOT, by_kind, component, find_helm, render

DOCS = ROOT / "docs" / "monitoring.md"
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


def test_build_info_names_version_python_and_service():
    metrics.set_build_info("lookup")
    value = REGISTRY.get_sample_value(
        "lnsync_build_info",
        {"version": metrics.__version__, "python": metrics.platform.python_version(), "service": "lookup"},
    )
    assert value == 1


@pytest.mark.skipif(find_helm() is None, reason="helm not installed: make test installs it")
def test_every_component_has_a_metrics_service():
    docs = render({"peerController.enabled": True})
    scraped = {
        component(s)
        for s in by_kind(docs, "Service").values()
        if s["metadata"]["labels"].get("lnsync/metrics") == "true"
        and any(p["name"] in ("metrics", "http") for p in s["spec"]["ports"])
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
