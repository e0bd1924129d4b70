"""The CLI as a user meets it: help, clear start-up errors, and `lnsync up`'s process life cycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port

KEY = "02" + "11" * 32


def lnsync(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lnsync", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
    env.update(extra)
    return env


def test_help_lists_commands() -> None:
    out = lnsync("--help", env=clean_env())
    assert out.returncode == 0
    for cmd in ("up", "serve", "status"):
        assert cmd in out.stdout


def test_a_command_imports_its_own_module_only() -> None:
    """`lnsync healthcheck` is the readiness probe of every pod on Kubernetes < 1.24: it must not
    pay for importing every other command (the gateway's aiohttp, the generator, the supervisor)."""
    probe = (
        "import sys; from lnsync import cli; cli.main(['healthcheck', '--target', '127.0.0.1:1', "
        "'--timeout', '0.2']) ; "
        "print(sorted(m for m in sys.modules if m.startswith(('lnsync.commands.', 'aiohttp', 'lnsync.gen'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    loaded = out.stdout.strip().splitlines()[-1]
    assert "lnsync.commands.healthcheck" in loaded
    for other in (
        "lnsync.commands.up",
        "lnsync.commands.gen",
        "lnsync.commands.observe",
        "aiohttp",
        "lnsync.gen",
    ):
        assert f"'{other}'" not in loaded, loaded


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["up", "--peer", "zz@1.2.3.4:9735"], {}, "is not a 33-byte compressed public key"),
        (["up", "--network", "dogecoin"], {}, "unknown network 'dogecoin'"),
        (["serve", "lookup"], {"LNSYNC_LOOKUP__LISTN": "x"}, "LNSYNC_LOOKUP__LISTN"),
        (["serve", "lookup"], {}, "database_url is not set"),
        (
            ["up", "--database-url", "postgresql://nobody@127.0.0.1:1/none"],
            {},
            "cannot connect to the database",
        ),
    ],
)
def test_config_errors_are_one_clear_line(args: list[str], env: dict[str, str], fragment: str) -> None:
    out = lnsync(*args, env=clean_env(**env))
    assert out.returncode == 2, out.stderr
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
def test_up_starts_every_service_healthy_and_stops_cleanly(short_tmp: Path) -> None:
    ports = {
        name: free_port()
        for name in ("persistence", "lookup", "snapshotter", "downloader", "gateway", "gateway-admin")
    }
    env = clean_env(
        LNSYNC_PERSISTENCE__LISTEN=f"127.0.0.1:{ports['persistence']}",
        LNSYNC_LOOKUP__LISTEN=f"127.0.0.1:{ports['lookup']}",
        LNSYNC_SNAPSHOTTER__LISTEN=f"127.0.0.1:{ports['snapshotter']}",
        LNSYNC_DOWNLOADER__LISTEN=f"127.0.0.1:{ports['downloader']}",
    )
    data = short_tmp / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lnsync", "up", "--data-dir", str(data), "--network", "regtest",
         "--peer", f"{KEY}@127.0.0.1:1", "--http-port", str(ports["gateway"]),
         "--admin-port", str(ports["gateway-admin"])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "all services healthy" in line:
                break
        assert any("all services healthy" in ln for ln in lines), "".join(lines)
        children = _descendants(proc.pid)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for service in ("persistence", "lookup", "snapshotter", "downloader", "gateway"):
            assert f"serve {service}" in names
        assert any("postgres" in c.name() for c in psutil.process_iter()), "PostgreSQL is running"
        # The services answer the standard gRPC health protocol.
        # (it finds the gRPC certificates `up` made through the data directory's run file)
        status = lnsync("status", "--json", "--data-dir", str(data), env=env)
        assert '"persistence": "serving"' in status.stdout, status.stdout + status.stderr
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines)
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, f"orphan: {child.cmdline()}"
    assert not (data / "pg" / "data" / "postmaster.pid").exists(), "PostgreSQL was stopped"
    assert "PostgreSQL stopped" in "".join(lines)
