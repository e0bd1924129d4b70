"""The real LDK (npm ``lightningdevkit``, rust-lightning compiled to WASM) for tests.

- :class:`LdkRgsClient` drives ``tools/ldk/rgs-client.mjs``: LDK's own Rapid Gossip Sync client as a
  long-lived worker, so the WASM start-up is paid once per test session.
- :class:`LdkPeer` runs ``tools/ldk/peer.mjs``: a real LDK Lightning node (PeerManager +
  P2PGossipSync) on 127.0.0.1 that serves a gossip file over BOLT 8.
- :class:`GossipTestClient` is a minimal BOLT 8 initiator (pyln-proto's handshake and framing)
  that speaks init/ping/pong and collects gossip, to look at what a peer sends.

Both node scripts speak JSON lines; u64 values cross as decimal strings and come back here as
exact Python ints. ``make test`` installs node's side (``npm ci`` in ``tools/ldk``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lnsync import bigsize
from lnsync.chain import chain_hash as chain_hash_of

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools" / "ldk"
WASM = TOOLS / "node_modules" / "lightningdevkit" / "liblightningjs.wasm"
U64_MAX = (1 << 64) - 1


class LdkUnavailable(RuntimeError):
    """node or the lightningdevkit package is missing: the interop tier cannot run."""


class LdkToolError(RuntimeError):
    """The node script failed, answered with an error, or broke the protocol (not an LDK verdict)."""


def require_ldk() -> str:
    """Path of ``node``; raises LdkUnavailable with the fix when the tier cannot run."""
    node = shutil.which("node")
    if node is None:
        raise LdkUnavailable("`node` is not on PATH: install Node.js >= 20, then run `make test`")
    if not WASM.is_file():
        raise LdkUnavailable(
            f"{WASM.relative_to(ROOT)} is missing: run `make test` (it runs `npm ci` in tools/ldk)"
        )
    return node


# ------------------------------------------------------------------------ JSON-line processes


class _NodeProcess:
    """A node script answering JSON-line requests; the first stdout line announces readiness."""

    def __init__(self, script: str, args: list[str], startup_timeout: float) -> None:
        node = require_ldk()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self._proc = subprocess.Popen(
            [node, str(TOOLS / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=TOOLS,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{script}-stdout", daemon=True)
        self._reader.start()
        self._lock = threading.Lock()
        self._next_id = 0
        self.script = script
        try:
            self.ready: dict[str, Any] = self._next_line(startup_timeout)
        except LdkToolError:
            self.close(timeout=1)
            raise
        if not self.ready.get("ready", self.ready.get("listening")):
            tail = self.stderr_tail()
            self.close()
            raise LdkToolError(f"{script} did not start: {self.ready.get('error')}\n{tail}")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next_line(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            tail = self.stderr_tail()
            self.close(timeout=1)  # a late answer would be taken for the next request's
            raise LdkToolError(f"{self.script}: no answer within {timeout} s\n{tail}") from None
        if line is None:
            self._proc.wait(timeout=5)
            raise LdkToolError(f"{self.script} exited (status {self._proc.returncode})\n{self.stderr_tail()}")
        return dict(json.loads(line))

    def alive(self) -> bool:
        return self._proc.poll() is None

    def request(self, cmd: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            msg = {"id": self._next_id, "cmd": cmd, **fields}
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps(msg).encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise LdkToolError(f"{self.script} is gone\n{self.stderr_tail()}") from None
            answer = self._next_line(timeout)
        if answer.get("id") != msg["id"]:
            raise LdkToolError(f"{self.script}: answer {answer.get('id')} to request {msg['id']}")
        if not answer.get("ok"):
            err = answer.get("error") or {}
            raise LdkToolError(f"{self.script} {cmd}: {err.get('kind')}: {err.get('message')}")
        return dict(answer["result"])

    def stderr_tail(self, limit: int = 4000) -> str:
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        data = self._stderr.read().decode(errors="replace")
        return data[-limit:]

    def close(self, timeout: float = 10.0) -> None:
        """Close stdin (the scripts exit on EOF); kill if it does not."""
        if self._proc.stdin and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._reader.join(timeout=5)  # it ends at EOF, now that the process is gone
        if self._proc.stdout and not self._reader.is_alive():
            self._proc.stdout.close()
        self._stderr.close()


def _u64(text: str | None) -> int | None:
    return None if text is None else int(text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------------------- RGS client


@dataclass(frozen=True, slots=True)
class LdkLogRecord:
    level: str
    module: str
    line: int
    msg: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """LDK's verdict on one blob and the graph's size afterwards."""

    accepted: bool
    timestamp: int | None  # Ok(u32) returned by update_network_graph_no_std
    error_kind: str | None  # "DecodeError" | "LightningError" | "panic"
    error_detail: str | None  # DecodeError variant ("ShortRead", "Io(UnexpectedEof)"...) or action
    error_message: str | None
    channels_before: int
    channels: int | None  # None after a panic (the worker restarts)
    nodes: int | None
    last_rapid_gossip_sync_timestamp: int | None
    apply_ms: float
    log_counts: dict[str, int]
    logs: tuple[LdkLogRecord, ...]

    def logs_containing(self, text: str) -> list[LdkLogRecord]:
        return [r for r in self.logs if text in r.msg]


@dataclass(frozen=True, slots=True)
class LdkDirection:
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    enabled: bool
    last_update: int


@dataclass(frozen=True, slots=True)
class LdkChannel:
    scid: int
    node_one: bytes
    node_two: bytes
    features: bytes
    capacity_sats: int | None
    has_signed_announcement: bool
    one_to_two: LdkDirection | None
    two_to_one: LdkDirection | None


@dataclass(frozen=True, slots=True)
class LdkAddress:
    raw: bytes  # BOLT 7 address descriptor: type byte + data
    text: str  # LDK's SocketAddress::to_str

    @property
    def type(self) -> int:
        return self.raw[0]


@dataclass(frozen=True, slots=True)
class LdkNodeAnnouncement:
    features: bytes
    last_update: int
    rgb: bytes
    alias: bytes
    addresses: tuple[LdkAddress, ...]
    relayed: bool  # LDK holds a signed node_announcement (never for RGS data)


@dataclass(frozen=True, slots=True)
class LdkNode:
    node_id: bytes
    channels: tuple[int, ...]
    announcement: LdkNodeAnnouncement | None


@dataclass(frozen=True)
class GraphDump:
    network: str
    chain_hash: bytes
    last_rapid_gossip_sync_timestamp: int | None
    initial_sync_complete: bool
    channels: dict[int, LdkChannel]
    nodes: dict[bytes, LdkNode]


def _direction(d: dict[str, Any] | None) -> LdkDirection | None:
    if d is None:
        return None
    return LdkDirection(
        fee_base_msat=d["fee_base_msat"],
        fee_proportional_millionths=d["fee_proportional_millionths"],
        cltv_expiry_delta=d["cltv_expiry_delta"],
        htlc_minimum_msat=int(d["htlc_minimum_msat"]),
        htlc_maximum_msat=int(d["htlc_maximum_msat"]),
        enabled=d["enabled"],
        last_update=d["last_update"],
    )


def _channel(c: dict[str, Any]) -> LdkChannel:
    return LdkChannel(
        scid=int(c["scid"]),
        node_one=bytes.fromhex(c["node_one"]),
        node_two=bytes.fromhex(c["node_two"]),
        features=bytes.fromhex(c["features"]),
        capacity_sats=_u64(c["capacity_sats"]),
        has_signed_announcement=c["has_signed_announcement"],
        one_to_two=_direction(c["one_to_two"]),
        two_to_one=_direction(c["two_to_one"]),
    )


def _node(n: dict[str, Any]) -> LdkNode:
    a = n["announcement"]
    ann = None
    if a is not None:
        ann = LdkNodeAnnouncement(
            features=bytes.fromhex(a["features"]),
            last_update=a["last_update"],
            rgb=bytes.fromhex(a["rgb"]),
            alias=bytes.fromhex(a["alias"]),
            addresses=tuple(LdkAddress(bytes.fromhex(x["hex"]), x["text"]) for x in a["addresses"]),
            relayed=a["relayed"],
        )
    return LdkNode(bytes.fromhex(n["node_id"]), tuple(int(s) for s in n["channels"]), ann)


class LdkGraph:
    """One LDK NetworkGraph inside the worker, with its RapidGossipSync."""

    def __init__(self, client: LdkRgsClient, handle: int, generation: int, network: str) -> None:
        self._client = client
        self._handle = handle
        self._generation = generation
        self.network = network

    def _call(self, cmd: str, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
        return self._client._graph_request(
            self._generation, cmd, graph=self._handle, timeout=timeout, **fields
        )

    def apply(self, blob: bytes, *, now: int | None, logs: str | None = None) -> ApplyResult:
        """``RapidGossipSync.update_network_graph_no_std(blob, now)``.

        ``now`` is the client's clock in unix seconds (staleness check and pruning), or None for
        no clock at all (what LDK's own unit tests use). ``logs`` returns LDK's log records at
        that level and above ("gossip" is everything).
        """
        return self._apply(blob, now, logs, hold_read_lock=False)

    def apply_holding_read_lock(self, blob: bytes, *, now: int | None) -> ApplyResult:
        """Apply while a read-only view of the graph is alive: the binding mistake that makes LDK
        panic (BorrowMutError). Exists to prove that panics are reported, not to be used."""
        return self._apply(blob, now, None, hold_read_lock=True)

    def _apply(self, blob: bytes, now: int | None, logs: str | None, *, hold_read_lock: bool) -> ApplyResult:
        if now is not None and not 0 <= now <= U64_MAX:
            raise ValueError("now must fit in a u64")
        fields: dict[str, Any] = {"blob": _b64(blob), "now": None if now is None else str(now), "logs": logs}
        if hold_read_lock:
            fields["debug_hold_read_lock"] = True
        r = self._call("apply", **fields)
        if r.get("worker_exiting"):
            self._client._worker_died()
        err = r["error"] or {}
        return ApplyResult(
            accepted=r["accepted"],
            timestamp=r["timestamp"],
            error_kind=err.get("kind"),
            error_detail=err.get("detail"),
            error_message=err.get("message"),
            channels_before=r["channels_before"],
            channels=r.get("channels"),
            nodes=r.get("nodes"),
            last_rapid_gossip_sync_timestamp=r.get("last_rapid_gossip_sync_timestamp"),
            apply_ms=r["apply_ms"],
            log_counts=dict(r.get("log_counts", {})),
            logs=tuple(LdkLogRecord(x["level"], x["module"], x["line"], x["msg"]) for x in r.get("logs", [])),
        )

    def dump(self) -> GraphDump:
        r = self._call("dump")
        return GraphDump(
            network=r["network"],
            chain_hash=bytes.fromhex(r["chain_hash"]),
            last_rapid_gossip_sync_timestamp=r["last_rapid_gossip_sync_timestamp"],
            initial_sync_complete=r["initial_sync_complete"],
            channels={c.scid: c for c in map(_channel, r["channels"])},
            nodes={n.node_id: n for n in map(_node, r["nodes"])},
        )

    def counts(self) -> dict[str, Any]:
        """channels, nodes, last_rapid_gossip_sync_timestamp, initial_sync_complete."""
        return self._call("counts")

    def save(self) -> bytes:
        """``NetworkGraph.write()``: reload with :meth:`LdkRgsClient.load_graph`."""
        return base64.b64decode(self._call("save_graph")["data"])

    def free(self) -> None:
        if self._generation == self._client._generation:
            self._call("free_graph")

    def __enter__(self) -> LdkGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


class LdkRgsClient:
    """LDK's RGS client in one long-lived node worker (see tools/ldk/rgs-client.mjs).

    A Rust panic inside LDK makes the worker answer ``error_kind == "panic"`` and exit; the next
    call starts a new worker, and graphs of the old one raise LdkToolError.
    """

    def __init__(self, startup_timeout: float = 60.0) -> None:
        self._startup_timeout = startup_timeout
        self._generation = 0
        self._proc: _NodeProcess | None = None
        self._current: LdkGraph | None = None
        self._start()

    def _start(self) -> None:
        t0 = time.perf_counter()
        self._proc = _NodeProcess("rgs-client.mjs", [], self._startup_timeout)
        self.start_seconds = time.perf_counter() - t0
        self.versions: dict[str, str] = self._proc.ready["versions"]
        self._generation += 1

    def _worker_died(self) -> None:
        if self._proc is not None:
            self._proc.close()
        self._proc = None

    def _request(self, cmd: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        if self._proc is None or not self._proc.alive():
            self._worker_died()
            self._start()
        assert self._proc is not None
        return self._proc.request(cmd, timeout=timeout, **fields)

    def _graph_request(self, generation: int, cmd: str, timeout: float, **fields: Any) -> dict[str, Any]:
        if generation != self._generation or self._proc is None:
            raise LdkToolError("this graph is gone: its worker exited (after a WASM panic)")
        return self._request(cmd, timeout=timeout, **fields)

    def new_graph(self, network: str = "bitcoin") -> LdkGraph:
        """An empty NetworkGraph for ``network`` (bitcoin/mainnet, testnet, signet, regtest)."""
        r = self._request("new_graph", network=network)
        self._current = LdkGraph(self, r["graph"], self._generation, r["network"])
        return self._current

    def load_graph(self, data: bytes) -> LdkGraph:
        r = self._request("load_graph", data=_b64(data))
        self._current = LdkGraph(self, r["graph"], self._generation, r["network"])
        return self._current

    # The most recently created graph, for short tests.
    def _graph(self) -> LdkGraph:
        if self._current is None:
            raise LdkToolError("no graph yet: call new_graph() first")
        return self._current

    def apply(self, blob: bytes, *, now: int | None, logs: str | None = None) -> ApplyResult:
        return self._graph().apply(blob, now=now, logs=logs)

    def dump(self) -> GraphDump:
        return self._graph().dump()

    def close(self) -> None:
        self._worker_died()

    def __enter__(self) -> LdkRgsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------- peer


@dataclass(frozen=True, slots=True)
class FeedResult:
    type: str
    accepted: bool  # P2PGossipSync took it as new
    broadcast: bool  # PeerManager relayed it (accepted, or a duplicate LDK still forwards)
    error_message: str | None
    error_action: str | None


@dataclass(frozen=True, slots=True)
class ConnectedPeer:
    node_id: bytes
    inbound: bool


@dataclass(frozen=True, slots=True)
class PeerStats:
    channels: int
    channels_with_signed_announcement: int
    directions: int
    nodes: int
    nodes_with_announcement: int
    peers: tuple[ConnectedPeer, ...]
    # What each connected peer (node id hex) sent LDK's route handler: {"gossip": {type name: count},
    # "reply_channel_range": [{first_blocknum, number_of_blocks, sync_complete, scids}],
    # "reply_short_channel_ids_end": [{full_information}]}.
    from_peers: dict[str, dict[str, Any]] = field(default_factory=dict)


class LdkPeer:
    """A real LDK node on 127.0.0.1 serving gossip (tools/ldk/peer.mjs); a context manager.

    ``gossip`` files hold [u16 length][message] records and go through P2PGossipSync (signature
    checks, no UTXO lookup); ``graph_in`` restores a graph saved with ``graph_out``/``save_graph``.
    """

    def __init__(
        self,
        gossip: Path | Iterable[Path] = (),
        *,
        network: str = "bitcoin",
        seed: bytes = b"\x01" * 32,
        graph_in: Path | None = None,
        graph_out: Path | None = None,
        tick_ms: int = 100,
        timer_ms: int = 10_000,
        log_level: str = "warn",
        startup_timeout: float = 180.0,
    ) -> None:
        files = [gossip] if isinstance(gossip, Path | str) else list(gossip)
        if len(seed) != 32:
            raise ValueError("seed must be 32 bytes")
        self._args = ["--network", network, "--port", "0", "--seed", seed.hex()]
        self._args += ["--tick-ms", str(tick_ms), "--timer-ms", str(timer_ms), "--log-level", log_level]
        for f in files:
            self._args += ["--gossip", os.path.abspath(f)]  # node runs in tools/ldk
        if graph_in is not None:
            self._args += ["--graph-in", os.path.abspath(graph_in)]
        if graph_out is not None:
            self._args += ["--graph-out", os.path.abspath(graph_out)]
        self._startup_timeout = startup_timeout
        self._proc: _NodeProcess | None = None

    def start(self) -> LdkPeer:
        t0 = time.perf_counter()
        self._proc = _NodeProcess("peer.mjs", self._args, self._startup_timeout)
        self.start_seconds = time.perf_counter() - t0
        info = self._proc.ready
        self.node_id: bytes = bytes.fromhex(info["node_id"])
        self.port: int = info["port"]
        self.network: str | None = info["network"]
        self.chain_hash: bytes = bytes.fromhex(info["chain_hash"])
        self.load: list[dict[str, Any]] = info["load"]
        self.graph: dict[str, int] = info["graph"]
        self.timing: dict[str, int] = info["timing"]
        return self

    @property
    def address(self) -> str:
        """``node_id@127.0.0.1:port``, the form peers are configured with."""
        return f"{self.node_id.hex()}@127.0.0.1:{self.port}"

    def _call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        if self._proc is None:
            raise LdkToolError("peer not started")
        return self._proc.request(cmd, **fields)

    def feed(self, raw: bytes) -> FeedResult:
        """Hand a gossip message to LDK as if it were to be broadcast: validated, then relayed."""
        r = self._call("feed", msg=_b64(raw))
        err = r["error"] or {}
        return FeedResult(r["type"], r["accepted"], r["broadcast"], err.get("message"), err.get("action"))

    def stats(self) -> PeerStats:
        r = self._call("stats")
        peers = tuple(ConnectedPeer(bytes.fromhex(p["node_id"]), p["inbound"]) for p in r["peers"])
        return PeerStats(
            r["channels"],
            r["channels_with_signed_announcement"],
            r["directions"],
            r["nodes"],
            r["nodes_with_announcement"],
            peers,
            r.get("from_peers", {}),
        )

    def query_channel_range(self, node_id: bytes, first_blocknum: int, number_of_blocks: int) -> None:
        """Make LDK send ``query_channel_range`` to a connected peer (its reply shows in ``stats``)."""
        self._call("query", node_id=node_id.hex(), kind="channel_range", first_blocknum=first_blocknum,
                   number_of_blocks=number_of_blocks)  # fmt: skip

    def query_short_channel_ids(self, node_id: bytes, scids: Iterable[int]) -> None:
        """Make LDK send ``query_short_channel_ids`` to a connected peer."""
        self._call("query", node_id=node_id.hex(), kind="short_ids", scids=[str(s) for s in scids])

    def save_graph(self, path: Path) -> None:
        self._call("save_graph", path=os.path.abspath(path))

    def stderr_tail(self) -> str:
        return self._proc.stderr_tail() if self._proc else ""

    def close(self) -> None:
        if self._proc is not None:
            self._proc.close()
            self._proc = None

    def __enter__(self) -> LdkPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LdkPeerFactory:
    """Starts LdkPeers for one test and stops them all afterwards (the ``ldk_peer_factory`` fixture)."""

    peers: list[LdkPeer] = field(default_factory=list)

    def __call__(self, gossip: Path | Iterable[Path] = (), **kwargs: Any) -> LdkPeer:
        peer = LdkPeer(gossip, **kwargs)
        self.peers.append(peer)
        return peer.start()

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


# ------------------------------------------------------------------------ BOLT 8 test client

INIT, ERROR, WARNING, PING, PONG = 16, 17, 1, 18, 19
GOSSIP_TIMESTAMP_FILTER = 265
GOSSIP_QUERIES_OPTIONAL = 7  # feature bit


def features_with(*bits: int) -> bytes:
    """Feature bytes (big-endian, as on the wire) with the given bits set."""
    value = sum(1 << b for b in bits)
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def feature_bits(features: bytes) -> set[int]:
    value = int.from_bytes(features, "big")
    return {b for b in range(value.bit_length()) if value >> b & 1}


def encode_init(features: bytes, chains: Iterable[bytes]) -> bytes:
    networks = b"".join(chains)
    tlv = bigsize.encode(1) + bigsize.encode(len(networks)) + networks
    return struct.pack(">HH", INIT, 0) + struct.pack(">H", len(features)) + features + tlv


@dataclass(frozen=True, slots=True)
class Init:
    features: bytes  # global and local features OR-ed, as BOLT 1 says to read them
    networks: tuple[bytes, ...] | None


def decode_init(raw: bytes) -> Init:
    (glen,) = struct.unpack_from(">H", raw, 2)
    gf = raw[4 : 4 + glen]
    (flen,) = struct.unpack_from(">H", raw, 4 + glen)
    lf = raw[6 + glen : 6 + glen + flen]
    width = max(len(gf), len(lf))
    features = (int.from_bytes(gf, "big") | int.from_bytes(lf, "big")).to_bytes(width, "big")
    off = 6 + glen + flen
    networks = None
    while off < len(raw):
        t, off = bigsize.decode(raw, off)
        length, off = bigsize.decode(raw, off)
        value = raw[off : off + length]
        off += length
        if t == 1:
            networks = tuple(value[i : i + 32] for i in range(0, len(value), 32))
    return Init(features, networks)


def encode_gossip_timestamp_filter(chain: bytes, first_timestamp: int, timestamp_range: int) -> bytes:
    return struct.pack(">H32sII", GOSSIP_TIMESTAMP_FILTER, chain, first_timestamp, timestamp_range)


def msg_type(raw: bytes) -> int:
    return int(struct.unpack_from(">H", raw)[0])


class PeerClosed(LdkToolError):
    """The peer closed the BOLT 8 connection."""


class GossipTestClient:
    """A BOLT 8 initiator on pyln-proto for tests: init exchange, pings answered, messages collected.

    pyln-proto reads frame headers without looping on short reads (fine on loopback); we wait
    for readability with select() so a timeout never cuts a frame in half.
    """

    def __init__(
        self,
        node_id: bytes,
        port: int,
        *,
        network: str = "bitcoin",
        secret: bytes = b"\x11" * 32,
        features: bytes = features_with(GOSSIP_QUERIES_OPTIONAL),
        host: str = "127.0.0.1",
        timeout: float = 10.0,
    ) -> None:
        from pyln.proto.wire import PrivateKey, PublicKey, connect

        self.chain = chain_hash_of(network)
        self.pings_answered = 0
        self._conn = connect(PrivateKey(secret), PublicKey(node_id), host, port)
        self._conn.connection.settimeout(timeout)
        # Without TCP_NODELAY each pong waits out the peer's delayed ACK (~40 ms), and LDK sends
        # nothing more of its dump until the pong arrives: 7x slower dumps.
        self._conn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = self._read_raw(timeout)
        if first is None or msg_type(first) != INIT:
            raise LdkToolError(f"expected init first, got {first!r:.80}")
        self.their_init = decode_init(first)
        self.send(encode_init(features, [self.chain]))

    def send(self, raw: bytes) -> None:
        self._conn.send_message(raw)

    def _read_raw(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self._conn.connection], [], [], max(timeout, 0.0))
        if not ready:
            return None
        try:
            return bytes(self._conn.read_message())
        except (ValueError, OSError) as e:  # pyln raises ValueError("Short read ...") at EOF
            raise PeerClosed(f"the peer closed the connection ({e})") from e

    def read(self, timeout: float) -> bytes | None:
        """The next message that is not a ping (pings are answered), or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            raw = self._read_raw(deadline - time.monotonic())
            if raw is None:
                return None
            if msg_type(raw) == PING:
                (num_pong_bytes,) = struct.unpack_from(">H", raw, 2)
                if num_pong_bytes < 65532:
                    self.send(struct.pack(">HH", PONG, num_pong_bytes) + bytes(num_pong_bytes))
                    self.pings_answered += 1
                continue
            return raw

    def collect(self, timeout: float, stop: Callable[[bytes], bool] = lambda _raw: False) -> list[bytes]:
        """Read messages until ``stop(message)`` is true for one (it is included) or ``timeout``."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while (raw := self.read(deadline - time.monotonic())) is not None:
            got.append(raw)
            if stop(raw):
                break
        return got

    def collect_gossip(self, count: int, timeout: float) -> list[bytes]:
        """Read until ``count`` gossip messages (types 256-258) came; returns only those."""
        gossip: list[bytes] = []

        def stop(raw: bytes) -> bool:
            if msg_type(raw) in (256, 257, 258):
                gossip.append(raw)
            return len(gossip) >= count

        self.collect(timeout, stop)
        return gossip

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.connection.close()

    def __enter__(self) -> GossipTestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[bytes]:
    """Messages of a [u16 big-endian length][message] records file."""
    data = Path(path).read_bytes()
    off = 0
    while off < len(data):
        (n,) = struct.unpack_from(">H", data, off)
        if off + 2 + n > len(data):
            raise ValueError(f"{path}: record at byte {off} runs past the end")
        yield data[off + 2 : off + 2 + n]
        off += 2 + n
