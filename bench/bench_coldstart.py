"""Cold start: ``lnsync up`` on an empty data directory until the gateway serves the whole graph.

The demo peer (``lnsync demo-peer``, a local BOLT 8 gossip peer on loopback) serves the whole
re-signed mainnet topology (``cln2026_full_resigned_mainnet.bin.xz`` from the shared data: 50,808
channels, 101,616 channel_updates, 17,324 node_announcements; re-timed to now by the peer), or a
``--scale`` share of its channels. It is started, and its re-signed graph cached, before the clock
starts. Then a real ``lnsync up --peer <demo peer>`` (embedded PostgreSQL initialised in an empty
data directory, TLS certificates, every service as its own process; the demo's settings, as
``lnsync up --demo`` uses them) runs until ``GET /snapshot/v2/0`` answers with every channel
(decoded and counted).

Each phase ends at an event, nothing is inferred from a fixed wait: the services' own log lines
(timestamps in ms), the downloader's ``GetStatus`` (counts, unacknowledged messages; polled every
20 ms over the stack's own mutual TLS with the operator certificate, every 250 ms while the first
90 % of the messages arrive: its CPU is charged to the downloader) and the gateway's ``/readyz``
(polled every 20 ms once the snapshot generation is published).

    python -m bench.bench_coldstart [--scale 1.0] [--repeats 1] [--chain [--per-block 10]]
                                    [--graph FILE[.xz]] [--keep] [--json FILE]

``--chain``: with funding checks (``chain.source = bitcoind``) against a real local node, bcoin on
regtest, holding every channel's funding output; the graph is moved onto that chain's short channel
ids first (:mod:`bench.coldchain`). Building the chain is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import lzma
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench import history, results
from lnsync import certs, rpc
from lnsync.commands.up import DEMO_ENV
from lnsync.gossip.archive import ArchiveFormat, read_archive
from lnsync.rgs.decode import decode
from lnsync.v1 import downloader_pb2, downloader_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
FULL_GRAPH = ROOT.parent / "shared" / "data" / "derived" / "cln2026_full_resigned_mainnet.bin.xz"
TIMEOUT = 900.0
POLL = 0.02
# GetStatus costs the downloader CPU that this bench charges to it: while the bulk of the graph is
# still to come, poll it every SLOW_POLL; the last SLOW_SHARE of the messages at POLL again.
SLOW_POLL = 0.25
SLOW_SHARE = 0.9
# A busy downloader (load 20) took over 2 s to answer GetStatus: an event polled is then seen
# up to that late (the log's events are not).
STATUS_TIMEOUT = 15.0
_U16 = b">H"

# The phases, in order, each ending at the named event (see Timeline.events).
PHASES = [
    ("start-up: PostgreSQL init, TLS certificates, services healthy", "connected"),
    ("handshake and gossip query (until the channel range is answered)", "range_answered"),
    ("download and verify (until the last message is verified)", "all_verified"),
    ("persistence (until the last message is committed)", "all_committed"),
    ("wait before the initial sync counts as complete", "sync_reported"),
    ("snapshotter: wait before the first generation", "generation_started"),
    ("first snapshot generation", "generation_published"),
    ("gateway picks the generation up (/readyz 200)", "gateway_ready"),
    ("gateway fetch: GET /snapshot/v2/0", "fetched"),
]

# The phases whose work grows with the graph (the rest is start-up and waits).
SCALED = frozenset({PHASES[2][0], PHASES[3][0], PHASES[6][0]})

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (\S+)\s+\S+\s+(.*)$")
# (event, service, message pattern): the first matching line marks the event.
_LOG_EVENTS = [
    ("services_healthy", "up", re.compile(r"all services healthy")),
    ("connected", "downloader", re.compile(r"peer \S+: connected to")),
    ("range_answered", "downloader", re.compile(r"peer \S+ has \d+ channels \(\d+ range replies\)")),
    ("sync_complete", "downloader", re.compile(r"initial sync complete after")),
    ("sync_reported", "downloader", re.compile(r"initial sync reported")),
    ("generation_started", "snapshotter", re.compile(r"generation \d+ for R=\d+: ")),
    ("generation_published", "snapshotter", re.compile(r"generation \d+ for R=\d+ published")),
]


@dataclass
class Timeline:
    """Seconds since ``lnsync up`` was started, per event."""

    events: dict[str, float] = field(default_factory=dict)
    channels: int = 0
    messages: int = 0
    snapshot_bytes: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # process name -> CPU seconds
    # The downloader's CPU seconds when the first message and the last were seen verified: the
    # download itself, without its start-up (imports, TLS, the range query) or the quiet tail.
    downloader_cpu_at: dict[str, float] = field(default_factory=dict)
    # Messages already counted when the first was seen: a busy downloader answers GetStatus late,
    # so the CPU at that mark includes theirs (the download's per-message figure leaves them out).
    got_at_first: int = 0
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and at the end

    def mark(self, event: str, at: float) -> None:
        self.events.setdefault(event, at)

    def phases(self) -> list[tuple[str, float]]:
        out, before = [], 0.0
        for name, event in PHASES:
            at = self.events[event]
            out.append((name, at - before))
            before = at
        return out

    @property
    def total(self) -> float:
        return self.events["fetched"]


# -- the graph ---------------------------------------------------------------------------------------


def graph_file(source: Path, scale: float) -> Path:
    """``source`` (decompressed) or the ``scale`` share of its channels with their updates and the
    node announcements of their nodes, cached next to the benches' histories."""
    cache = history.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    full = source
    if source.suffix == ".xz":
        full = cache / source.stem
        if not full.exists():
            partial = full.with_suffix(f".{os.getpid()}.partial")
            with lzma.open(source) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.rename(full)
    if scale >= 1.0:
        return full
    out = cache / f"{full.stem}-scale{scale:g}.bin"
    if out.exists():
        return out
    with full.open("rb") as f:
        raws = [r.raw for r in read_archive(f, ArchiveFormat.U16)]
    scids = sorted({int.from_bytes(r[258 + _ann_features_len(r) + 32 : 266 + _ann_features_len(r) + 32])
                    for r in raws if r[:2] == b"\x01\x00"})  # fmt: skip
    keep = {s for i, s in enumerate(scids) if int((i + 1) * scale) > int(i * scale)}
    nodes: set[bytes] = set()
    chosen: list[bytes] = []
    for raw in raws:
        kind = raw[:2]
        if kind == b"\x01\x00":
            at = 258 + _ann_features_len(raw) + 32
            if int.from_bytes(raw[at : at + 8]) in keep:
                chosen.append(raw)
                nodes.update((raw[at + 8 : at + 41], raw[at + 41 : at + 74]))
        elif kind == b"\x01\x02" and int.from_bytes(raw[98:106]) in keep:
            chosen.append(raw)
    chosen += [r for r in raws if r[:2] == b"\x01\x01" and _na_node_id(r) in nodes]
    partial = out.with_suffix(f".{os.getpid()}.partial")
    with partial.open("wb") as dst:
        for raw in chosen:
            dst.write(len(raw).to_bytes(2, "big") + raw)
    partial.rename(out)
    return out


def _ann_features_len(raw: bytes) -> int:
    """channel_announcement: type, 4 signatures (256 B), then u16 features length."""
    return int.from_bytes(raw[258:260]) + 2


def _na_features_len(raw: bytes) -> int:
    """node_announcement: type, signature (64 B), then u16 features length."""
    return int.from_bytes(raw[66:68]) + 2


def _na_node_id(raw: bytes) -> bytes:
    at = 66 + _na_features_len(raw) + 4  # then the timestamp
    return raw[at : at + 33]


def count_graph(path: Path) -> tuple[int, int]:
    """(channels, messages) of a ``[u16 length][message]`` file."""
    channels = messages = 0
    with path.open("rb") as f:
        for r in read_archive(f, ArchiveFormat.U16):
            messages += 1
            channels += r.raw[:2] == b"\x01\x00"
    return channels, messages


# -- processes -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
    env.update(extra)
    return env


class DemoPeer:
    """``lnsync demo-peer`` serving ``dataset``; its re-signed graph is kept in ``state``."""

    def __init__(self, dataset: Path, state: Path, log: Path, network: str) -> None:
        self.listen = f"127.0.0.1:{free_port()}"
        self.health = f"127.0.0.1:{free_port()}"
        env = clean_env(LNSYNC_DATA_DIR=str(state.parent), LNSYNC_NETWORK=network)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lnsync", "demo-peer", "--dataset", str(dataset),
                 "--state", str(state), "--listen", self.listen, "--health-listen", self.health,
                 "--identity", "lnsync-bench-peer"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.address = subprocess.run(
            [sys.executable, "-m", "lnsync", "demo-peer", "--print-address", "--listen", self.listen,
             "--identity", "lnsync-bench-peer"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    async def wait(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the demo peer exited")
            if await rpc.check_health(self.health, timeout=1):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("the demo peer did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _log_events(text: str, started_wall: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        stamp, service, message = m.groups()
        for event, who, pattern in _LOG_EVENTS:
            if event not in out and service.startswith(who) and pattern.search(message):
                at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
                out[event] = at - started_wall
    return out


def _get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def _tree_cpu(root: psutil.Process) -> dict[str, float]:
    """CPU seconds (user + system) of every process under ``root``, by role, and PostgreSQL's."""
    out: dict[str, float] = {}
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmd = p.cmdline()
            if "up" in cmd and p.pid == root.pid:
                role = "up"
            elif "serve" in cmd:
                role = cmd[cmd.index("serve") + 1]
            elif any("postgres" in c for c in cmd[:1]):
                role = "postgresql"
            else:
                role = "other"
            t = p.cpu_times()
            out[role] = out.get(role, 0.0) + t.user + t.system + t.children_user + t.children_system
    return out


async def one_run(peer: DemoPeer, expect: tuple[int, int], workdir: Path, index: int,
                  chain_env: dict[str, str]) -> Timeline:  # fmt: skip
    channels, messages = expect
    data = workdir / f"data-{index}"
    http, admin = free_port(), free_port()
    downloader_at = f"127.0.0.1:{free_port()}"
    env = clean_env(
        **DEMO_ENV,
        LNSYNC_PERSISTENCE__LISTEN=f"127.0.0.1:{free_port()}",
        LNSYNC_PERSISTENCE__METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        LNSYNC_LOOKUP__LISTEN=f"127.0.0.1:{free_port()}",
        LNSYNC_SNAPSHOTTER__LISTEN=f"127.0.0.1:{free_port()}",
        LNSYNC_DOWNLOADER__LISTEN=downloader_at,
        **chain_env,
    )
    log_path = workdir / f"up-{index}.log"
    tl = Timeline()
    tl.load = (os.getloadavg()[0], 0.0)
    started_wall, t0 = time.time(), time.perf_counter()
    with log_path.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started and left running; nothing blocks
            [sys.executable, "-m", "lnsync", "up", "--peer", peer.address, "--data-dir", str(data),
             "--http-port", str(http), "--admin-port", str(admin), "--plain"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        await _observe(proc, tl, t0, data, downloader_at, f"http://127.0.0.1:{http}", expect)
        tl.cpu = _tree_cpu(psutil.Process(proc.pid))
        events = _log_events(log_path.read_text(errors="replace"), started_wall)
        for event, at in events.items():
            tl.events.setdefault(event, at)
        missing = [e for _, e in PHASES if e not in tl.events]
        if missing:
            raise RuntimeError(f"events not seen: {missing}; see {log_path}")
        tl.load = (tl.load[0], os.getloadavg()[0])
        if (tl.channels, tl.messages) != (channels, messages):
            raise RuntimeError(
                f"served {tl.channels} channels of {channels}, {tl.messages} messages of {messages}"
            )
        return tl
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()


async def _observe(proc: subprocess.Popen[bytes], tl: Timeline, t0: float, data: Path, downloader_at: str,
                   base: str, expect: tuple[int, int]) -> None:  # fmt: skip
    channels, messages = expect
    deadline = t0 + TIMEOUT
    # The stack's mutual TLS: the downloader answers the operator certificate `lnsync up` made.
    tls = data / "tls"
    while not (tls / "ca.crt").exists() or not (tls / "operator.key").exists():
        await _tick(proc, deadline)
    await asyncio.sleep(0.2)  # the certificates are written one after another
    rpc.configure_tls(certs.settings_for(tls, "operator"))
    request = downloader_pb2.GetDownloaderStatusRequest()
    downloader: psutil.Process | None = None
    async with rpc.channel(downloader_at) as ch:
        stub = downloader_pb2_grpc.DownloaderStub(ch)
        while True:
            try:
                s = await stub.GetStatus(request, timeout=STATUS_TIMEOUT)
            except Exception:  # not up yet
                await _tick(proc, deadline)
                continue
            now = time.perf_counter() - t0
            got = s.channel_announcements + s.channel_updates + s.node_announcements
            if downloader is None:
                downloader = _find_downloader(proc)
            if got and "first_message" not in tl.events:
                tl.mark("first_message", now)
                _mark_cpu(tl, "first_message", downloader)
                tl.got_at_first = got
            if got >= messages:
                tl.mark("all_verified", now)
                _mark_cpu(tl, "all_verified", downloader)
                if s.unacknowledged == 0:
                    tl.mark("all_committed", now)
            if s.initial_sync_complete and "all_committed" in tl.events:
                break
            await _tick(proc, deadline, SLOW_POLL if 0 < got < SLOW_SHARE * messages else POLL)
    while True:
        code, _ = await asyncio.to_thread(_get, base + "/readyz", 5)
        if code == 200:
            tl.mark("gateway_ready", time.perf_counter() - t0)
            break
        await _tick(proc, deadline)
    code, body = await asyncio.to_thread(_get, base + "/snapshot/v2/0")
    tl.mark("fetched", time.perf_counter() - t0)
    if code != 200:
        raise RuntimeError(f"GET /snapshot/v2/0: {code}")
    snap = decode(body)
    tl.channels, tl.snapshot_bytes = len(snap.announcements), len(body)
    tl.messages = messages if tl.channels == channels else 0


def _find_downloader(proc: subprocess.Popen[bytes]) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process(proc.pid).children(recursive=True):
            cmd = p.cmdline()
            if "serve" in cmd and cmd[cmd.index("serve") + 1 :][:1] == ["downloader"]:
                return p
    return None


def _mark_cpu(tl: Timeline, event: str, downloader: psutil.Process | None) -> None:
    if downloader is not None and event not in tl.downloader_cpu_at:
        with contextlib.suppress(psutil.Error):
            t = downloader.cpu_times()
            tl.downloader_cpu_at[event] = t.user + t.system


def reference_us(dataset: Path, network: str) -> float:
    """The gossip core alone (parse + every signature check, no I/O) on the messages the peer
    served, in this process: CPU µs per message (bench_downloader's reference, median of 3)."""
    from bench.bench_downloader import reference_cpu_per_message

    with dataset.open("rb") as f:
        raws = [r.raw for r in read_archive(f, ArchiveFormat.U16)]
    return reference_cpu_per_message(raws, 3, network) * 1e6


async def _tick(proc: subprocess.Popen[bytes], deadline: float, interval: float = POLL) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"lnsync up exited ({proc.returncode})")
    if time.perf_counter() > deadline:
        raise RuntimeError(f"not done within {TIMEOUT:.0f} s")
    await asyncio.sleep(interval)


def _peer_state(dataset: Path) -> Path:
    """Where the demo peer keeps its re-signed graph of ``dataset`` between runs."""
    digest = hashlib.sha256(str(dataset.resolve()).encode()).hexdigest()[:12]
    return history.cache_dir() / f"coldstart-peer-{dataset.stem}-{digest}.gossip"


def full_scale_estimate(phases: dict[str, float], scale: float) -> float:
    """The whole graph's cold start from a ``scale`` run: the phases that grow with the graph
    (SCALED) divided by the scale, the others (start-up, waits, the gateway) as measured."""
    return sum(s / scale if name in SCALED else s for name, s in phases.items())


def report(
    runs: list[Timeline],
    source: str,
    scale: float,
    expect: tuple[int, int],
    chain: str,
    reference: float | None = None,
) -> dict[str, Any]:
    """Print the phase table (medians over the runs) and return the JSON figures."""
    channels, messages = expect
    med = [(name, statistics.median(dict(r.phases())[name] for r in runs)) for name, _ in PHASES]
    total = statistics.median(r.total for r in runs)
    loads = ", ".join(f"{r.load[0]:.1f}->{r.load[1]:.1f}" for r in runs)
    print(f"\nbench_coldstart: {source}, scale {scale:g}: {channels:,} channels, {messages:,} messages; "
          f"chain source: {chain}; {len(runs)} run(s), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, load {loads}")  # fmt: skip
    print("| phase | median s | share |")
    print("|---|---:|---:|")
    for name, seconds in med:
        print(f"| {name} | {seconds:.2f} | {seconds / total:.0%} |")
    print(f"| **total: lnsync up to the full snapshot fetched** | **{total:.2f}** | 100% |")
    for r in runs:
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r.cpu.items(), key=lambda kv: -kv[1]))
        print(f"  run: {r.total:.1f} s, {r.snapshot_bytes:,}-byte full v2 snapshot; CPU s: {cpu}")
    rate = messages / max(
        statistics.median(r.events["all_committed"] - r.events["range_answered"] for r in runs), 1e-3
    )
    print(f"  download to committed: {rate:,.0f} messages/s")
    whole = statistics.median(r.cpu.get("downloader", 0.0) / messages * 1e6 for r in runs)
    # (both marks at one poll, as in a small run, say nothing about the download)
    marks = [
        (c, r.got_at_first)
        for r in runs
        if len(c := r.downloader_cpu_at) == 2 and c["all_verified"] > c["first_message"]
    ]
    download = (
        statistics.median(
            (c["all_verified"] - c["first_message"]) / (messages - got) * 1e6 for c, got in marks
        )
        if marks
        else None
    )
    line = f"  downloader CPU: {whole:.1f} µs/message over the whole run (start-up included)"
    if download is not None:
        line += f", {download:.1f} µs/message over the download (first message seen to last verified)"
    print(line)
    out: dict[str, Any] = {"downloader_cpu_us_per_msg": round(whole, 1)}
    if download is not None:
        out["downloader_download_cpu_us_per_msg"] = round(download, 1)
    if reference is not None:
        print(f"  reference, gossip core parse+verify of the same messages in-process: {reference:.1f} "
              f"µs/message; downloader / reference: {whole / reference:.2f}x whole run"
              + (f", {download / reference:.2f}x download" if download is not None else ""))  # fmt: skip
        out["reference_us_per_msg"] = round(reference, 1)
        out["ratio_cpu"] = round(whole / reference, 3)
        if download is not None:
            out["ratio_download_cpu"] = round(download / reference, 3)
    return {
        "graph": source,
        "scale": scale,
        "channels": channels,
        "messages": messages,
        "chain": chain,
        "repeats": len(runs),
        "seconds": round(total, 2),
        "full_scale_estimate_seconds": round(full_scale_estimate(dict(med), scale), 1),
        "phases": {name: round(s, 2) for name, s in med},
        "runs": [
            {
                "events": {k: round(v, 3) for k, v in r.events.items()},
                "cpu": r.cpu,
                "downloader_cpu_at": r.downloader_cpu_at,
                "got_at_first": r.got_at_first,
                "load": r.load,
            }
            for r in runs
        ],
        **out,
    }


async def main_async(args: argparse.Namespace) -> None:
    source = Path(args.graph)
    if not source.exists():  # noqa: ASYNC240 - before anything runs
        raise SystemExit(f"{source} not found (the shared data's re-signed mainnet graph; see --graph)")
    dataset = graph_file(source, args.scale)
    expect = count_graph(dataset)
    workdir = results.work_dir("lnsync-bench-cold-")
    chain = None
    chain_env: dict[str, str] = {}
    try:
        if args.chain:
            from bench.coldchain import LocalChain

            chain = LocalChain(dataset, workdir, args.per_block)
            dataset = chain.dataset
            expect = count_graph(dataset)
            chain_env = await asyncio.to_thread(chain.start)
        network = "regtest" if args.chain else "bitcoin"
        peer = DemoPeer(dataset, _peer_state(dataset), workdir / "demo-peer.log", network)
        try:
            started = time.perf_counter()
            await peer.wait()
            print(f"demo peer ready in {time.perf_counter() - started:.1f} s: {expect[0]:,} channels, "
                  f"{expect[1]:,} messages ({dataset.name})", flush=True)  # fmt: skip
            runs = []
            for i in range(args.repeats):
                tl = await one_run(peer, expect, workdir, i, {"LNSYNC_NETWORK": network, **chain_env})
                runs.append(tl)
                print(f"  run {i + 1}: {tl.total:.1f} s to the full snapshot ("
                      + ", ".join(f"{e} {t:.1f}" for e, t in sorted(tl.events.items(), key=lambda kv: kv[1]))
                      + f"); load {tl.load[0]:.1f} -> {tl.load[1]:.1f}", flush=True)  # fmt: skip
        finally:
            peer.close()
        # The peer's re-signed, re-timed messages: exactly what the downloader verified.
        reference = reference_us(_peer_state(dataset), network)
        figures = report(runs, source.name, args.scale, expect, chain.name if chain else "none", reference)
        results.write(args.json, figures)
    finally:
        if chain is not None:
            chain.close()
        results.finish_work_dir(workdir, args.keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the graph's channels (0-1]")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--graph", default=str(FULL_GRAPH), help="[u16 length][message] records (.xz too)")
    parser.add_argument("--chain", action="store_true", help="with funding checks against a local source")
    parser.add_argument("--per-block", type=int, default=10, help="--chain: funding outputs a block")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    parser.add_argument("--json", metavar="FILE", help="also write the key figures as JSON (- = stdout)")
    args = parser.parse_args()
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
