"""The peer controller when the Kubernetes API cannot be reached: it stays up, reports
NOT_SERVING, retries with backoff, and still stops cleanly on SIGTERM (no crash loop)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lnsync import rpc
from tests.conftest import free_port


async def _health(target: str) -> int:
    async with rpc.channel(target) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


def test_unreachable_api_server_is_retried_not_fatal(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "x"}}],
                "current-context": "c",
            }
        )
    )
    target = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LNSYNC_", "KUBERNETES_"))}
    env |= {"KUBECONFIG": str(kubeconfig), "LNSYNC_PEER_CONTROLLER__LISTEN": target}
    log = tmp_path / "log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lnsync", "serve", "peer-controller"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while "cannot reach the Kubernetes API" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1.0)
        assert proc.poll() is None  # still running, retrying
        assert asyncio.run(_health(target)) == rpc.NOT_SERVING  # it answers, and says not ready
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
