"""Before the first full graph sync the gateway says so: 503 with Retry-After, never a 5xx of its own.

Real persistence and lookup processes with an empty store and no peer reported; no snapshotter at
all (so the gateway holds no generation). The gateway is given no way to persistence (issue 25: it
reaches lookup and the snapshotter only): the sync state it reports comes through lookup.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.gateway.conftest import get, wait_up
from tests.stack import Stack

pytestmark = pytest.mark.slow


async def test_503_until_the_first_sync_and_generation(database_url: str, short_tmp: Path) -> None:
    stack = Stack(database_url, short_tmp)
    try:
        await stack.start_healthy("persistence")
        await stack.start_healthy("lookup")
        # Persistence's address for the gateway is nothing: it must not need it.
        stack.start("gateway", env={"LNSYNC_PERSISTENCE__ADDRESS": "127.0.0.1:1"})
        base = f"http://{stack.target('gateway')}"
        await wait_up(base)
        for path in ("/delta/0", "/delta/v2/1700000000"):
            status, h, body = await get(base + path)
            assert status == 503, (path, status, body)
            assert int(h["Retry-After"]) > 0
            assert body == b"lookup: the first full graph sync is not complete yet\n"
        for path in ("/snapshot/0", "/snapshot/v2/1700000000"):
            status, h, body = await get(base + path)
            assert status == 503 and int(h["Retry-After"]) > 0, (path, status)
            assert b"snapshot" in body and b"127.0.0.1" not in body
        status, h, body = await get(base + "/readyz")
        assert status == 503 and int(h["Retry-After"]) > 0
        ready = json.loads(body)
        assert not ready["ready"] and len(ready["problems"]) == 2 and ready["degraded"] == ["snapshotter"]
        admin = f"http://{stack.target('gateway-admin')}"
        status, _, body = await get(admin + "/api/status")
        facts = json.loads(body)
        assert status == 200
        assert facts["services"] == {"lookup": "serving", "snapshotter": "down", "persistence": "serving"}
        assert facts["sync"]["fully_synced"] is False and facts["snapshots"]["generation"] is None
        assert facts["sync"]["peers"] == [] and "error" not in facts["sync"]  # persistence's, via lookup
        assert (await get(base + "/healthz"))[0] == 200
        status, h, page = await get(admin + "/")
        assert status == 200 and h["Content-Type"].startswith("text/html") and b"api/status" in page
    finally:
        stack.close()


async def test_status_shows_the_chain_source(database_url: str, short_tmp: Path) -> None:
    """With chain.source set, /api/status shows whether the chain source answers, and /readyz lists
    it as degraded (not a readiness problem: only new channels wait for it), without its URL."""
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    stack = Stack(
        database_url, short_tmp, extra_env={"LNSYNC_CHAIN__SOURCE": "esplora", "LNSYNC_CHAIN__URL": url}
    )
    try:
        await stack.start_healthy("persistence")
        stack.start("gateway")
        base = f"http://{stack.target('gateway')}"
        await wait_up(base)
        admin = f"http://{stack.target('gateway-admin')}"
        status, _, body = await get(admin + "/api/status")
        assert status == 200 and json.loads(body)["chain"] == {"source": "esplora", "state": "unavailable"}
        _, _, body = await get(base + "/readyz")
        assert "chain" in json.loads(body)["degraded"] and url.encode() not in body
    finally:
        stack.close()
