"""The gateway's OpenAPI 3.0 document (served at ``/openapi.json`` of the admin listener; the fuzz
test runs against it). The operator paths (:data:`ADMIN_PATHS`) say they are on the admin listener."""

from __future__ import annotations

from typing import Any

from lnsync import __version__
from services.gateway.timestamps import U32_MAX


def _text(description: str, retry: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    if retry:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return out


def _header(kind: str, description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"schema": {"type": kind}}
    if description:
        out["description"] = description
    return out


_BLOB_HEADERS = {
    "ETag": _header("string", 'SHA-256 of the blob ("-gzip" suffix when gzipped)'),
    "Cache-Control": _header("string", "public, max-age, s-maxage, stale-while-revalidate, stale-if-error"),
    "Last-Modified": _header(
        "string", "When the answer last changed: the generation's publication, a delta's reference time"
    ),
    "Access-Control-Allow-Origin": _header("string", "CORS (gateway.cors_origins)"),
    "Content-Length": _header("integer"),
    "X-RGS-Timestamp": _header(
        "integer", "The blob's header timestamp: the last_sync_timestamp to send next time"
    ),
}
_TIMESTAMP = {
    "name": "timestamp",
    "in": "path",
    "required": True,
    "description": "The client's last sync timestamp (0 = never synced): decimal, no sign or leading zeros",
    "schema": {"type": "integer", "minimum": 0, "maximum": U32_MAX},
}
_CONDITIONAL = [
    {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "If-Modified-Since", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "Accept-Encoding", "in": "header", "required": False, "schema": {"type": "string"}},
]


def _blob_operation(summary: str, dynamic: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "The RGS blob",
            "headers": _BLOB_HEADERS,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        "304": {
            "description": "Not modified (If-None-Match matched the ETag, or without it, If-Modified-Since "
            "is not before Last-Modified)"
        },
        "400": _text("The timestamp is not a u32 decimal or lies in the future"),
        "503": _text("Not available yet (first graph sync or first snapshot generation pending)", retry=True),
    }
    if dynamic:
        responses["429"] = _text("Too many dynamic deltas being computed", retry=True)
        responses["502"] = _text("lookup failed", retry=True)
        responses["504"] = _text("lookup took too long", retry=True)
    return {"summary": summary, "parameters": [_TIMESTAMP, *_CONDITIONAL], "responses": responses}


_PREFLIGHT = {
    "summary": "CORS preflight (browsers send it before a conditional GET)",
    "parameters": [
        {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}},
        {
            "name": "Access-Control-Request-Method",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
        },
    ],
    "responses": {
        "204": {"description": "The CORS headers when the origin may fetch (gateway.cors_origins)"}
    },
}
# The operator routes: on the admin listener (gateway.admin_listen) only.
ADMIN_PATHS = ("/metrics", "/api/status", "/", "/openapi.json")
_ADMIN_SERVER = [
    {"url": "/", "description": "the admin listener (gateway.admin_listen), not the public port"}
]


def _json(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


def document() -> dict[str, Any]:
    blob_paths = {
        "/snapshot/{timestamp}": _blob_operation(
            "Precomputed RGS v1 snapshot for a client's timestamp", False
        ),
        "/snapshot/v2/{timestamp}": _blob_operation("Precomputed RGS v2 snapshot", False),
        "/delta/{timestamp}": _blob_operation("RGS v1 delta computed now (not cached for long)", True),
        "/delta/v2/{timestamp}": _blob_operation("RGS v2 delta computed now", True),
    }
    paths: dict[str, Any] = {
        p: {"get": op, "head": op, "options": _PREFLIGHT} for p, op in blob_paths.items()
    }
    paths.update(
        {
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": _text("ok")}}},
            "/readyz": {
                "get": {
                    "summary": "Ready to serve: first graph sync done and a snapshot generation held",
                    "responses": {"200": _json("ready"), "503": _json("not ready (see problems)")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}},
                }
            },
            "/api/status": {
                "get": {
                    "summary": "Sync state per peer, graph size, snapshot generation, gossip volume series",
                    "responses": {"200": _json("status")},
                }
            },
            "/": {
                "get": {
                    "summary": "Status page for operators",
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _json("OpenAPI 3.0 document")}}
            },
        }
    )
    for path in ADMIN_PATHS:
        paths[path]["servers"] = _ADMIN_SERVER
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "lnsync gateway",
            "version": __version__,
            "description": "Rapid Gossip Sync snapshots and deltas for LDK clients on the public port, "
            "operator endpoints on the admin listener.",
        },
        "paths": paths,
    }
