"""Configuration: one typed model, read from a TOML file and ``LNSYNC_*`` environment variables.

Precedence (highest first): command-line flags the CLI applies, environment variables, the TOML
file, defaults. Nested keys use ``__`` in the environment (``LNSYNC_GATEWAY__LISTEN``). Unknown
keys are errors, so a typo never silently falls back to a default. ``load_settings`` turns every
validation failure into one :class:`ConfigError` whose message names the bad key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lnsync.chain import normalize_network
from lnsync.rgs import ladder

ENV_PREFIX = "LNSYNC_"
CONFIG_ENV = "LNSYNC_CONFIG"

# Well-connected public mainnet nodes used when no peer is configured.
DEFAULT_MAINNET_PEERS = (
    # Wallet of Satoshi (the reference server's default peer)
    "035e4ff418fc8b5554c5d9eea66396c227bd429a3251c8cbc711002ba215bfc226@170.75.163.209:9735",
    # ACINQ
    "03864ef025fde8fb587d989186ce6a4a186895ee44a926bfc370e2c366597a3f8f@3.33.236.230:9735",
    # Kraken
    "02f1a8c87607f415c8f22c00593002775941dea48869ce23096af27b0cfdcc0b69@52.13.118.208:9735",
)

_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
_PUBKEY_RE = re.compile(r"^0[23][0-9a-fA-F]{64}$")
_HOST_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class ConfigError(Exception):
    """A configuration problem, worded for the operator (no traceback needed)."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A Lightning peer: ``pubkey@host:port`` (IPv4, ``[IPv6]`` or a DNS name)."""

    pubkey: bytes
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        text = text.strip()
        if "@" not in text:
            raise ValueError(f"peer {text!r} must look like <66-hex-pubkey>@<host>:<port>")
        key, _, addr = text.partition("@")
        if not _PUBKEY_RE.match(key):
            raise ValueError(f"peer {text!r}: {key[:70]!r} is not a 33-byte compressed public key in hex")
        host, port = _split_host_port(addr, text)
        if host.lower().endswith(".onion"):
            raise ValueError(f"peer {text!r}: Tor (.onion) peers are not supported; use a clearnet address")
        return cls(bytes.fromhex(key), host, port)

    @property
    def node_id(self) -> str:
        return self.pubkey.hex()

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.node_id}@{host}:{self.port}"


def _split_host_port(addr: str, whole: str) -> tuple[str, int]:
    if addr.startswith("["):
        host, sep, rest = addr[1:].partition("]")
        if not sep:
            raise ValueError(f"peer {whole!r}: unterminated IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ValueError(f"peer {whole!r}: {host!r} is not an IPv6 address") from exc
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"peer {whole!r}: expected ':' after the IPv6 address")
    else:
        if addr.count(":") > 1:
            raise ValueError(f"peer {whole!r}: write IPv6 addresses in brackets, e.g. [::1]:9735")
        host, _, port_text = addr.partition(":")
        if not host or not _HOST_RE.match(host):
            raise ValueError(f"peer {whole!r}: {host!r} is not a valid host name or address")
    port = 9735
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"peer {whole!r}: port {port_text!r} is not in 1..65535")
        port = int(port_text)
    return host, port


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` as used for listening sockets and gRPC targets."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit ':port' means all interfaces


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


def _comma_list(v: Any) -> Any:
    """A list setting from its environment form, comma-separated (empty items dropped)."""
    if isinstance(v, str):
        return [item for item in (part.strip() for part in v.split(",")) if item]
    return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceEndpoint(_Section):
    """Where a gRPC service listens and where its clients reach it."""

    # Where the service listens (host:port; ``lnsync up`` gives downloader i this port + i).
    listen: str
    # What clients dial; defaults to ``listen`` (right for one machine; in Kubernetes the Service name).
    address: str = ""
    # Where to serve Prometheus metrics (host:port, HTTP); empty: off.
    metrics_listen: str = ""

    @field_validator("listen")
    @classmethod
    def _listen_ok(cls, v: str) -> str:
        return _check_listen(v)

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_ok(cls, v: str) -> str:
        return _check_listen(v) if v else v

    @property
    def target(self) -> str:
        return self.address or self.listen


class PersistenceSettings(ServiceEndpoint):
    listen: str = "127.0.0.1:50051"
    # Peers that must report their initial sync before the graph counts as fully synced.
    sync_quorum: int = Field(default=1, ge=1)
    # Largest batch written in one transaction; the writer adapts below it.
    max_batch: int = Field(default=5000, ge=1, le=100_000)
    # Channel updates of unknown channels are kept this long waiting for the announcement.
    pending_update_ttl: int = Field(default=7 * 86400, ge=0)
    # How often retention pruning runs (seconds); 0 disables.
    prune_interval: int = Field(default=3600, ge=0)
    # Channel updates superseded for longer than this are pruned: at least the longest scope any
    # client delta or snapshot covers plus its margin (ladder.min_superseded_retention; checked
    # against the snapshotter interval and ingest_lag by Settings).
    superseded_retention: int = Field(default=33 * 86400, ge=86400)
    # Per-peer delivery records (the gossip observer's raw data) are kept this long.
    observation_retention: int = Field(default=7 * 86400, ge=0)
    # The gossip observer (services/observer): raw deliveries are folded into summaries of this
    # many seconds (a divisor of a day; 0 disables the job), once no delivery can still count.
    observation_interval: int = Field(default=3600, ge=0, le=86400)
    # Deliveries later than this after a message's first arrival count as late, not as propagation.
    observation_max_delay: int = Field(default=3600, ge=1, le=86400)
    # Summaries are kept this long (0: for ever).
    observation_summary_retention: int = Field(default=400 * 86400, ge=0)
    # Producers (peers and imports) known at most; rows that never delivered anything are pruned
    # to make room, and a new producer beyond this is refused (RESOURCE_EXHAUSTED).
    max_peers: int = Field(default=1000, ge=1, le=100_000)
    # An Ingest stream that sends nothing this long is ended (the producer reconnects when it has
    # something to send); idle streams otherwise hold a task and buffers for ever.
    ingest_idle_timeout: float = Field(default=900.0, gt=0)

    @field_validator("observation_interval")
    @classmethod
    def _divides_a_day(cls, v: int) -> int:
        if v and (v < 60 or 86400 % v):
            raise ValueError("must be 0 or a divisor of 86400 of at least 60 seconds")
        return v

    @model_validator(mode="after")
    def _raw_outlives_an_interval(self) -> PersistenceSettings:
        """An interval is summarised once max_delay has passed after it; raw rows pruned before
        that would be lost to the summaries."""
        if self.observation_interval and self.observation_retention:
            needed = 2 * (self.observation_interval + self.observation_max_delay)
            if self.observation_retention < needed:
                raise ValueError(
                    f"observation_retention must be 0 or at least 2 x (observation_interval + "
                    f"observation_max_delay) = {needed} s while the observer runs"
                )
        return self


# The largest random peer set any configuration may ask for (observer.max_random_peers).
RANDOM_PEERS_LIMIT = 500


class ObserverSettings(ServiceEndpoint):
    """The gossip observer: its report (``lnsync observe report``) and random peer sets
    (``lnsync serve random-peers``, services/observer/peerset.py; ``listen`` is its health)."""

    # Health of ``lnsync serve random-peers``.
    listen: str = "127.0.0.1:50080"
    # Reconciliation intervals (seconds) at which the report estimates what set reconciliation
    # would have spent instead of flooding (services/observer/recon.py).
    reconcile_intervals: list[int] = Field(default_factory=lambda: [1, 10, 60, 600])
    # Random peer sets: observe this many nodes picked at random from the stored graph (0: off).
    random_peers: int = Field(default=0, ge=0)
    # The most random_peers may ask for (a guard against a typo opening thousands of connections).
    max_random_peers: int = Field(default=32, ge=1, le=RANDOM_PEERS_LIMIT)
    # Seconds per peer-set epoch; every epoch about rotate_share of the set is replaced.
    rotate_interval: int = Field(default=3600, ge=1, le=30 * 86400)
    # The share of the random peer set replaced every epoch.
    rotate_share: float = Field(default=0.25, gt=0, le=1)
    # Same seed, same graph, same epoch: same set.
    seed: int = Field(default=0, ge=0, lt=2**63)
    # A peer that sends nothing (not even a pong) for this long is replaced as stalled.
    stall_timeout: int = Field(default=120, ge=3, le=3600)
    # New connections (first attempts and reconnects) per minute, over the whole set.
    attempts_per_minute: int = Field(default=30, ge=1, le=600)
    # A peer replaced for refusing, stalling or misbehaving is not chosen again for this long.
    exclude_failed_for: int = Field(default=86400, ge=0)

    @field_validator("reconcile_intervals")
    @classmethod
    def _intervals_ok(cls, v: list[int]) -> list[int]:
        if not 1 <= len(v) <= 8 or any(not 1 <= x <= 86400 for x in v) or sorted(set(v)) != v:
            raise ValueError("must be 1 to 8 increasing intervals of 1..86400 seconds")
        return v

    @model_validator(mode="after")
    def _set_within_bounds(self) -> ObserverSettings:
        if self.random_peers > self.max_random_peers:
            raise ValueError(
                f"observer.random_peers ({self.random_peers}) exceeds observer.max_random_peers "
                f"({self.max_random_peers}); raise the maximum (at most {RANDOM_PEERS_LIMIT}) "
                "if you mean it"
            )
        return self


class LookupSettings(ServiceEndpoint):
    listen: str = "127.0.0.1:50052"
    # A read-only PostgreSQL URL (a streaming replica of database_url) that lookup reads deltas
    # from whenever the replica has replayed what they need, else it reads database_url; empty: off.
    database_url: str = ""
    # Largest number of ComputeDelta calls computed at the same time.
    max_concurrent: int = Field(default=2, ge=1)
    # Granularity that dynamic-delta header timestamps are rounded down to (seconds).
    timestamp_granularity: int = Field(default=60, ge=1)
    # One dynamic delta in this many is proven after it is answered, off the request path
    # (lnsync/rgs/proof.py: the full snapshot at the client's T, then the delta, against the
    # store's live graph at R); a failure is logged and counted. 0: none.
    proof_sample: int = Field(default=1000, ge=0)


class SnapshotterSettings(ServiceEndpoint):
    listen: str = "127.0.0.1:50053"
    # Seconds between generations; a multiple of 3 hours (the timestamp grid).
    interval: int = Field(default=86400, ge=10800)
    # Generations kept after a new one is published (readers may still use them).
    keep_generations: int = Field(default=2, ge=1)
    # When the aligned reference time precedes the first full sync (a generation for it would miss
    # everything downloaded since), make the first generation for now - ingest_lag instead.
    first_after_sync: bool = True
    # Prove every generation before it is published (lnsync/rgs/proof.py: its full v1 and v2
    # blobs and chains of scoped ones, applied by a client model, against the store's live graph);
    # one that fails is not published. Off: generations are published unproven.
    prove: bool = True
    # Scopes per generation whose chain is also proven from a full snapshot at the scope's own start
    # (v2; one more full delta from lookup each), besides the one served to the previous
    # generation's clients, which is always proven. 0 by default: each costs about as much as the
    # rest of the proof again (docs/benchmarks.md).
    proof_samples: int = Field(default=0, ge=0)

    @field_validator("interval")
    @classmethod
    def _grid(cls, v: int) -> int:
        if v % 10800:
            raise ValueError("must be a multiple of 10800 seconds (3 hours)")
        return v


class GatewaySettings(_Section):
    # The public port: RGS snapshots and deltas, /healthz and /readyz.
    listen: str = "127.0.0.1:8080"
    # The operator routes (/metrics, /api/status, the status page, /openapi.json): keep it private.
    admin_listen: str = "127.0.0.1:8081"
    # Concurrent dynamic-delta computations before answering 429.
    max_dynamic: int = Field(default=4, ge=1)
    # Cache-Control max-age of RGS answers, seconds (deltas: at most one lookup granularity); see
    # docs/operations.md, "Putting a CDN in front".
    cache_max_age: int = Field(default=3600, ge=0)
    # Cache-Control s-maxage (shared caches such as a CDN; deltas: likewise capped), seconds.
    cache_s_maxage: int = Field(default=3600, ge=0)
    # Cache-Control stale-while-revalidate: how long a cache may serve a stale answer while it
    # revalidates, seconds.
    cache_stale_while_revalidate: int = Field(default=300, ge=0)
    # Cache-Control stale-if-error: how long a cache may serve a stale answer while the gateway fails.
    cache_stale_if_error: int = Field(default=86400, ge=0)

    @property
    def cache_lifetime(self) -> int:
        """How long after the gateway hands out a snapshot a cache may still serve it while the
        gateway answers (stale-if-error, an outage, is outside it): part of the apply lag."""
        return max(self.cache_max_age, self.cache_s_maxage) + self.cache_stale_while_revalidate

    # Origins browsers may fetch RGS answers from (Access-Control-Allow-Origin): "*" for any, a
    # list of origins (scheme://host[:port]), or empty for no CORS headers. In the environment a
    # comma-separated list.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    # Worker processes sharing the port (SO_REUSEPORT); max_dynamic is split between them.
    workers: int = Field(default=2, ge=1, le=64)
    # Open client connections per worker; one more is answered 503 and closed.
    max_connections: int = Field(default=4000, ge=1, le=1_000_000)
    # Seconds a connection may take to complete a request after it opened or after its previous
    # answer (header and idle timeout; also how long a half-closed connection may stay).
    header_timeout: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("listen", "admin_listen")
    @classmethod
    def _listen_ok(cls, v: str) -> str:
        return _check_listen(v)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: Any) -> Any:
        return _comma_list(v)

    @field_validator("cors_origins")
    @classmethod
    def _origins_ok(cls, v: list[str]) -> list[str]:
        if "*" in v and len(v) > 1:
            raise ValueError('"*" allows every origin: list it alone')
        for origin in v:
            if origin != "*" and not _ORIGIN_RE.match(origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return v

    @model_validator(mode="after")
    def _admin_apart(self) -> GatewaySettings:
        port = parse_listen(self.listen)[1]
        if port and parse_listen(self.admin_listen)[1] == port:
            raise ValueError("admin_listen must use another port than listen (it is not for the public)")
        return self


class ChainSettings(BaseModel):
    """Where funding outputs of new channels are checked (lnsync.chain); "none": not checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where new channels' funding outputs are checked: none (not checked), bitcoind or esplora.
    source: Literal["none", "bitcoind", "esplora"] = "none"
    # bitcoind: its JSON-RPC URL (http://127.0.0.1:8332); esplora: the API root (.../api).
    url: str = ""
    # bitcoind authentication: its cookie file, or a user and a file whose first line is the password.
    cookie_file: str = ""
    # bitcoind's RPC user (with password_file).
    user: str = ""
    # A file whose first line is the RPC password (with user).
    password_file: str = ""
    # Seconds one request to the source may take.
    timeout: float = Field(default=10.0, gt=0, le=300)
    # Checks talking to the source at once (per downloader).
    max_concurrent: int = Field(default=8, ge=1, le=256)
    # Requests per second to the source (0: no limit; a public Esplora instance wants one).
    max_rate: float = Field(default=0.0, ge=0)
    # Seconds between persistence's re-checks of stored channels for spent funding outputs (0: off).
    recheck_interval: int = Field(default=3600, ge=0)

    @model_validator(mode="after")
    def _url_given(self) -> ChainSettings:
        if self.source != "none" and not self.url:
            raise ValueError(f"chain.url is required with chain.source = {self.source}")
        return self


class DownloaderSettings(ServiceEndpoint):
    listen: str = "127.0.0.1:50060"
    # The one peer this downloader process talks to (``lnsync up`` starts one per entry of ``peers``).
    peer: str = ""
    # Seconds without any message before the peer is considered stalled and dropped.
    stall_timeout: int = Field(default=300, ge=10)
    # Messages kept in memory waiting for acknowledgement before the peer socket stops being read.
    max_unacked: int = Field(default=20_000, ge=100)
    # Shortest delay before reconnecting to the peer, seconds (doubled after each failure).
    backoff_min: float = Field(default=1.0, gt=0)
    # Longest delay before reconnecting to the peer, seconds.
    backoff_max: float = Field(default=300.0, gt=0)
    # The initial sync counts as complete once new gossip has stayed below a trickle for this many
    # seconds and a ping round trip confirmed it (services/downloader/sync.py).
    sync_settle: float = Field(default=10.0, gt=0, le=600)
    # Seconds between reports to persistence of how far the peer is caught up (everything it sent
    # before then is stored): the point a restarted downloader asks its peer to resume from.
    caught_up_interval: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("peer")
    @classmethod
    def _peer_ok(cls, v: str) -> str:
        if v:
            PeerAddress.parse(v)
        return v


class PeerControllerSettings(ServiceEndpoint):
    """``lnsync serve peer-controller`` (Kubernetes only): one downloader Deployment per peer listed
    in a ConfigMap."""

    listen: str = "127.0.0.1:50070"
    # Namespace of the ConfigMap and the Deployments; empty: the pod's own (or the kubeconfig's).
    namespace: str = ""
    # The ConfigMap with the "peers" list and the "downloader-deployment.json" template.
    configmap: str = "lnsync-peers"
    # Seconds between full reconciliations; changes are also watched.
    resync_interval: int = Field(default=300, ge=10, le=86400)


class TlsSettings(_Section):
    """gRPC between the services over mutual TLS: every server presents ``cert_file`` and requires a
    client certificate signed by ``ca_file``; every client presents the same pair and checks the
    server against ``ca_file``. Off by default (loopback under ``lnsync up``)."""

    # gRPC between the services over mutual TLS (docs/reliability.md). ``lnsync up`` without these
    # settings makes a CA and a certificate per service in <data dir>/tls/ (``--plaintext``: off).
    enabled: bool = False
    # This process's certificate (PEM), presented as server and as client.
    cert_file: str = ""
    # Its private key (PEM).
    key_file: str = ""
    # The CA (PEM) every peer's certificate must be signed by.
    ca_file: str = ""
    # Name expected in the servers' certificates; empty: the host part of the address dialled.
    server_name: str = ""

    @model_validator(mode="after")
    def _files_given(self) -> TlsSettings:
        if self.enabled:
            missing = [k for k in ("cert_file", "key_file", "ca_file") if not getattr(self, k)]
            if missing:
                raise ValueError(f"tls.enabled needs {', '.join('tls.' + k for k in missing)}")
        return self


def _default_data_dir() -> Path:
    """``$XDG_DATA_HOME/lnsync`` for a user; ``/var/lib/lnsync`` for root (the embedded PostgreSQL
    runs as an unprivileged user, which cannot enter root's home)."""
    if os.geteuid() == 0:
        return Path("/var/lib/lnsync")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lnsync"


class Settings(BaseSettings):
    """Every setting lnsync reads. README.md's configuration table is generated from this module
    (the comment above each field is its meaning): ``python scripts/config_table.py``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # The chain: bitcoin (or mainnet), testnet, testnet4, signet, regtest.
    network: str = "bitcoin"
    # PostgreSQL URL (postgresql://user:pass@host:port/db). Empty: an embedded PostgreSQL in data_dir.
    database_url: str = ""
    # The embedded database and local state (``lnsync up``).
    data_dir: Path = Field(default_factory=_default_data_dir)
    # The lowest level logged.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Log format: "text" for people, "json" for log pipelines.
    log_format: Literal["text", "json"] = "text"
    # Peers as pubkey@host:port (IPv4, [IPv6] or a DNS name); in the environment a comma-separated
    # list. Empty on bitcoin: three well-connected public nodes (DEFAULT_MAINNET_PEERS).
    peers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Seconds a live producer may lag between receiving a message and it being committed. Stored
    # "seen" times are never earlier than commit time minus this, and snapshots for reference time
    # R are computed no earlier than R plus this, so no client ever misses a late-committed message
    # (docs/architecture.md, "seen").
    ingest_lag: int = Field(default=60, ge=1, le=3600)

    persistence: PersistenceSettings = PersistenceSettings()
    lookup: LookupSettings = LookupSettings()
    snapshotter: SnapshotterSettings = SnapshotterSettings()
    gateway: GatewaySettings = GatewaySettings()
    downloader: DownloaderSettings = DownloaderSettings()
    peer_controller: PeerControllerSettings = PeerControllerSettings()
    observer: ObserverSettings = ObserverSettings()
    tls: TlsSettings = TlsSettings()
    chain: ChainSettings = ChainSettings()

    @field_validator("network")
    @classmethod
    def _network_ok(cls, v: str) -> str:
        return normalize_network(v)

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, v: Any) -> Any:
        return _comma_list(v)

    @field_validator("peers")
    @classmethod
    def _peers_ok(cls, v: list[str]) -> list[str]:
        seen: set[bytes] = set()
        for item in v:
            key = PeerAddress.parse(item).pubkey
            if key in seen:
                raise ValueError(f"peer {key.hex()} is listed twice")
            seen.add(key)
        return v

    @model_validator(mode="after")
    def _retention_covers_deltas(self) -> Settings:
        """Superseded updates pruned too early would lose the change masks a delta needs."""
        needed = ladder.min_superseded_retention(self.snapshotter.interval, self.ingest_lag)
        if self.persistence.superseded_retention < needed:
            raise ValueError(
                f"persistence.superseded_retention must be at least {needed} s "
                f"({needed / 86400:.2f} days): deltas reach back max(14 days, the largest snapshot "
                f"scope {ladder.scopes(self.snapshotter.interval)[-1] // 86400} days) and are "
                f"computed up to ingest_lag + {ladder.APPLY_MARGIN} s later"
            )
        return self

    @property
    def peer_addresses(self) -> list[PeerAddress]:
        peers = self.peers
        if not peers and self.network == "bitcoin":
            peers = list(DEFAULT_MAINNET_PEERS)
        return [PeerAddress.parse(p) for p in peers]


def _unknown_env_keys() -> list[str]:
    """LNSYNC_* variables that name no setting (pydantic would silently ignore them)."""
    known_top = {name.upper() for name in Settings.model_fields} | {"CONFIG"}
    sections = {
        name.upper(): field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    bad = []
    for var in os.environ:
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :]
        top, _, sub = rest.partition("__")
        if top not in known_top:
            bad.append(var)
        elif sub:
            model = sections.get(top)
            if model is None or sub.lower() not in model.model_fields:
                bad.append(var)
    return sorted(bad)


def _format_error(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        lines.append(msg if key == "(root)" else f"{key}: {msg}")
    return f"invalid configuration ({origin}): " + "; ".join(lines)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (``config_file`` or $LNSYNC_CONFIG, if any), the environment and overrides.

    Raises :class:`ConfigError` with one clear line on any problem.
    """
    raw_path = config_file or os.environ.get(CONFIG_ENV)
    path = Path(raw_path) if raw_path else None
    origin = "environment"
    if path is not None:
        origin = f"{path} and environment"
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    bad_env = _unknown_env_keys()
    if bad_env:
        raise ConfigError(f"unknown environment variable(s): {', '.join(bad_env)}")

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # Earlier sources win: CLI overrides, then the environment, then the file.
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    try:
        return _Loaded(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin)) from None
