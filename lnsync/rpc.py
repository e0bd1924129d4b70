"""gRPC plumbing shared by the services: servers with health and reflection, channels, chunking.

Every server registers the standard ``grpc.health.v1.Health`` service (what Kubernetes probes and
``lnsync up`` poll) and server reflection (so ``grpcurl`` works). Large blobs travel as streams of
chunks so no message approaches gRPC's size limits; receive limits stay bounded on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from lnsync import certs
from lnsync.config import ConfigError, TlsSettings

log = logging.getLogger(__name__)

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
# Calls that only read are retried by gRPC itself when a replica answers UNAVAILABLE before any
# response (a pod shutting down in a rollout, a connection just closed), or CANCELLED (a call that
# raced with a server's graceful stop ends so: tests/test_rpc_retries.py): the next attempt goes to
# another address. Writes (Ingest, ReportSyncComplete, Regenerate) are never retried here; their
# callers own that, with what they know about duplicates.
IDEMPOTENT_READS: dict[str, tuple[str, ...]] = {
    "lnsync.v1.Lookup": ("ComputeDelta", "GraphSummary", "GetSyncStatus", "GetServingPolicy"),
    "lnsync.v1.Snapshots": ("GetSnapshot", "ListSnapshots"),
    "lnsync.v1.Persistence": ("GetSyncStatus", "GetSyncGate", "KnownChannels"),
    "lnsync.v1.Downloader": ("GetStatus",),
}
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}
SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": service, "method": method} for method in methods],
            "retryPolicy": RETRY_POLICY,
        }
        for service, methods in IDEMPOTENT_READS.items()
    ],
}
_CLIENT_OPTIONS: list[tuple[str, Any]] = [
    *_OPTIONS,
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    # A restarted service is back within seconds: retry its address at least every 5 s (gRPC's
    # default backoff grows to 120 s), so clients recover as soon as it listens again.
    ("grpc.max_reconnect_backoff_ms", 5_000),
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


# Which roles (lnsync.certs.ROLES, from the client certificate's common name) may call what. Any
# other lnsync.v1 method is refused; health and reflection are open to every authenticated client.
# A certificate that names no role (one certificate shared by every service, as a Helm release with
# tls.existingSecret has) may call everything.
# The gateway (internet-facing) reaches lookup and the snapshotter only: lookup relays the sync
# state it shows (Lookup/GetSyncStatus).
_SYNC_READERS = frozenset({"lookup", "snapshotter", "downloader", "operator"})
_PRODUCERS = frozenset({"downloader", "import"})
_LOOKUP_USERS = frozenset({"gateway", "snapshotter", "operator"})
POLICY: dict[str, frozenset[str]] = {
    "/lnsync.v1.Persistence/Ingest": _PRODUCERS,
    "/lnsync.v1.Persistence/ReportSyncComplete": _PRODUCERS,
    "/lnsync.v1.Persistence/GetSyncStatus": _SYNC_READERS,
    "/lnsync.v1.Persistence/GetSyncGate": _SYNC_READERS,
    "/lnsync.v1.Persistence/KnownChannels": frozenset({"downloader", "operator"}),
    "/lnsync.v1.Lookup/ComputeDelta": _LOOKUP_USERS,
    "/lnsync.v1.Lookup/GraphSummary": _LOOKUP_USERS,
    "/lnsync.v1.Lookup/GetSyncStatus": frozenset({"gateway", "operator"}),
    "/lnsync.v1.Lookup/GetServingPolicy": _LOOKUP_USERS,
    "/lnsync.v1.Snapshots/GetSnapshot": frozenset({"gateway", "operator"}),
    "/lnsync.v1.Snapshots/ListSnapshots": frozenset({"gateway", "operator"}),
    "/lnsync.v1.Snapshots/Regenerate": frozenset({"operator"}),
    "/lnsync.v1.Downloader/GetStatus": frozenset({"operator"}),
}
_GUARDED_PREFIX = "/lnsync.v1."


def caller_role(context: grpc.aio.ServicerContext) -> str | None:
    """The role of the client certificate of a call ("" for a certificate naming none of ours),
    or None without a client certificate."""
    names = context.auth_context().get("x509_common_name")
    if not names:
        return None
    return certs.role_of(names[0].decode(errors="replace")) or ""


class _Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every lnsync.v1 call: a request that does not parse is refused with INVALID_ARGUMENT (not
    UNKNOWN and a traceback), and with ``check_roles`` the caller's certificate must have a role
    :data:`POLICY` allows (else PERMISSION_DENIED)."""

    def __init__(self, check_roles: bool) -> None:
        self._check_roles = check_roles

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_GUARDED_PREFIX):
            return handler
        allowed = POLICY.get(method, frozenset()) if self._check_roles else None
        return _guarded(handler, method, allowed)


def _allowed(context: grpc.aio.ServicerContext, allowed: frozenset[str] | None) -> bool:
    """Whether the caller may make the call (``allowed`` None: no role check)."""
    if allowed is None:
        return True
    role = caller_role(context)
    return role == "" or (role is not None and role in allowed)


async def _authorize(context: grpc.aio.ServicerContext, method: str, allowed: frozenset[str] | None) -> None:
    if _allowed(context, allowed):
        return
    role = caller_role(context)
    log.debug("refused %s to role %s", method, role)
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{role or 'this client'} may not call {method}")


@dataclass(frozen=True, slots=True)
class _Malformed:
    """A request message that did not parse (in place of the message)."""

    error: str


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, or anything a parser raises
            return _Malformed(type(exc).__name__)

    return parse


async def _refuse_malformed(context: grpc.aio.ServicerContext, request: Any) -> None:
    if isinstance(request, _Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request ({request.error})")


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        await _refuse_malformed(context, request)
        yield request


_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, False, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, True, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True, True),
)


def _guarded(
    handler: grpc.RpcMethodHandler, method: str, allowed: frozenset[str] | None
) -> grpc.RpcMethodHandler:
    """``handler`` with the role check (unless ``allowed`` is None) and the parse check first."""
    for attr, factory, stream_in, stream_out in _KINDS:
        inner = getattr(handler, attr)
        if inner is None:
            continue

        async def admitted(request: Any, context: grpc.aio.ServicerContext, many: bool = stream_in) -> Any:
            if many and not _allowed(context, allowed):
                # Read what the client sent first: refusing a stream before reading from it races
                # with the client's writes in gRPC core (1 in ~200: INTERNAL instead of the refusal).
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(anext(aiter(request)), 1.0)
            await _authorize(context, method, allowed)
            if many:
                return _checked(request, context)
            await _refuse_malformed(context, request)
            return request

        if stream_out:

            async def streaming(request: Any, context: grpc.aio.ServicerContext, inner: Any = inner) -> Any:
                async for response in inner(await admitted(request, context), context):
                    yield response

            behaviour: Any = streaming
        else:

            async def answering(request: Any, context: grpc.aio.ServicerContext, inner: Any = inner) -> Any:
                return await inner(await admitted(request, context), context)

            behaviour = answering
        return factory(
            behaviour,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return handler


def make_server(max_receive: int = MAX_RECEIVE) -> grpc.aio.Server:
    """A server with the bounded options whose lnsync.v1 calls go through :class:`_Guard` (with
    TLS configured, also the role check)."""
    options = [(k, max_receive if k == "grpc.max_receive_message_length" else v) for k, v in _SERVER_OPTIONS]
    return grpc.aio.server(options=options, interceptors=[_Guard(check_roles=_tls is not None)])


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


# A call that failed with one of the codes gRPC's own retries take (they already tried every address
# the channel knows) gets one more attempt once the channel connects again: see Remote.
RETRY_ONCE_MORE = tuple(grpc.StatusCode[code] for code in RETRY_POLICY["retryableStatusCodes"])
# How long a channel may stay in TRANSIENT_FAILURE before a caller waiting for it makes a new one.
RENEW_AFTER = 2.0
# How long a replaced channel keeps the calls already on it.
_OLD_CHANNEL_GRACE = 60.0

S = TypeVar("S")
T = TypeVar("T")


class Remote:
    """A channel to one service that is made again when it stays unreachable, and its stubs.

    gRPC's DNS resolver retries a name that did not resolve with a backoff that grows to 120 s and
    that no channel option changes. A headless Service with no ready pod does not resolve: when every
    pod of a component restarts (persistence after a crash, lookup in a rollout) a channel would find
    the new pods up to a minute after they are Ready (measured: a 40 s outage left 17 s between
    resolutions). :meth:`ready` waits for a connection, and replaces a channel that has been failing
    for :data:`RENEW_AFTER` (a new channel resolves at once), at most that often. :meth:`call`
    retries a call that failed UNAVAILABLE or CANCELLED once, after :meth:`ready`.

    Stubs from :meth:`stub` always use the current channel, so holders of one need not know."""

    def __init__(self, target: str, extra_options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self._options = tuple(extra_options)
        self._channel = channel(target, self._options)
        self._made_at = time.monotonic()
        self._stubs: dict[type, Any] = {}
        self._old: dict[grpc.aio.Channel, asyncio.Task[None]] = {}
        self.renewals = 0
        self._in_a_row = 0  # renewals since the channel was last seen READY
        self._channel.get_state(try_to_connect=True)

    def stub(self, cls: Callable[[grpc.aio.Channel], S]) -> S:
        """A stub of ``cls`` whose calls go to whatever channel is current when they are made."""
        return _StubProxy(self, cls)  # type: ignore[return-value]

    def _stub_now(self, cls: Callable[[grpc.aio.Channel], Any]) -> Any:
        made = self._stubs.get(cls)  # type: ignore[call-overload]
        if made is None:
            made = self._stubs[cls] = cls(self._channel)  # type: ignore[index]
        return made

    def _renew(self, age: float) -> None:
        old = self._channel
        self._channel = channel(self.target, self._options)
        self._made_at = time.monotonic()
        self._stubs.clear()
        self.renewals += 1
        self._in_a_row += 1
        self._channel.get_state(try_to_connect=True)
        # Once an outage at INFO; every 2 s after that would only repeat it.
        level = logging.INFO if self._in_a_row == 1 else logging.DEBUG
        log.log(level, "%s unreachable on a channel made %.0f s ago: dialling it again", self.target, age)
        task = asyncio.create_task(old.close(_OLD_CHANNEL_GRACE))
        self._old[old] = task
        task.add_done_callback(lambda _: self._old.pop(old, None))

    async def ready(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the channel to connect (making it again while it keeps
        failing); False if it did not."""
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            state = self._channel.get_state(try_to_connect=True)
            if state == grpc.ChannelConnectivity.READY:
                self._in_a_row = 0
                return True
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE and now - self._made_at >= RENEW_AFTER:
                self._renew(now - self._made_at)
            remaining = deadline - now
            if remaining <= 0:
                return False
            current = self._channel
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that
                # comes as the channel connects, and a holder stopping this loop would wait forever.
                async with asyncio.timeout(min(remaining, RENEW_AFTER)):
                    await current.channel_ready()
            except TimeoutError:
                pass
            except grpc.aio.UsageError:
                # Another caller's ready() replaced (and began closing) the channel waited on:
                # look at the new one. A channel closed by close() itself is the caller's error.
                if current is self._channel:
                    raise

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        wait: float,
        on_retry: Callable[[grpc.aio.AioRpcError], object] | None = None,
    ) -> T:
        """``attempt()``, and once more if it failed UNAVAILABLE or CANCELLED and the channel
        connects within ``wait`` seconds (``on_retry`` is told of the first failure then); else the
        first failure is raised."""
        try:
            return await attempt()
        except grpc.aio.AioRpcError as first:
            if first.code() not in RETRY_ONCE_MORE or not await self.ready(wait):
                raise
            if on_retry is not None:
                on_retry(first)
            return await attempt()

    async def close(self) -> None:
        await self._channel.close()
        for old, task in list(self._old.items()):
            await old.close()
            await asyncio.gather(task, return_exceptions=True)


class _StubProxy:
    """What :meth:`Remote.stub` returns: attribute access goes to a stub on the current channel."""

    __slots__ = ("_cls", "_remote")

    def __init__(self, remote: Remote, cls: Callable[[grpc.aio.Channel], Any]) -> None:
        self._remote, self._cls = remote, cls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._remote._stub_now(self._cls), name)


async def check_health(target: str, service: str = "", timeout: float = 2.0) -> bool:
    """True if the server at ``target`` reports SERVING for ``service``."""
    async with channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == SERVING)


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
