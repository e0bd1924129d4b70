"""What a running stack is doing, gathered for people: ``lnsync status`` and ``lnsync up``'s progress.

The facts are the gateway's ``/api/status`` on its admin listener (services, sync state per peer,
graph size, snapshot generation) plus every downloader's own ``Downloader.GetStatus`` (connection
state and messages received from its peer), which the gateway does not know. Where the stack's
pieces listen comes from the run file ``lnsync up`` writes into the data directory
(:class:`RunInfo`), or from the settings.

Rendering: :func:`render_text` (plain lines, for logs and pipes) and :func:`render_table` (a
``rich`` table, for the live view on a terminal).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from lnsync import rpc
from lnsync.config import Settings, parse_listen
from lnsync.v1 import downloader_pb2, downloader_pb2_grpc

RUN_FILE = "up.json"
CALL_TIMEOUT = 3.0
# The gateway's /api/status itself waits up to 3 s on each upstream (in parallel) and answers with
# whatever it got; a shorter wait here would turn one slow upstream into no status at all.
API_STATUS_TIMEOUT = 10.0


@dataclass
class RunInfo:
    """Where ``lnsync up`` put things; written to DATA_DIR/up.json while it runs."""

    gateway_url: str
    # peer (pubkey@host:port) -> the downloader's gRPC target
    downloaders: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    demo: bool = False
    # The directory of the per-role certificates its services use (empty: plaintext or the
    # operator's own tls settings); other commands take the role they need from it when they dial
    # one of its services (name -> gRPC target).
    tls_dir: str = ""
    services: dict[str, str] = field(default_factory=dict)
    # The gateway's admin listener (status page, /api/status, /metrics); empty in run files of
    # versions that served those on the public port.
    admin_url: str = ""

    @property
    def status_url(self) -> str:
        """Where the status page and ``/api/status`` are."""
        return self.admin_url or self.gateway_url

    def serves(self, target: str) -> bool:
        """Whether ``target`` is one of this run's gRPC services."""
        return target in self.services.values() or target in self.downloaders.values()

    def write(self, data_dir: Path) -> None:
        tmp = data_dir / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(data_dir / RUN_FILE)

    @classmethod
    def read(cls, data_dir: Path) -> RunInfo | None:
        """The run file of a live ``lnsync up`` in ``data_dir``, or None (absent, stale, unreadable)."""
        try:
            raw = json.loads((data_dir / RUN_FILE).read_text())
            info = cls(**raw)
        except (OSError, ValueError, TypeError):
            return None
        if info.pid:
            try:
                os.kill(info.pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
        return info

    @classmethod
    def from_settings(cls, settings: Settings) -> RunInfo:
        """Where ``lnsync up`` would put things with these settings (no run file to go by)."""
        dl_host, base = parse_listen(settings.downloader.listen)
        downloaders = {str(p): f"{dl_host}:{base + i}" for i, p in enumerate(settings.peer_addresses)}
        return cls(
            gateway_url=gateway_url(settings.gateway.listen),
            downloaders=downloaders,
            admin_url=gateway_url(settings.gateway.admin_listen),
        )


def gateway_url(listen: str) -> str:
    """The URL a local client reaches a gateway listener ``host:port`` at."""
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard listener is reached on loopback
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _api_status(url: str) -> dict[str, Any]:
    import aiohttp  # here: RunInfo's readers (every probe's `lnsync healthcheck`) need no HTTP client

    try:
        timeout = aiohttp.ClientTimeout(total=API_STATUS_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            async with s.get(f"{url}/api/status") as r:
                if r.status != 200:
                    return {"error": f"HTTP {r.status}"}
                body: dict[str, Any] = await r.json()
            async with s.get(f"{url}/readyz") as r:
                body["ready"] = r.status == 200
            return body
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return {"error": f"gateway unreachable ({type(exc).__name__})"}


_PEER_FIELDS = frozenset({"peer_id", "address"})


async def _downloader_status(peer: str, target: str) -> dict[str, Any]:
    out: dict[str, Any] = {"peer": peer, "target": target}
    try:
        async with rpc.channel(target) as ch:
            s = await downloader_pb2_grpc.DownloaderStub(ch).GetStatus(
                downloader_pb2.GetDownloaderStatusRequest(), timeout=CALL_TIMEOUT
            )
    except grpc.aio.AioRpcError as exc:
        out["error"] = exc.code().name.lower()
        return out
    # Every field of the answer but the peer's identity, which ``peer``/``target`` already give.
    out.update({f.name: getattr(s, f.name) for f in s.DESCRIPTOR.fields if f.name not in _PEER_FIELDS})
    return out


async def collect(run: RunInfo) -> dict[str, Any]:
    """``/api/status`` with ``downloaders`` added (each section says "error" if it cannot be had)."""
    api, downloaders = await asyncio.gather(
        _api_status(run.status_url),
        asyncio.gather(*(_downloader_status(p, t) for p, t in run.downloaders.items())),
    )
    api.pop("series", None)  # the volume chart's data: for the status page, not for a terminal
    return {"gateway": run.gateway_url, **api, "downloaders": list(downloaders)}


# -- rendering ------------------------------------------------------------------------------------


def _ago(ts: int | float, now: float) -> str:
    if not ts:
        return "never"
    s = max(0, int(now - ts))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """The few facts the progress view shows, flattened (missing sections give None)."""
    sync = status.get("sync") or {}
    snaps = status.get("snapshots") or {}
    graph = status.get("graph") or {}
    return {
        "ready": bool(status.get("ready")),
        "fully_synced": bool(sync.get("fully_synced")),
        "generation": snaps.get("generation"),
        "reference_time": snaps.get("reference_time"),
        "channels": graph.get("channels"),
        "nodes": graph.get("nodes"),
    }


def render_text(status: dict[str, Any]) -> list[str]:
    """Plain lines: one per service group, one per peer."""
    now = time.time()
    lines = [f"gateway      {status['gateway']}  " + ("ready" if status.get("ready") else "not ready")]
    if "error" in status:
        lines.append(f"             {status['error']}")
    services = status.get("services") or {}
    if services:
        lines.append("services     " + ", ".join(f"{k} {v}" for k, v in services.items()))
    sync = status.get("sync") or {}
    if sync:
        state = "fully synced" if sync.get("fully_synced") else "first sync running"
        if sync.get("fully_synced_at"):
            state += f" ({_ago(sync['fully_synced_at'], now)})"
        lines.append(f"sync         {state}")
    graph = status.get("graph") or {}
    if "channels" in graph:
        lines.append(
            f"graph        {graph['channels']} channels, {graph['nodes']} nodes, "
            f"{graph['channel_updates_stored']} updates stored, "
            f"last gossip {_ago(graph['last_gossip_at'], now)}"
        )
    snaps = status.get("snapshots") or {}
    if snaps.get("generation"):
        lines.append(
            f"snapshots    generation {snaps['generation']} for {snaps['reference_time']} "
            f"({len(snaps.get('blobs') or [])} blobs, made {_ago(snaps['generated_at'], now)})"
        )
    elif snaps:
        lines.append("snapshots    no generation yet")
    stored = {p["peer_id"]: p for p in sync.get("peers") or []}
    for d in status.get("downloaders") or []:
        node_id = d["peer"].split("@")[0]
        head = f"peer {node_id[:16]}"
        if "error" in d:
            lines.append(f"{head} downloader {d['target']}: {d['error']}")
            continue
        p = stored.get(node_id, {})
        lines.append(
            f"{head} {d['state']:<12} received {d['channel_announcements']} channels, "
            f"{d['channel_updates']} updates, {d['node_announcements']} nodes; "
            f"stored {p.get('channel_announcements', 0)}/{p.get('channel_updates', 0)}/"
            f"{p.get('node_announcements', 0)}; last message {_ago(d['last_message_at'], now)}"
        )
    return lines


def render_table(status: dict[str, Any]) -> Any:
    """A ``rich`` renderable of the same facts (imported lazily: only terminals need rich)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = time.time()
    table = Table(title="peers", expand=False)
    for col in ("peer", "state", "channels", "updates", "nodes", "invalid", "last message"):
        table.add_column(
            col, justify="right" if col in ("channels", "updates", "nodes", "invalid") else "left"
        )
    for d in status.get("downloaders") or []:
        peer = d["peer"].split("@")[0][:16]
        if "error" in d:
            table.add_row(peer, d["error"], "", "", "", "", "")
            continue
        table.add_row(
            peer,
            d["state"],
            str(d["channel_announcements"]),
            str(d["channel_updates"]),
            str(d["node_announcements"]),
            str(d["invalid"]),
            _ago(d["last_message_at"], now),
        )
    other = [line for line in render_text({**status, "downloaders": []})]
    return Group(Text("\n".join(other)), table)
