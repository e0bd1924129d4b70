"""What ``/api/status``, ``/readyz`` and the status page report, gathered from the upstreams.

Answers are cached for a moment and concurrent requests share one collection, so these public
endpoints cannot multiply load on lookup and persistence (whose sync state lookup relays: the
gateway reaches lookup and the snapshotter only). A section whose upstream fails says so
(``{"error": ...}``) instead of failing the whole answer.

With ``chain.source`` set, the chain source is probed too (its tip height, or "unavailable": then
listed as degraded, since only new channels wait for it).

Readiness: the gateway is ready once it has seen the first full graph sync and holds a snapshot
generation, i.e. once it can give wallets what they ask for. Upstream services that do not answer
are listed as ``degraded`` but do not make it unready, because a load balancer would then take every
replica out at once during an upstream restart, while the cached snapshots could still be served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from lnsync.chain.sources import ChainSource, ChainUnavailable
from lnsync.v1 import lookup_pb2, persistence_pb2
from services.gateway import metrics
from services.gateway.deltas import DynamicDeltas
from services.gateway.shared import FIRST_SYNC_SEEN, SharedFacts
from services.gateway.snapshots import STALE_AFTER, SnapshotCache
from services.gateway.upstream import Upstreams
from services.gateway.volume import VolumeSampler

log = logging.getLogger(__name__)

CACHE_SECONDS = 2.0
# Lookup refusing a delta for its sync gate makes the gateway unready for this long.
GATE_CLOSED_FOR = 30.0
CALL_TIMEOUT = 3.0


class StatusCollector:
    def __init__(
        self,
        upstreams: Upstreams,
        snapshots: SnapshotCache,
        deltas: DynamicDeltas,
        volume: VolumeSampler,
        chain: ChainSource | None = None,
        shared: SharedFacts | None = None,
    ) -> None:
        self.chain = chain
        self._shared = shared or SharedFacts()
        self.upstreams = upstreams
        self.snapshots = snapshots
        self.deltas = deltas
        self.volume = volume
        self._facts: dict[str, Any] | None = None
        self._facts_at = 0.0
        self._collecting: asyncio.Task[dict[str, Any]] | None = None

    async def facts(self) -> dict[str, Any]:
        """Upstream health, sync state and graph counts (cached for a moment, shared).

        Once there are facts, older ones are answered while new ones are gathered: an upstream
        that is slow to say it cannot answer (lookup waits for persistence) must not make every
        readiness probe wait the call's deadline."""
        if self._facts is not None and time.monotonic() - self._facts_at < CACHE_SECONDS:
            return self._facts
        if self._collecting is None or self._collecting.done():
            self._collecting = asyncio.create_task(self._collect())
            self._collecting.add_done_callback(_log_failure)
        if self._facts is not None:
            return self._facts
        return await asyncio.shield(self._collecting)

    async def _collect(self) -> dict[str, Any]:
        ups = self.upstreams
        health, sync, graph, chain = await asyncio.gather(
            asyncio.gather(*(u.serving() for u in ups.all)),
            _call(
                ups.lookup_stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest(), timeout=CALL_TIMEOUT)
            ),
            _call(ups.lookup_stub.GraphSummary(lookup_pb2.GraphSummaryRequest(), timeout=CALL_TIMEOUT)),
            self._chain_state(),
        )
        services = {u.name: "serving" if ok else "down" for u, ok in zip(ups.all, health, strict=True)}
        # Persistence as lookup sees it (the gateway does not reach it): its answer relayed, lookup
        # saying it cannot reach it, or nobody to ask.
        services["persistence"] = (
            "serving"
            if isinstance(sync, persistence_pb2.SyncStatus)
            else "down"
            if services["lookup"] == "serving"
            else "unknown"
        )
        facts: dict[str, Any] = {"services": services, "chain": chain}
        if isinstance(sync, persistence_pb2.SyncStatus):
            if sync.fully_synced and not self.first_sync_seen:
                self._shared.set(FIRST_SYNC_SEEN, time.time())
            facts["sync"] = {
                "fully_synced": sync.fully_synced,
                "fully_synced_at": sync.fully_synced_at,
                "quorum": sync.quorum,
                "peers": [
                    {
                        "peer_id": p.peer_id,
                        "initial_sync_complete": p.initial_sync_complete,
                        "completed_at": p.completed_at,
                        "channel_announcements": p.channel_announcements,
                        "channel_updates": p.channel_updates,
                        "node_announcements": p.node_announcements,
                        "last_message_at": p.last_message_at,
                        "caught_up_to": p.caught_up_to,
                    }
                    for p in sync.peers
                ],
            }
        else:
            facts["sync"] = {"error": sync, "fully_synced": self.first_sync_seen}
        if isinstance(graph, lookup_pb2.GraphSummaryResponse):
            facts["graph"] = {
                "channels": graph.channels,
                "nodes": graph.nodes,
                "directions": graph.directions,
                "last_gossip_at": graph.last_gossip_at,
                "channel_updates_stored": graph.channel_updates_stored,
            }
        else:
            facts["graph"] = {"error": graph}
        self._facts, self._facts_at = facts, time.monotonic()
        return facts

    async def _chain_state(self) -> dict[str, Any]:
        """The funding checks' chain source (chain.source): its tip, or that it does not answer
        (details only in the log: the URL is not for the public)."""
        if self.chain is None:
            return {"source": "none"}
        try:
            tip = await asyncio.wait_for(self.chain.tip_height(), CALL_TIMEOUT)
        except (ChainUnavailable, TimeoutError) as exc:
            log.warning("chain source %s unavailable: %s", self.chain.name, exc)
            return {"source": self.chain.name, "state": "unavailable"}
        return {"source": self.chain.name, "state": "answering", "tip_height": tip}

    @property
    def first_sync_seen(self) -> bool:
        """Whether persistence said, to any worker, that the first full graph sync is done."""
        return self._shared.get(FIRST_SYNC_SEEN) is not None

    def snapshots_json(self) -> dict[str, Any]:
        gen = self.snapshots.generation
        out: dict[str, Any] = {"snapshotter_reachable": self.snapshots.reachable}
        failed = self.snapshots.proof_failure
        out["proof_failure"] = None if failed is None else {"reference_time": failed[0], "problem": failed[1]}
        if gen is None:
            out["generation"] = None
            return out
        out.update(
            generation=gen.id,
            reference_time=gen.reference_time,
            generated_at=gen.generated_at,
            interval=gen.interval,
            held_bytes=gen.nbytes,
            blobs=[
                {
                    "version": e.version,
                    "kind": e.kind,
                    "scope_seconds": max(e.scope, 0),
                    "last_sync_timestamp": e.last_sync_timestamp,
                    "size": e.size,
                    "gzip_size": e.gzip_size,
                    "sha256": e.sha256,
                }
                for e in gen.entries
            ],
        )
        return out

    async def status(self) -> dict[str, Any]:
        facts = await self.facts()
        entries, nbytes = self.deltas.cached
        return {
            "now": int(time.time()),
            **facts,
            "snapshots": self.snapshots_json(),
            "dynamic": {
                "computing": self.deltas.inflight,
                "max_concurrent": self.deltas.max_concurrent,
                "cached": entries,
                "cached_bytes": nbytes,
            },
            "series": self.volume.as_json(),
        }

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        facts = await self.facts()
        problems = []
        if not self.first_sync_seen:
            problems.append("the first full graph sync is not done (or persistence cannot say)")
        if self.snapshots.generation is None:
            problems.append("no snapshot generation held yet")
        stale = self.snapshots.stale_for()
        if stale is not None and stale[0] >= STALE_AFTER:
            held = self.snapshots.generation
            problems.append(
                f"stale: serving generation {held.id if held else 'none'}, the snapshotter's "
                f"{stale[1]} for {stale[0]:.0f} s"
            )
        closed_at = self.deltas.gate_closed_at()
        if self.first_sync_seen and closed_at is not None and time.time() - closed_at < GATE_CLOSED_FOR:
            problems.append("lookup's sync gate is closed: dynamic deltas answer 503")
        degraded = [name for name, state in facts["services"].items() if state != "serving"]
        if facts["chain"].get("state") == "unavailable":
            degraded.append("chain")  # new channels wait; everything else is served
        body: dict[str, Any] = {}
        failed = self.snapshots.proof_failure
        if failed is not None:
            # Not a reason to stop serving: the previous generation is proven and keeps serving.
            degraded.append("snapshot_proof")
            body["proof_failure"] = f"the generation for R={failed[0]} failed its proof: {failed[1]}"
        ready = not problems
        return ready, {"ready": ready, "problems": problems, "degraded": degraded, **body}


def _log_failure(task: asyncio.Task[dict[str, Any]]) -> None:
    """A collection nobody waited for (older facts were answered) must not fail unseen."""
    if not task.cancelled() and task.exception() is not None:
        log.error("status collection failed", exc_info=task.exception())


async def _call(call: Any) -> Any:
    """The call's response, or the failure's gRPC code name (counted) if it failed."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        metrics.UPSTREAM_ERRORS.labels("status", exc.code().name).inc()
        log.debug("status call failed: %s %s", exc.code().name, exc.details())
        return exc.code().name.lower()  # public: no upstream addresses or messages
