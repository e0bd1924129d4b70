"""`lnsync healthcheck`, the exec readiness probe: a real gRPC server with the standard health
service, and the command run as the kubelet would run it (a process, judged by its exit code)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from lnsync import rpc
from tests.conftest import free_port

SERVICE = "lnsync.v1.Lookup"


async def healthcheck(*args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lnsync",
        "healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.fixture
async def server():
    """A gRPC server with health (NOT_SERVING at first, like every lnsync service)."""
    port = free_port()
    srv = rpc.make_server()
    health = rpc.add_health_and_reflection(srv, [SERVICE])
    await rpc.set_serving(health, [SERVICE], False)
    assert srv.add_insecure_port(f"127.0.0.1:{port}") == port
    await srv.start()
    yield f"127.0.0.1:{port}", health
    await srv.stop(0)


async def test_exit_code_follows_serving_status(server):
    target, health = server
    code, err = await healthcheck("--target", target)
    assert code == 1
    assert "not SERVING" in err
    await rpc.set_serving(health, [SERVICE], True)
    assert await healthcheck("--target", target) == (0, "")
    assert (await healthcheck("--target", target, "--service", SERVICE))[0] == 0
    # A service the server does not know is not serving.
    code, err = await healthcheck("--target", target, "--service", "lnsync.v1.Nope")
    assert code == 1
    assert "lnsync.v1.Nope" in err
    await rpc.set_serving(health, [SERVICE], False)
    assert (await healthcheck("--target", target, "--service", SERVICE))[0] == 1


async def test_nothing_listening_fails_fast():
    started = time.monotonic()
    code, err = await healthcheck("--target", f"127.0.0.1:{free_port()}", "--timeout", "3")
    assert code == 1
    assert "not SERVING" in err
    assert time.monotonic() - started < 10  # within the probe's timeout, not hanging


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "no-port"], "is not host:port"),
        (["--target", "127.0.0.1:1", "--timeout", "0"], "--timeout"),
    ],
)
async def test_bad_arguments_exit_2(args, message):
    code, err = await healthcheck(*args)
    assert code == 2
    assert message in err
