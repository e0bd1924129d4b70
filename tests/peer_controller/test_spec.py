"""The peer controller's pure core: parsing the peer list, filling the Deployment template, and
planning the changes (services/peer_controller/spec.py). The API side runs in tests/k8s/."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnsync.config import PeerAddress
from services.peer_controller import spec
from tests.helm_tools import PEER_A, PEER_B, PEER_C, PEER_DIGITS

TEMPLATE = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "rel-downloader-__LNSYNC_PEER_ID__",
        "labels": {
            "app.kubernetes.io/name": "lnsync",
            "app.kubernetes.io/instance": "rel",
            "app.kubernetes.io/component": "downloader",
            "app.kubernetes.io/managed-by": "lnsync-peer-controller",
            "lnsync/peer": "__LNSYNC_PEER_ID__",
        },
        "annotations": {"lnsync/peer-pubkey": "__LNSYNC_PEER_PUBKEY__"},
    },
    "spec": {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "template": {
            "spec": {
                "containers": [{"name": "downloader", "env": [{"name": "P", "value": "__LNSYNC_PEER__"}]}]
            }
        },
    },
}


def template(**changes: Any) -> spec.Template:
    body = json.loads(json.dumps(TEMPLATE))
    body.update(changes)
    return spec.load_template(json.dumps(body))


def test_parse_peers_skips_comments_and_reports_bad_lines():
    text = f"""
    # production peers
    {PEER_A}   # WoS
    not-a-peer
    {PEER_B}
    {PEER_A.split("@")[0]}@other.example.org:9735
    """
    listed = spec.parse_peers(text)
    assert [p.text for p in listed.peers.values()] == [PEER_A, PEER_B]
    assert list(listed.peers) == [PEER_A[:16], PEER_B[:16]]
    assert len(listed.errors) == 2
    assert listed.errors[0].startswith("line 4:")
    assert "same id" in listed.errors[1]
    assert listed.errors[1].startswith("line 6:")


def test_parse_peers_is_bounded():
    lines = [f"02{i:014x}{0:050x}@10.0.0.1:9735" for i in range(spec.MAX_PEERS + 5)]
    listed = spec.parse_peers("\n".join(lines))
    assert len(listed.peers) == spec.MAX_PEERS
    assert "more than" in listed.errors[-1]


def test_render_fills_every_placeholder():
    peer = next(iter(spec.parse_peers(PEER_DIGITS).peers.values()))
    body = spec.render(template(), peer)
    text = json.dumps(body)
    assert "__LNSYNC" not in text
    assert body["metadata"]["name"] == "rel-downloader-0212345678901234"
    assert body["metadata"]["labels"]["lnsync/peer"] == "0212345678901234"
    assert body["metadata"]["annotations"]["lnsync/peer-pubkey"] == PEER_DIGITS.split("@")[0]
    assert body["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "P", "value": PEER_DIGITS}]
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == spec.MANAGED_BY
    # The hash changes with anything that matters, and only then.
    again = spec.render(template(), peer)
    assert again == body
    other = spec.render(template(spec={**TEMPLATE["spec"], "replicas": 2}), peer)
    assert (
        other["metadata"]["annotations"][spec.HASH_ANNOTATION]
        != body["metadata"]["annotations"][spec.HASH_ANNOTATION]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "has no"),
        ("{not json", "not JSON"),
        (json.dumps({**TEMPLATE, "kind": "StatefulSet"}), "apps/v1 Deployment"),
        (
            json.dumps({**TEMPLATE, "metadata": {**TEMPLATE["metadata"], "name": "fixed"}}),
            "__LNSYNC_PEER_ID__",
        ),
        (json.dumps({**TEMPLATE, "metadata": {"name": "x-__LNSYNC_PEER_ID__", "labels": {}}}), "labels"),
    ],
)
def test_bad_templates_are_refused(text, message):
    with pytest.raises(spec.SpecError, match=message):
        spec.load_template(text)


def test_label_selector_names_the_release_and_the_manager():
    assert template().label_selector == (
        "app.kubernetes.io/component=downloader,app.kubernetes.io/instance=rel,"
        "app.kubernetes.io/managed-by=lnsync-peer-controller,app.kubernetes.io/name=lnsync"
    )


def _existing(body: dict[str, Any], version: str = "1") -> spec.Existing:
    meta = body["metadata"]
    return spec.Existing(
        meta["name"], meta["labels"]["lnsync/peer"], meta["annotations"][spec.HASH_ANNOTATION], version
    )


def test_plan_creates_replaces_and_deletes():
    t = template()
    peers = spec.parse_peers(f"{PEER_A}\n{PEER_B}\n{PEER_C}").peers
    desired = {pid: spec.render(t, p) for pid, p in peers.items()}
    stale = _existing(desired[PEER_B[:16]]).__class__(
        desired[PEER_B[:16]]["metadata"]["name"], PEER_B[:16], "old", "7"
    )
    gone = spec.Existing("rel-downloader-02ffffffffffffff", "02ffffffffffffff", "h", "3")
    actions = spec.plan(desired, [_existing(desired[PEER_A[:16]]), stale, gone], allow_delete=True)
    assert [(a.kind, a.peer_id) for a in actions] == [
        ("replace", PEER_B[:16]),
        ("create", PEER_C[:16]),
        ("delete", "02ffffffffffffff"),
    ]
    assert actions[0].body is not None
    assert actions[0].body["metadata"]["resourceVersion"] == "7"  # optimistic concurrency
    # With errors in the list, nothing is deleted.
    held = spec.plan(desired, [gone], allow_delete=False)
    assert {a.kind for a in held} == {"create"}


pubkeys = st.binary(min_size=32, max_size=32).map(lambda b: "02" + b.hex())


@settings(max_examples=60, deadline=None)
@given(
    wanted=st.lists(pubkeys, max_size=8, unique=True),
    present=st.lists(pubkeys, max_size=8, unique=True),
    drift=st.sets(st.integers(0, 7)),
)
def test_applying_a_plan_converges(wanted, present, drift):
    """Whatever exists, one plan applied gives exactly the desired set; planning again does nothing."""
    t = template()
    desired = {
        pid: spec.render(t, p)
        for pid, p in spec.parse_peers("\n".join(f"{k}@h.example:9735" for k in wanted)).peers.items()
    }
    cluster: dict[str, spec.Existing] = {}
    for i, key in enumerate(present):
        body = spec.render(t, next(iter(spec.parse_peers(f"{key}@old.example:1").peers.values())))
        e = _existing(body)
        cluster[e.name] = spec.Existing(e.name, e.peer_id, "stale" if i in drift else e.spec_hash, "1")
    for action in spec.plan(desired, list(cluster.values()), allow_delete=True):
        if action.kind == "delete":
            del cluster[action.name]
        else:
            assert action.body is not None
            cluster[action.name] = _existing(action.body, "2")
    assert {e.peer_id for e in cluster.values()} == set(desired)
    assert spec.plan(desired, list(cluster.values()), allow_delete=True) == []


def test_the_random_set_adds_downloaders_to_the_configured_ones() -> None:
    configured = spec.parse_peers(f"{PEER_A}\n{PEER_B}\nnot a peer")
    same_as_b = PeerAddress.parse(PEER_B.split("@")[0] + "@10.0.0.2:9735")  # configured already
    merged = spec.with_chosen(configured, [PeerAddress.parse(PEER_C), same_as_b])
    assert [p.text for p in merged.peers.values()] == [PEER_A, PEER_B, PEER_C]
    assert merged.errors == configured.errors  # still no deletions while a line is bad
    assert spec.with_chosen(configured, []) == configured
    many = [
        PeerAddress(b"\x02" + i.to_bytes(4, "big") + bytes(28), "10.0.0.1", 9735)
        for i in range(spec.MAX_PEERS)
    ]
    capped = spec.with_chosen(configured, many)
    assert len(capped.peers) == spec.MAX_PEERS and "more than 500" in capped.errors[-1]
