"""What the peer controller wants to exist: pure functions from the peers ConfigMap to Deployments.

The downloader Deployment is defined once, in the Helm chart (template
``lnsync.downloaderDeployment``). With ``peerController.enabled`` the chart renders it with
placeholders into the peers ConfigMap (key ``downloader-deployment.json``); the controller only
fills in one peer, so a Deployment it creates has the same shape as one the chart renders. The
contract (names, labels, placeholders) is documented in helm/lnsync/README.md. No I/O here.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from lnsync.config import PeerAddress

PEERS_KEY = "peers"
TEMPLATE_KEY = "downloader-deployment.json"
PLACEHOLDER_PEER = "__LNSYNC_PEER__"
PLACEHOLDER_PUBKEY = "__LNSYNC_PEER_PUBKEY__"
PLACEHOLDER_ID = "__LNSYNC_PEER_ID__"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "lnsync-peer-controller"
PEER_LABEL = "lnsync/peer"
HASH_ANNOTATION = "lnsync/spec-hash"
# Hex digits of the public key in the peer id: a label value (<= 63 characters) that names the
# Deployment; the chart's "lnsync.peerInfo" uses the same rule.
ID_LENGTH = 16
# More lines than this is a mistake, not a peer list: refuse rather than create that many pods.
MAX_PEERS = 500
_SELECTOR_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
_ID_RE = re.compile(rf"^[0-9a-f]{{{ID_LENGTH}}}$")


class SpecError(ValueError):
    """The ConfigMap's Deployment template is missing or is not one the controller can use."""


def peer_id(peer: PeerAddress) -> str:
    return peer.node_id[:ID_LENGTH]


@dataclass(frozen=True, slots=True)
class Peer:
    """One peers line: the address as written (what the downloader gets) and its parsed form."""

    text: str
    address: PeerAddress

    @property
    def id(self) -> str:
        return peer_id(self.address)


@dataclass(frozen=True, slots=True)
class PeerList:
    """The peers that parsed, by id, and one message per line that did not."""

    peers: dict[str, Peer]
    errors: list[str] = field(default_factory=list)


def parse_peers(text: str) -> PeerList:
    """One ``pubkey@host:port`` per line; blank lines and ``#`` comments are ignored.

    A bad or duplicate line is reported in ``errors`` and skipped, never guessed at.
    """
    peers: dict[str, Peer] = {}
    errors: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            peer = Peer(line, PeerAddress.parse(line))
        except ValueError as exc:
            errors.append(f"line {lineno}: {exc}")
            continue
        if peer.id in peers:
            errors.append(
                f"line {lineno}: peer {peer.address.node_id} has the same id {peer.id} as "
                f"{peers[peer.id].text}; list each peer once"
            )
            continue
        if len(peers) == MAX_PEERS:
            errors.append(f"line {lineno}: more than {MAX_PEERS} peers; the rest are ignored")
            break
        peers[peer.id] = peer
    return PeerList(peers, errors)


def with_chosen(configured: PeerList, chosen: list[PeerAddress]) -> PeerList:
    """The ConfigMap's peers plus the observer's random set (``observer.random_peers``): one
    downloader each, a chosen peer that is also configured once. The random set is bounded by
    its own settings; MAX_PEERS still caps the total."""
    peers = dict(configured.peers)
    new = [p for p in (Peer(str(a), a) for a in chosen) if p.id not in peers]
    room = MAX_PEERS - len(peers)
    peers |= {p.id: p for p in new[:room]}
    errors = list(configured.errors)
    if len(new) > room:
        errors.append(f"random peer set: more than {MAX_PEERS} peers in all; the rest are left out")
    return PeerList(peers, errors)


@dataclass(frozen=True, slots=True)
class Template:
    """The downloader Deployment with placeholders, and the labels that select its copies."""

    body: dict[str, Any]
    selector: dict[str, str]

    @property
    def label_selector(self) -> str:
        """Managed Deployments of this release: the only ones the controller ever changes."""
        labels = {**self.selector, MANAGED_BY_LABEL: MANAGED_BY}
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def load_template(text: str | None) -> Template:
    if not text:
        raise SpecError(f"the ConfigMap has no {TEMPLATE_KEY!r} (rendered by the Helm chart)")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"{TEMPLATE_KEY} is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("apiVersion") != "apps/v1" or body.get("kind") != "Deployment":
        raise SpecError(f"{TEMPLATE_KEY} must be an apps/v1 Deployment")
    meta = body.get("metadata")
    if not isinstance(meta, dict) or PLACEHOLDER_ID not in str(meta.get("name", "")):
        raise SpecError(f"{TEMPLATE_KEY}: metadata.name must contain {PLACEHOLDER_ID}")
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(labels.get(k), str) for k in _SELECTOR_LABELS):
        raise SpecError(f"{TEMPLATE_KEY}: metadata.labels must carry {', '.join(_SELECTOR_LABELS)}")
    if labels["app.kubernetes.io/component"] != "downloader":
        raise SpecError(f"{TEMPLATE_KEY}: app.kubernetes.io/component must be 'downloader'")
    return Template(body, {k: labels[k] for k in _SELECTOR_LABELS})


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, text in values.items():
            value = value.replace(placeholder, text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def spec_hash(body: dict[str, Any]) -> str:
    """Fingerprint of a desired Deployment: a change means the live one must be replaced."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def render(template: Template, peer: Peer) -> dict[str, Any]:
    """The Deployment for ``peer``: placeholders filled, ownership labels and the spec hash set."""
    body: dict[str, Any] = _fill(
        template.body,
        {PLACEHOLDER_PUBKEY: peer.address.node_id, PLACEHOLDER_ID: peer.id, PLACEHOLDER_PEER: peer.text},
    )
    meta = body["metadata"]
    meta["labels"] = {**meta.get("labels", {}), MANAGED_BY_LABEL: MANAGED_BY, PEER_LABEL: peer.id}
    meta["annotations"] = {**(meta.get("annotations") or {}), HASH_ANNOTATION: spec_hash(body)}
    return body


@dataclass(frozen=True, slots=True)
class Existing:
    """A managed Deployment as listed from the API server."""

    name: str
    peer_id: str
    spec_hash: str
    resource_version: str


@dataclass(frozen=True, slots=True)
class Action:
    kind: Literal["create", "replace", "delete"]
    name: str
    peer_id: str
    body: dict[str, Any] | None = None


def plan(desired: dict[str, dict[str, Any]], existing: list[Existing], allow_delete: bool) -> list[Action]:
    """Actions that turn ``existing`` into ``desired`` (by peer id).

    With ``allow_delete`` false (the peer list had errors) nothing is deleted: a typo in one line
    must not tear down the downloader of a peer the operator meant to keep.
    """
    actions: list[Action] = []
    by_id = {e.peer_id: e for e in existing if _ID_RE.match(e.peer_id)}
    for pid, body in desired.items():
        name = body["metadata"]["name"]
        live = by_id.get(pid)
        if live is None:
            actions.append(Action("create", name, pid, body))
        elif live.spec_hash != body["metadata"]["annotations"][HASH_ANNOTATION] or live.name != name:
            if live.name != name:  # the naming changed (e.g. a new chart): make the new one first
                actions.append(Action("create", name, pid, body))
                if allow_delete:
                    actions.append(Action("delete", live.name, pid))
            else:
                meta = {**body["metadata"], "resourceVersion": live.resource_version}
                replaced = {**body, "metadata": meta}
                actions.append(Action("replace", name, pid, replaced))
    if allow_delete:
        for e in existing:
            if e.peer_id not in desired or not _ID_RE.match(e.peer_id):
                actions.append(Action("delete", e.name, e.peer_id))
    return actions
