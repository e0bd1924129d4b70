"""Peer controller: keeps one downloader Deployment per peer listed in a ConfigMap, and (with
``observer.random_peers``) per peer of the observer's random peer set, which it maintains in the
store (:func:`services.observer.random_peers.maintain`: who failed, rotation, epoch rows).

Level-triggered: every round reads the ConfigMap and the Deployments labelled as the controller's
own, and creates, replaces or deletes until they match (see :mod:`services.peer_controller.spec`).
Rounds run when a watch sees the ConfigMap or a managed Deployment change, and at least every
``resync_interval`` seconds. Any API failure is retried with backoff; the process never exits
because the cluster misbehaves. Health: SERVING after a round that fully succeeded.

The ``kubernetes`` client is synchronous, so API calls run in worker threads with request
timeouts, and the watches in daemon threads that only wake the event loop. It is the
``[controller]`` extra, imported when a controller is made (:func:`kube`), so that this module,
like every service module, imports without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from lnsync import db, schema
from lnsync.config import PeerAddress, Settings
from lnsync.db import require_database_url
from lnsync.extras import require
from lnsync.retry import Backoff
from lnsync.service import ReadySignal, run_service
from services.observer import random_peers
from services.peer_controller import spec
from services.peer_controller.metrics import ACTIONS, PEERS, ROUNDS

if TYPE_CHECKING:
    from kubernetes import client

log = logging.getLogger(__name__)

# (connect, read) seconds for every API call: a hung API server must not hang a round.
REQUEST_TIMEOUT = (5.0, 20.0)
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Kube:
    """The parts of the ``kubernetes`` client the controller uses."""

    client: Any
    config: Any  # kubernetes.config and kubernetes.watch have no type hints
    watch: Any
    ApiException: Any
    # Failures worth a retry: the API server answered with an error, or could not be reached.
    api_errors: tuple[type[BaseException], ...]


@cache
def kube() -> Kube:
    """Import the Kubernetes client, or say which extra installs it (MissingExtraError)."""
    require(
        "kubernetes",
        "the peer controller (lnsync serve peer-controller; its container image is the Dockerfile's "
        "`controller` target, lnsync-controller, which has it)",
    )
    import urllib3  # a dependency of kubernetes
    from kubernetes import client, config, watch
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    errors = (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException)
    return Kube(client, config, watch, ApiException, errors)


@dataclass
class RoundResult:
    """What one round did; ``problems`` non-empty means the state is not what the operator asked."""

    created: int = 0
    replaced: int = 0
    deleted: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Watcher(threading.Thread):
    """Calls ``notify`` whenever a watched list changes (and once per restart of the watch)."""

    def __init__(
        self, what: str, list_fn: Callable[..., Any], timeout: int, notify: Callable[[], None], **kw: Any
    ) -> None:
        super().__init__(name=f"watch-{what}", daemon=True)
        self.what, self.list_fn, self.timeout, self.notify, self.kw = what, list_fn, timeout, notify, kw
        self.stopping = threading.Event()
        self._watch: Any = None

    def run(self) -> None:
        backoff = Backoff(1.0, 60.0)
        while not self.stopping.is_set():
            self._watch = kube().watch.Watch()
            try:
                for _event in self._watch.stream(
                    self.list_fn, timeout_seconds=self.timeout, _request_timeout=self.timeout + 30, **self.kw
                ):
                    self.notify()
                    backoff.reset()
            except kube().api_errors as exc:
                log.debug("watch of %s failed (%s); retrying", self.what, exc)
                self.stopping.wait(backoff.next_delay())
            except Exception as exc:  # a client bug must not end the thread for good
                log.warning("watch of %s failed unexpectedly (%r); retrying", self.what, exc)
                self.stopping.wait(backoff.next_delay())

    def stop(self) -> None:
        self.stopping.set()
        if self._watch is not None:
            self._watch.stop()


class PeerController:
    service_names: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        self.k = kube()
        self.settings = settings.peer_controller
        self.all_settings = settings
        self.observer = settings.observer
        self.namespace = self.settings.namespace
        self.api: client.ApiClient | None = None
        self.pool: Any = None  # PostgreSQL, only with observer.random_peers
        if self.observer.random_peers:
            require_database_url(settings)  # a ConfigError at start, not a failing round
        self.watchers: list[_Watcher] = []
        self._changed: asyncio.Event | None = None

    def register(self, server: grpc.aio.Server) -> None:
        """Only health and reflection: the controller has no RPCs of its own."""

    # --- connection -------------------------------------------------------------------------

    def _connect(self) -> client.ApiClient:
        config = self.k.config
        if self.api is None:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
                if not self.namespace and SA_NAMESPACE_FILE.is_file():
                    self.namespace = SA_NAMESPACE_FILE.read_text().strip()
            else:
                config.load_kube_config()
                if not self.namespace:
                    _, active = config.list_kube_config_contexts()
                    self.namespace = active.get("context", {}).get("namespace", "")
            self.namespace = self.namespace or "default"
            self.api = self.k.client.ApiClient()
            log.info("watching ConfigMap %s/%s", self.namespace, self.settings.configmap)
        return self.api

    def _start_watchers(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.watchers or self.api is None:
            return
        changed = self._changed
        assert changed is not None

        def notify() -> None:
            loop.call_soon_threadsafe(changed.set)

        core, apps = self.k.client.CoreV1Api(self.api), self.k.client.AppsV1Api(self.api)
        timeout = self.settings.resync_interval
        self.watchers = [
            _Watcher(
                "configmap",
                core.list_namespaced_config_map,
                timeout,
                notify,
                namespace=self.namespace,
                field_selector=f"metadata.name={self.settings.configmap}",
            ),
            _Watcher(
                "deployments",
                apps.list_namespaced_deployment,
                timeout,
                notify,
                namespace=self.namespace,
                label_selector=f"{spec.MANAGED_BY_LABEL}={spec.MANAGED_BY}",
            ),
        ]
        for w in self.watchers:
            w.start()

    # --- one round (runs in a worker thread) --------------------------------------------------

    async def choose_random(self) -> list[PeerAddress]:
        """The observer's random peer set this round (services/observer/random_peers.maintain):
        its state lives in the store, so a restarted controller continues the same set."""
        if self.pool is None:
            pool = await db.create_pool(require_database_url(self.all_settings), min_size=1, max_size=1)
            try:
                async with pool.acquire() as conn:
                    await schema.migrate(conn)
            except BaseException:
                await pool.close()
                raise
            self.pool = pool
        async with self.pool.acquire() as conn:
            chosen, failed = await random_peers.maintain(conn, self.observer, time.time())
        for outcome, n in failed.items():
            log.info("random peer set: %d peer(s) %s; replaced", n, outcome)
        return [c.peer for c in chosen]

    def reconcile_once(self, chosen: list[PeerAddress] | None = None) -> RoundResult:
        """One round; ``chosen``: the random peer set's peers, which get downloaders too."""
        api = self._connect()
        core, apps = self.k.client.CoreV1Api(api), self.k.client.AppsV1Api(api)
        result = RoundResult()
        name = self.settings.configmap
        try:
            cm = core.read_namespaced_config_map(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except self.k.ApiException as exc:
            if exc.status == 404:
                result.problems.append(f"ConfigMap {self.namespace}/{name} does not exist (yet)")
                return result
            raise
        assert cm.metadata is not None
        data = cm.data or {}
        try:
            template = spec.load_template(data.get(spec.TEMPLATE_KEY))
        except spec.SpecError as exc:
            result.problems.append(str(exc))
            return result
        peers = spec.parse_peers(data.get(spec.PEERS_KEY, ""))
        if chosen is not None:
            peers = spec.with_chosen(peers, chosen)
        PEERS.set(len(peers.peers))
        result.problems.extend(f"ConfigMap {name}, {e}" for e in peers.errors)

        # Deleting the ConfigMap (helm uninstall) lets the garbage collector remove the Deployments.
        owner: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "name": name}
        owner |= {"uid": cm.metadata.uid, "controller": True}
        desired = {}
        for pid, peer in peers.peers.items():
            body = spec.render(template, peer)
            body["metadata"]["ownerReferences"] = [owner]
            body["metadata"]["namespace"] = self.namespace
            desired[pid] = body
        live = apps.list_namespaced_deployment(
            self.namespace, label_selector=template.label_selector, _request_timeout=REQUEST_TIMEOUT
        )
        existing = [_existing(d.metadata) for d in live.items if d.metadata is not None]
        for action in spec.plan(desired, existing, allow_delete=not peers.errors):
            self._apply(apps, action, result)
        return result

    def _apply(self, apps: client.AppsV1Api, action: spec.Action, result: RoundResult) -> None:
        ns = self.namespace
        body: Any = action.body  # the client takes plain dicts as well as its model classes
        try:
            if action.kind == "create":
                apps.create_namespaced_deployment(ns, body, _request_timeout=REQUEST_TIMEOUT)
                result.created += 1
            elif action.kind == "replace":
                apps.replace_namespaced_deployment(action.name, ns, body, _request_timeout=REQUEST_TIMEOUT)
                result.replaced += 1
            else:
                apps.delete_namespaced_deployment(
                    action.name, ns, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT
                )
                result.deleted += 1
        except self.k.ApiException as exc:
            if exc.status == 409 and action.kind == "create":
                result.problems.append(
                    f"Deployment {action.name} exists but is not managed by the peer controller; left alone"
                )
                return
            if exc.status == 409 or (exc.status == 404 and action.kind != "create"):
                result.problems.append(f"Deployment {action.name} changed meanwhile ({exc.reason}); retrying")
                return
            raise
        ACTIONS.labels(action.kind).inc()
        log.info("%s Deployment %s (peer %s)", action.kind + "d", action.name, action.peer_id)

    # --- life cycle ---------------------------------------------------------------------------

    async def _wait_for_change(self, seconds: float) -> None:
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # not wait_for: see lnsync.rpc.Remote.ready
                await self._changed.wait()
        # Let a burst of events (kubectl apply touches several fields) settle into one round.
        await asyncio.sleep(0.2)

    async def run(self, ready: ReadySignal) -> None:
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        backoff = Backoff(1.0, 60.0)
        last_problems: list[str] = []
        while True:
            self._changed.clear()
            started = time.monotonic()
            try:
                chosen = await self.choose_random() if self.observer.random_peers else None
                result = await asyncio.to_thread(self.reconcile_once, chosen)
            except self.k.api_errors as exc:
                ROUNDS.labels("error").inc()
                await ready.set(False)
                if backoff.attempts % 5 == 0:
                    log.warning("cannot reach the Kubernetes API (%s); retrying with backoff", _describe(exc))
                await self._wait_for_change(backoff.next_delay())
                continue
            except Exception:
                # A bug or a response the client cannot parse: restarting the pod would not help
                # either, so report it, stay NOT_SERVING and try again later.
                ROUNDS.labels("error").inc()
                await ready.set(False)
                if backoff.attempts % 5 == 0:
                    log.exception("reconciliation failed unexpectedly; retrying with backoff")
                await self._wait_for_change(backoff.next_delay())
                continue
            self._start_watchers(loop)
            ROUNDS.labels("ok" if result.ok else "incomplete").inc()
            await ready.set(result.ok)
            if result.problems != last_problems:
                for problem in result.problems:
                    log.error("%s", problem)
                last_problems = result.problems
            if result.created or result.replaced or result.deleted:
                log.info(
                    "round done in %.2f s: %d created, %d replaced, %d deleted",
                    time.monotonic() - started,
                    result.created,
                    result.replaced,
                    result.deleted,
                )
            if result.ok:
                backoff.reset()
                await self._wait_for_change(self._resync_every())
            else:
                await self._wait_for_change(min(backoff.next_delay(), self._resync_every()))

    def _resync_every(self) -> float:
        """``resync_interval``; with a random peer set often enough to notice a failed peer within
        a third of ``observer.stall_timeout`` and an epoch change within a third of an epoch."""
        o = self.observer
        if not o.random_peers:
            return self.settings.resync_interval
        return max(1.0, min(self.settings.resync_interval, o.stall_timeout / 3, o.rotate_interval / 3))

    async def close(self) -> None:
        for w in self.watchers:
            w.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.api is not None:
            await asyncio.to_thread(self.api.close)


def _existing(meta: client.V1ObjectMeta) -> spec.Existing:
    return spec.Existing(
        meta.name or "",
        (meta.labels or {}).get(spec.PEER_LABEL, ""),
        (meta.annotations or {}).get(spec.HASH_ANNOTATION, ""),
        meta.resource_version or "",
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, kube().ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__


async def main(settings: Settings) -> int:
    pc = settings.peer_controller
    return await run_service("peer-controller", pc.listen, PeerController(settings), pc.metrics_listen)
