"""The real Prometheus server scrapes running services and evaluates the shipped alerting rules.

Persistence, lookup and the snapshotter run as real processes with ``metrics_listen``; Prometheus
(Debian's build, see scripts/install-prometheus.sh) scrapes them every second with
helm/lnsync/monitoring/lnsync-alerts.yaml loaded. Every target is up, every service exports
``lnsync_build_info``, the metrics the alerts read are there with the values the services hold,
every rule evaluates without error, and no alert fires on a healthy stack.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from lnsync import __version__
from tests.conftest import free_port
from tests.helm_tools import CHART
from tests.prometheus_tools import find_tool, needs
from tests.stack import Stack

pytestmark = [pytest.mark.slow, needs("prometheus")]
SERVICES = ("persistence", "lookup", "snapshotter")
RULES = CHART / "monitoring" / "lnsync-alerts.yaml"


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def start_prometheus(config: Path, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    with (workdir / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            [
                str(find_tool("prometheus")),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)


async def test_prometheus_scrapes_the_services_and_evaluates_the_rules(
    database_url: str, short_tmp: Path
) -> None:
    metrics = {name: free_port() for name in SERVICES}
    stack = Stack(
        database_url,
        short_tmp,
        extra_env={
            "LNSYNC_SNAPSHOTTER__INTERVAL": "10800",
            **{f"LNSYNC_{n.upper()}__METRICS_LISTEN": f"127.0.0.1:{p}" for n, p in metrics.items()},
        },
    )
    port = free_port()
    config = short_tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": name,
                        "static_configs": [{"targets": [f"127.0.0.1:{p}"], "labels": {"namespace": "test"}}],
                    }
                    for name, p in metrics.items()
                ],
            }
        )
    )
    prometheus = start_prometheus(config, short_tmp, port)
    try:
        for name in SERVICES:
            await stack.start_healthy(name)

        def all_up() -> bool:
            targets = api(port, "targets")["activeTargets"]
            return len(targets) == 3 and all(t["health"] == "up" for t in targets)

        await until(all_up, 60, "every target up")

        def query(expr: str) -> dict[str, float]:
            result = api(port, "query", query=expr)["result"]
            return {r["metric"].get("job", ""): float(r["value"][1]) for r in result}

        def scraped() -> bool:
            return len(query("lnsync_build_info")) == 3 and query("lnsync_persistence_database_up") == {
                "persistence": 1.0
            }

        await until(scraped, 30, "build info of every service and the database up")
        info = api(port, "query", query="lnsync_build_info")["result"]
        assert {(r["metric"]["job"], r["metric"]["service"], r["metric"]["version"]) for r in info} == {
            (name, name, __version__) for name in SERVICES
        }
        assert query("lnsync_snapshotter_interval_seconds") == {"snapshotter": 10800.0}
        assert query("lnsync_snapshotter_reference_time_seconds") == {"snapshotter": 0.0}  # none yet

        def evaluated() -> list[dict[str, Any]]:
            rules = [r for g in api(port, "rules")["groups"] for r in g["rules"]]
            done = all(r.get("lastEvaluation", "").startswith("2") for r in rules)  # not 0001-01-01
            return rules if rules and done and all(r["health"] == "ok" for r in rules) else []

        rules = await until(evaluated, 30, "every rule evaluated")
        expected = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
        assert {r["name"] for r in rules} == expected
        for rule in rules:
            assert rule["health"] == "ok", rule  # the expression evaluates against real series
            assert rule["state"] == "inactive", rule  # nothing is wrong with a healthy stack
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(10)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()
        stack.close()
