"""The gateway under hostile HTTP clients (issue 25, findings 4 and 5): the production gateway
process (``lnsync serve gateway``, one worker) on loopback, raw sockets as the attacker used.

The gateway needs no upstream to hold connections: with none reachable it answers 503 to wallet
routes and 200 to ``/healthz``, which is all these tests ask of it.
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.stack import ServiceProcess, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
HEADER_TIMEOUT = 2.0
MAX_CONNECTIONS = 40
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: lnsync\r\n\r\n"


@pytest.fixture
def gateway(short_tmp: Path) -> Iterator[tuple[Stack, ServiceProcess]]:
    stack = Stack(
        "postgresql://unused@127.0.0.1:1/unused",
        short_tmp,
        ports={"persistence": 1, "lookup": 1, "snapshotter": 1},
        extra_env={
            "LNSYNC_GATEWAY__WORKERS": "1",
            "LNSYNC_GATEWAY__HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "LNSYNC_GATEWAY__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "LNSYNC_LOG_LEVEL": "info",
        },
    )
    process = stack.start("gateway")
    try:
        _wait_answering(stack.ports["gateway"])
        yield stack, process
    finally:
        stack.close()


def _wait_answering(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _answer(port, REQUEST).startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not start")


def _answer(port: int, data: bytes, shut_write: bool = False, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        return _read_all(s)


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            return out + b"<timeout>"
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def test_half_sent_and_dripped_requests_are_closed_within_the_header_timeout(
    gateway: tuple[Stack, ServiceProcess],
) -> None:
    """Finding 4: connections that sent half a request stayed open (one for >= 170 s)."""
    stack, _ = gateway
    port = stack.ports["gateway"]

    def half_open() -> float:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + 8) as s:
            s.sendall(b"GET /snapshot/v2/0 HTTP/1.1\r\nHost: a\r\n")  # and never the blank line
            assert b"<timeout>" not in _read_all(s)
        return time.monotonic() - started

    def dripping() -> float:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + 8) as s:
            try:
                for byte in REQUEST[:-2]:
                    s.sendall(bytes([byte]))
                    time.sleep(0.25)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert b"<timeout>" not in _read_all(s)
        return time.monotonic() - started

    with ThreadPoolExecutor(31) as pool:
        futures = [pool.submit(half_open) for _ in range(30)] + [pool.submit(dripping)]
        held = [f.result() for f in futures]
    assert max(held) < HEADER_TIMEOUT + 3, held
    assert _answer(port, REQUEST).startswith(b"HTTP/1.1 200")


def test_connections_over_the_cap_are_answered_503_and_others_recover(
    gateway: tuple[Stack, ServiceProcess],
) -> None:
    """Finding 4: with no cap, idle connections used up the file limit (1,024) and every new
    client failed. Now the connection past ``gateway.max_connections`` gets a 503 at once, the file
    limit is raised to the hard limit, and clients are served again as soon as the idle ones go."""
    stack, process = gateway
    port = stack.ports["gateway"]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)
        refused = _answer(port, REQUEST)
        assert refused.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in refused, refused
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)
    assert _answer(port, REQUEST).startswith(b"HTTP/1.1 200")
    workers = Path(f"/proc/{process.proc.pid}/task/{process.proc.pid}/children").read_text().split()
    assert workers
    soft, hard = _open_files_limit(int(workers[0]))
    assert soft == hard, (soft, hard)


def _open_files_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open-files limit")


def test_a_client_that_half_closes_after_its_request_gets_the_answer(
    gateway: tuple[Stack, ServiceProcess],
) -> None:
    """Minor finding: ``shutdown(SHUT_WR)`` after the request got no answer."""
    stack, _ = gateway
    port = stack.ports["gateway"]
    for _ in range(5):
        answer = _answer(port, REQUEST, shut_write=True)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n"), answer
    # A half-close before the request is complete: closed, within the header timeout.
    started = time.monotonic()
    assert _answer(port, REQUEST[:10], shut_write=True) == b""
    assert time.monotonic() - started < HEADER_TIMEOUT + 1


def test_malformed_requests_do_not_flood_the_log(gateway: tuple[Stack, ServiceProcess]) -> None:
    """Finding 5: each malformed request logged an ERROR with a traceback (~540 bytes for 40)."""
    stack, process = gateway
    port = stack.ports["gateway"]
    before = len(process.log())
    malformed = [
        b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n",
    ]
    sent = 0
    for i in range(400):
        answer = _answer(port, malformed[i % len(malformed)])
        assert answer[:9] in (b"HTTP/1.0 ", b"HTTP/1.1 ") and answer[9:10] == b"4", answer[:100]
        sent += len(malformed[i % len(malformed)])
    time.sleep(0.5)
    logged = process.log()[before:]
    assert "Traceback" not in logged and "ERROR" not in logged, logged[:2000]
    # One summary line per 10 s at most: this run takes a few seconds.
    assert logged.count("malformed HTTP request") <= 2, logged
    assert len(logged) < 1000, (len(logged), sent)
    assert _answer(port, REQUEST).startswith(b"HTTP/1.1 200")


def test_kill9_of_the_gateway_leaves_no_metrics_folder(short_tmp: Path) -> None:
    """Minor finding: kill -9 of the gateway's parent leaked its /tmp metrics folder; the next
    gateway removes the folders of gateways that no longer run."""
    port = free_port()
    stack = Stack(
        "postgresql://unused@127.0.0.1:1/unused",
        short_tmp,
        ports={"persistence": 1, "lookup": 1, "snapshotter": 1, "gateway": port},
        extra_env={"LNSYNC_GATEWAY__WORKERS": "1"},
    )
    tmp = Path(tempfile.gettempdir())
    try:
        first = stack.start("gateway")
        _wait_answering(port)
        mine = list(tmp.glob(f"lnsync-gateway-metrics-{first.proc.pid}-*"))
        assert len(mine) == 1
        first.kill()
        assert mine[0].exists()  # nothing ran to remove it
        time.sleep(1.0)  # the orphaned worker follows its parent (PR_SET_PDEATHSIG)
        second = stack.start("gateway")
        _wait_answering(port)
        assert not mine[0].exists()
        assert len(list(tmp.glob(f"lnsync-gateway-metrics-{second.proc.pid}-*"))) == 1
    finally:
        stack.close()
