"""`lnsync up --demo` as a newcomer runs it: a real `lnsync up` process with its embedded PostgreSQL,
the demo peer and every service, checked over HTTP with the real LDK client; stopped with SIGTERM;
then started again on the same data directory, which must resume instead of downloading the graph again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import psutil
import pytest

from lnsync.pg import LocalPostgres
from lnsync.rgs.decode import decode
from tests.conftest import free_port
from tests.ldk import LdkRgsClient
from tests.test_cli import clean_env

CHANNELS, DIRECTIONS, NODES = 934, 1868, 50  # data/cln2026_top50_resigned_mainnet.bin


class DemoRun:
    """One `lnsync up --demo`; ``data`` is where it keeps its data, given with --data-dir if
    ``name_dir``, else found by `lnsync up` (and `lnsync status`) from LNSYNC_DATA_DIR."""

    def __init__(
        self, data: Path, env: dict[str, str], ports: tuple[int, int], log: Path, *, name_dir: bool
    ) -> None:
        http_port, admin_port = ports
        self.data = data
        self.env = env
        self.name_dir = name_dir
        self.base = f"http://127.0.0.1:{http_port}"
        self.log_path = log
        where = ["--data-dir", str(data)] if name_dir else []
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lnsync", "up", "--demo", *where, "--http-port", str(http_port),
                 "--admin-port", str(admin_port)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, {}, b""

    def wait(self, what: str, check: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"lnsync up exited early:\n{self.log()[-4000:]}"
            if check():  # type: ignore[operator]
                return
            time.sleep(0.5)
        pytest.fail(f"{what} not within {timeout:.0f} s:\n{self.log()[-4000:]}")

    def status(self) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-m", "lnsync", "status", "--json",
             *(["--data-dir", str(self.data)] if self.name_dir else [])],
            env=self.env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return dict(json.loads(out.stdout))

    def metric(self, metrics_port: int, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
        return sum(values)

    def stop(self) -> None:
        """SIGTERM, then every process it started must be gone."""
        children = psutil.Process(self.proc.pid).children(recursive=True)
        assert len(children) >= 7, [c.cmdline() for c in children]  # demo peer, 5 services, postgres
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, self.log()[-4000:]
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        assert not (self.data / "pg" / "data" / "postmaster.pid").exists(), "PostgreSQL was stopped"
        assert not (self.data / "up.json").exists()

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait(10)


def ready(run: DemoRun) -> bool:
    return run.get("/readyz")[0] == 200


async def store_counts(pg_root: Path) -> dict[str, int]:
    """Counts and invariants of the store, read with PostgreSQL started on the stopped stack's data."""
    pg = LocalPostgres(pg_root)
    await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(pg.url())
        try:
            return {
                "channels": await conn.fetchval("SELECT count(*) FROM channel_announcements"),
                "directions": await conn.fetchval("SELECT count(*) FROM channel_directions"),
                "nodes": await conn.fetchval("SELECT count(*) FROM nodes"),
                "updates": await conn.fetchval("SELECT count(*) FROM channel_updates"),
                # every direction's current state is its newest stored update
                "not_latest": await conn.fetchval(
                    "SELECT count(*) FROM channel_directions d JOIN channel_updates u ON u.id = d.update_id "
                    "WHERE u.timestamp <> (SELECT max(timestamp) FROM channel_updates x "
                    "WHERE x.scid = d.scid AND x.direction = d.direction)"
                ),
                "orphan_updates": await conn.fetchval(
                    "SELECT count(*) FROM channel_updates u WHERE NOT EXISTS "
                    "(SELECT 1 FROM channel_announcements a WHERE a.scid = u.scid)"
                ),
            }
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(pg.stop)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_demo_serves_snapshots_and_deltas_and_resumes(
    short_tmp: Path, ldk_client: LdkRgsClient
) -> None:
    ports, metrics_port = (free_port(), free_port()), free_port()
    env = clean_env(
        LNSYNC_PERSISTENCE__LISTEN=f"127.0.0.1:{free_port()}",
        LNSYNC_PERSISTENCE__METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        LNSYNC_LOOKUP__LISTEN=f"127.0.0.1:{free_port()}",
        LNSYNC_SNAPSHOTTER__LISTEN=f"127.0.0.1:{free_port()}",
        LNSYNC_DOWNLOADER__LISTEN=f"127.0.0.1:{free_port()}",
    )
    # The demo keeps its data next to the configured data directory.
    env["LNSYNC_DATA_DIR"] = str(short_tmp / "lnsync")
    data = short_tmp / "lnsync-demo"

    # -- first run: sync from nothing, full snapshot, then a delta with the peer's fresh updates --
    run = DemoRun(data, env, ports, short_tmp / "up-1.log", name_dir=False)
    try:
        await asyncio.to_thread(run.wait, "readiness", lambda: ready(run), 75)
        code, headers, full = run.get("/snapshot/v2/0")
        assert code == 200
        T = int(headers["X-RGS-Timestamp"])
        assert abs(T - time.time()) < 120, "the demo's gossip is current, not the dataset's 2026 dates"
        with ldk_client.new_graph("bitcoin") as graph:
            applied = graph.apply(full, now=int(time.time()))
            assert applied.accepted, applied.error_message
            assert (applied.channels, applied.nodes) == (CHANNELS, NODES)
            before = graph.dump().channels

            def delta_has_updates() -> bool:
                code, _, body = run.get(f"/delta/v2/{T}")
                return code == 200 and len(decode(body).updates) > 0

            await asyncio.to_thread(run.wait, "a delta with fresh updates", delta_has_updates, 30)
            _, headers, delta = run.get(f"/delta/v2/{T}")
            assert int(headers["X-RGS-Timestamp"]) > T
            applied = graph.apply(delta, now=int(time.time()))
            assert applied.accepted, applied.error_message
            after = graph.dump().channels
        assert len(after) == CHANNELS
        changed = [
            scid
            for scid, ch in after.items()
            for d, old in ((ch.one_to_two, before[scid].one_to_two), (ch.two_to_one, before[scid].two_to_one))
            if d and old and d.fee_proportional_millionths != old.fee_proportional_millionths
        ]
        assert changed, "the demo peer's fee changes reach the client"

        status = await asyncio.to_thread(run.status)
        (peer,) = status["downloaders"]  # type: ignore[misc]
        assert peer["initial_sync_complete"] and peer["channel_announcements"] == CHANNELS
        assert status["snapshots"]["generation"]  # type: ignore[index]
        first_stored = run.metric(metrics_port, 'lnsync_persistence_messages_total{outcome="stored"}')
        assert first_stored >= CHANNELS + DIRECTIONS + NODES
        # The progress view polls every 2 s: its milestones follow readiness within a few polls.
        await asyncio.to_thread(run.wait, "the ready banner", lambda: "lnsync is ready" in run.log(), 20)
        await asyncio.to_thread(run.stop)
    finally:
        run.kill()
    assert "first full sync done" in run.log() and "lnsync is ready" in run.log()

    counts = await store_counts(data / "pg")
    assert (counts["channels"], counts["directions"], counts["nodes"]) == (CHANNELS, DIRECTIONS, NODES)
    assert counts["not_latest"] == counts["orphan_updates"] == 0
    assert counts["updates"] > DIRECTIONS  # the fresh updates are kept next to the ones they replaced

    # -- second run on the same data: the downloader resumes, asking only for recent gossip -------
    run = DemoRun(data, env, ports, short_tmp / "up-2.log", name_dir=True)
    try:
        await asyncio.to_thread(run.wait, "readiness after restart", lambda: ready(run), 60)

        def downloader_synced() -> bool:
            try:
                (peer,) = run.status()["downloaders"]  # type: ignore[misc]
            except (ValueError, KeyError):
                return False
            return bool(peer.get("initial_sync_complete"))

        await asyncio.to_thread(run.wait, "the downloader's sync after restart", downloader_synced, 30)

        def fresh_stored() -> bool:
            return run.metric(metrics_port, 'lnsync_persistence_messages_total{outcome="stored"}') > 0

        # The demo peer keeps changing fees: the new updates for channels announced in the first
        # run must verify (the downloader learnt them from the store) and be stored.
        await asyncio.to_thread(run.wait, "fresh updates after restart", fresh_stored, 30)
        (peer,) = run.status()["downloaders"]  # type: ignore[misc]
        stored = run.metric(metrics_port, 'lnsync_persistence_messages_total{outcome="stored"}')
        duplicates = run.metric(metrics_port, 'lnsync_persistence_messages_total{outcome="duplicate"}')
        await asyncio.to_thread(run.stop)
    finally:
        run.kill()
    assert "resumed from its state file" in run.log()
    assert "initial sync already stored" in run.log(), run.log()[-3000:]
    graph = CHANNELS + DIRECTIONS + NODES
    received = peer["channel_announcements"] + peer["channel_updates"] + peer["node_announcements"]
    assert peer["state"] == "synced" and peer["invalid"] == 0, peer
    # Only the last hour or so of the peer's gossip crosses the wire again, not the whole graph.
    assert received < 0.2 * graph, (received, peer)
    assert duplicates < 0.2 * graph and stored >= 1, (stored, duplicates)
