"""Helpers shared by the chart tests and the real-API-server tier: find helm, render the chart."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "lnsync"
K8S_BIN = Path(os.environ.get("LNSYNC_K8S_BIN", Path.home() / ".cache" / "lnsync" / "k8s"))

# Real, well-formed keys (the three default peers are public mainnet nodes); the others are made up.
PEER_A = "035e4ff418fc8b5554c5d9eea66396c227bd429a3251c8cbc711002ba215bfc226@170.75.163.209:9735"
PEER_B = "03864ef025fde8fb587d989186ce6a4a186895ee44a926bfc370e2c366597a3f8f@3.33.236.230:9735"
PEER_C = "02f1a8c87607f415c8f22c00593002775941dea48869ce23096af27b0cfdcc0b69@52.13.118.208:9735"
# An id made only of digits (must stay a string label), a DNS name and IPv6 with a non-default port.
PEER_DIGITS = "02" + "1234567890" * 6 + "1234" + "@node.example.org:9736"
PEER_V6 = "03" + "ab" * 32 + "@[2001:db8::7]:19735"


def find_helm() -> str | None:
    """$LNSYNC_HELM, then the one `make test` installs into .venv/bin, then PATH."""
    for candidate in (os.environ.get("LNSYNC_HELM"), str(ROOT / ".venv" / "bin" / "helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("helm")


def helm(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    binary = find_helm()
    assert binary, "helm not found: run scripts/install-helm.sh .venv/bin (make test does)"
    return subprocess.run(
        [binary, *args],
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def values_args(values: dict[str, Any]) -> list[str]:
    """--set-json arguments for a dict of dotted keys (exact types, lists replace wholesale)."""
    import json

    args: list[str] = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def render(
    values: dict[str, Any] | None = None,
    *extra: str,
    release: str = "lnsync",
    kube_version: str | None = None,
) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), *values_args(values or {}), *extra]
    if kube_version:
        args += ["--kube-version", kube_version]
    out = helm(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment and StatefulSet."""
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"].get("app.kubernetes.io/component", ""))
