"""CORS for the RGS routes, so browser and WASM wallets can fetch snapshots and deltas.

The answers are public and carry no credentials, so ``gateway.cors_origins = ["*"]`` (the default)
lets any page read them; a list of origins echoes the request's ``Origin`` when it is listed (and
then says ``Vary: Origin``, which costs a CDN one cached copy per origin); an empty list sends no
CORS headers. Only GET and HEAD are allowed; the preflight (``OPTIONS``) a browser sends before a
conditional request (``If-None-Match`` is not a safelisted header) is answered without a body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ALLOW_METHODS = "GET, HEAD"
# Request headers a page may send: the conditional ones (a browser revalidating its cache).
ALLOW_HEADERS = "If-None-Match, If-Modified-Since"
# Response headers a page may read besides the safelisted ones (Cache-Control, Content-Length,
# Content-Type, Last-Modified, ...): the validator, what to ask for next, when to retry.
EXPOSE_HEADERS = "ETag, X-RGS-Timestamp, Retry-After"
# How long a browser may reuse a preflight's answer (browsers cap it: Chromium at 2 h).
PREFLIGHT_MAX_AGE = 86400


@dataclass(frozen=True, slots=True)
class Cors:
    """The CORS headers of the RGS routes for ``origins`` (``["*"]``, a list, or empty: off)."""

    origins: tuple[str, ...]

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allow_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin``, or None."""
        if not self.origins:
            return None
        if self.origins == ("*",):
            return "*"
        return origin if origin is not None and origin in self.origins else None

    def headers(self, origin: str | None) -> dict[str, str]:
        """Headers added to every answer of an RGS route (200, 304 and errors alike)."""
        allowed = self.allow_origin(origin)
        if allowed is None:
            return {}
        return {"Access-Control-Allow-Origin": allowed, "Access-Control-Expose-Headers": EXPOSE_HEADERS}

    def preflight(self, request_headers: Mapping[str, str]) -> dict[str, str]:
        """The headers of the answer to an ``OPTIONS`` request (its status is 204 either way)."""
        out = {"Allow": f"{ALLOW_METHODS}, OPTIONS"}
        allowed = self.allow_origin(request_headers.get("Origin"))
        if allowed is not None and "Access-Control-Request-Method" in request_headers:
            out.update(
                {
                    "Access-Control-Allow-Origin": allowed,
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
                }
            )
        if self.vary:
            out["Vary"] = "Origin"
        return out

    @property
    def vary(self) -> bool:
        """Whether answers depend on ``Origin`` (a list of origins rather than ``*``)."""
        return bool(self.origins) and self.origins != ("*",)
