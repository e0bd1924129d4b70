"""`lnsync up`'s progress view keeps reporting after a poll fails (it used to die silently)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from lnsync.commands import up
from lnsync.statusview import RunInfo

SYNCED = {
    "gateway": "http://127.0.0.1:1",
    "ready": True,
    "sync": {"fully_synced": True},
    "graph": {"channels": 3, "nodes": 2, "channel_updates_stored": 4, "last_gossip_at": 90},
    "snapshots": {"generation": 7, "reference_time": 100, "generated_at": 100, "blobs": []},
    "downloaders": [],
}


# A status the peer lines cannot be rendered from (no generated_at): milestones must still show.
ODD = {**SYNCED, "snapshots": {"generation": 7, "reference_time": 100}, "downloaders": [{"peer": "x"}]}


@pytest.mark.parametrize("status", [SYNCED, ODD], ids=["complete", "unrenderable"])
async def test_a_failed_poll_is_reported_once_and_polling_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: dict[str, Any],
) -> None:
    answers: list[Any] = [RuntimeError("odd answer"), RuntimeError("odd again"), status]

    async def collect(run: RunInfo) -> dict[str, Any]:
        answer = answers.pop(0) if answers else status
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(up, "collect", collect)
    monkeypatch.setattr(up, "PROGRESS_EVERY", 0.01)
    progress = up.Progress(RunInfo("http://127.0.0.1:1"), tmp_path, live=None)
    with caplog.at_level(logging.INFO, logger=up.log.name):
        watcher = asyncio.create_task(progress.watch())
        for _ in range(200):
            if progress.ready:
                break
            await asyncio.sleep(0.01)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert progress.ready
    messages = [r.getMessage() for r in caplog.records]
    assert sum("could not read the stack's status" in m for m in messages) == 1
    assert any("first full sync done: 3 channels, 2 nodes" in m for m in messages)
    assert any(m.startswith("lnsync is ready") for m in messages)
