"""gRPC plumbing shared by the services: servers with health and reflection, channels, chunking.

Every server registers the standard ``grpc.health.v1.Health`` service (what Kubernetes probes and
``lnsync up`` poll) and server reflection (so ``grpcurl`` works). Large blobs travel as streams of
chunks so no message approaches gRPC's size limits; receive limits stay bounded on purpose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from lnsync.config import ConfigError, TlsSettings

# Blobs are streamed in chunks of this size.
CHUNK_SIZE = 1 << 20
# Requests from other services are small; a peer or client never gets to send more than this.
MAX_RECEIVE = 8 << 20
MAX_SEND = 8 << 20

_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_RECEIVE),
    ("grpc.max_send_message_length", MAX_SEND),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

# Replicas share the work (docs/architecture.md, "Scaling out"): a client resolves every address
# of a name (on Kubernetes a headless Service: one per ready pod) and spreads its calls over them;
# a server closes each connection after MAX_CONNECTION_AGE (gRPC adds +-10 % jitter) with a GOAWAY,
# so clients re-resolve and pods added since receive calls too. Calls in flight on a closed
# connection finish: streams such as Ingest live on as long as they need.
MAX_CONNECTION_AGE_MS = 30_000
_CLIENT_OPTIONS: list[tuple[str, Any]] = [
    *_OPTIONS,
    ("grpc.service_config", '{"loadBalancingConfig": [{"round_robin": {}}]}'),
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
]

_SERVER_OPTIONS: list[tuple[str, Any]] = [
    *_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
    ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
    ("grpc.max_connection_age_grace_ms", 2**31 - 1),
]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class _Tls:
    server: grpc.ServerCredentials
    client: grpc.ChannelCredentials
    server_name: str


_tls: _Tls | None = None


def configure_tls(settings: TlsSettings) -> None:
    """Use mutual TLS for every server this process opens and every channel it dials (or plaintext
    again when ``settings.enabled`` is false). Called once at start-up, before any channel exists."""
    global _tls
    if not settings.enabled:
        _tls = None
        return
    try:
        cert = Path(settings.cert_file).read_bytes()
        key = Path(settings.key_file).read_bytes()
        ca = Path(settings.ca_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls: cannot read {exc.filename}: {exc.strerror}") from None
    _tls = _Tls(
        grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True),
        grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert),
        settings.server_name,
    )


def add_port(server: grpc.aio.Server, listen: str) -> int:
    """Listen on ``listen``, with TLS when configured; returns the port (0 on failure)."""
    if _tls is not None:
        return int(server.add_secure_port(listen, _tls.server))
    return int(server.add_insecure_port(listen))


def make_server(max_receive: int = MAX_RECEIVE) -> grpc.aio.Server:
    options = [(k, max_receive if k == "grpc.max_receive_message_length" else v) for k, v in _SERVER_OPTIONS]
    return grpc.aio.server(options=options)


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Sequence[str]
) -> health_aio.HealthServicer:
    """Register health (all services start NOT_SERVING) and reflection; return the health servicer."""
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*service_names, reflection.SERVICE_NAME, "grpc.health.v1.Health"], server
    )
    return health


async def set_serving(health: health_aio.HealthServicer, service_names: Iterable[str], serving: bool) -> None:
    """Flip the overall status ("") and each named service together."""
    status = SERVING if serving else NOT_SERVING
    for name in ("", *service_names):
        await health.set(name, status)


def channel(target: str, extra_options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A channel to another service: mutual TLS when :func:`configure_tls` enabled it, else plaintext.

    Calls go round-robin over every address ``target`` resolves to (``dns:///name:port`` for a
    headless Service); one address, as with ``lnsync up``, behaves as before."""
    options = [*_CLIENT_OPTIONS, *extra_options]
    if _tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    if _tls.server_name:
        options.append(("grpc.ssl_target_name_override", _tls.server_name))
    return grpc.aio.secure_channel(target, _tls.client, options=options)


async def check_health(target: str, service: str = "", timeout: float = 2.0) -> bool:
    """True if the server at ``target`` reports SERVING for ``service``."""
    async with channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == SERVING)


T = TypeVar("T")


def chunks(data: bytes, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Split ``data`` into chunks (at least one, possibly empty)."""
    if not data:
        yield b""
        return
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


async def join_chunks(stream: AsyncIterator[Any]) -> tuple[Any, bytes]:
    """Collect a chunked stream of messages with ``data`` and a first-chunk ``info``."""
    info = None
    parts: list[bytes] = []
    async for msg in stream:
        if info is None:
            info = msg.info
        parts.append(msg.data)
    return info, b"".join(parts)
