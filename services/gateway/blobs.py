"""An RGS blob as served over HTTP: validators, caching headers, gzip negotiation, 304s.

Everything about a blob's response that does not depend on the request (ETags, header sets, the
gzip bytes) is computed once when the blob enters a cache, so answering a request is a dictionary
copy and a socket write. The ETag is the blob's SHA-256 (a strong validator); the gzip
representation, being different bytes, has its own tag (``-gzip`` suffix) and every response says
``Vary: Accept-Encoding``. ``Last-Modified`` is a time every gateway replica derives alike (the
generation's publication, a delta's reference time), so a CDN's ``If-Modified-Since`` revalidation
gets a 304 from whichever replica answers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

OCTET_STREAM = "application/octet-stream"
# Gzip only pays when it saves at least this share of the bytes.
GZIP_MIN_SAVING = 0.05
# Header values a client controls are looked at only this far.
MAX_HEADER_ITEMS = 32


def cache_control(max_age: int, s_maxage: int, stale_while_revalidate: int, stale_if_error: int) -> str:
    """The ``Cache-Control`` of an RGS answer: anyone may cache it (it is the same for everyone)."""
    return (
        f"public, max-age={max_age}, s-maxage={s_maxage}, "
        f"stale-while-revalidate={stale_while_revalidate}, stale-if-error={stale_if_error}"
    )


@dataclass(frozen=True, slots=True)
class Blob:
    """One servable blob. ``timestamp`` is the RGS header timestamp (what the client sends next);
    ``last_modified`` the Unix time its answer last changed (``Last-Modified``)."""

    body: bytes
    gzip: bytes | None
    sha256: bytes
    timestamp: int
    cache_control: str
    last_modified: int
    identity_headers: CIMultiDict[str] = field(init=False, repr=False, compare=False)
    gzip_headers: CIMultiDict[str] | None = field(init=False, repr=False, compare=False)
    # The fast path's status lines and headers, by (gzip, not modified, CORS origin allowed).
    wire: dict[tuple[bool, bool, str | None], bytes] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        tag = self.sha256.hex()
        base = {
            "Content-Type": OCTET_STREAM,
            "Cache-Control": self.cache_control,
            "Last-Modified": formatdate(self.last_modified, usegmt=True),
            "Vary": "Accept-Encoding",
            "X-RGS-Timestamp": str(self.timestamp),
        }
        object.__setattr__(self, "identity_headers", CIMultiDict(base, ETag=f'"{tag}"'))
        gz = None
        if self.gzip is not None and len(self.gzip) <= len(self.body) * (1 - GZIP_MIN_SAVING):
            gz = CIMultiDict(base, ETag=f'"{tag}-gzip"', **{"Content-Encoding": "gzip"})
        object.__setattr__(self, "gzip_headers", gz)

    @classmethod
    def of(
        cls, body: bytes, timestamp: int, cache_control: str, last_modified: int, gzip: bytes | None = None
    ) -> Blob:
        return cls(body, gzip, hashlib.sha256(body).digest(), timestamp, cache_control, last_modified)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (``gzip``/``x-gzip``/``*`` with q > 0)."""
    explicit: float | None = None
    star: float | None = None
    for item in accept_encoding.split(",", MAX_HEADER_ITEMS)[:MAX_HEADER_ITEMS]:
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        q = _quality(params)
        if coding in ("gzip", "x-gzip"):
            explicit = q if explicit is None else max(explicit, q)
        elif coding == "*":
            star = q
    if explicit is not None:
        return explicit > 0
    return star is not None and star > 0


def _quality(params: str) -> float:
    for param in params.split(";", 4):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip()[:8])
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def none_match(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (weak comparison, as RFC 9110 prescribes)."""
    value = if_none_match.strip()
    if value == "*":
        return True
    wanted = etag.removeprefix("W/")
    for item in value.split(",", MAX_HEADER_ITEMS)[:MAX_HEADER_ITEMS]:
        if item.strip().removeprefix("W/") == wanted:
            return True
    return False


def unmodified_since(if_modified_since: str, last_modified: int) -> bool:
    """Whether ``If-Modified-Since`` is at or after ``last_modified`` (a date that does not parse:
    no, as RFC 9110 has it ignored)."""
    try:
        since = parsedate_to_datetime(if_modified_since[:64])
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if since.tzinfo is None:  # asctime's format has no zone: every HTTP-date is GMT
        since = since.replace(tzinfo=UTC)
    return last_modified <= since.timestamp()


def negotiate(
    blob: Blob, accept_encoding: str | None, if_none_match: str | None, if_modified_since: str | None
) -> tuple[bool, bool]:
    """(gzip, not modified) of the answer to a GET or HEAD for ``blob`` with these request headers.

    Not modified when ``If-None-Match`` matches, or, only without ``If-None-Match``, when
    ``If-Modified-Since`` is not before ``Last-Modified`` (RFC 9110, 13.2.2). The one decision both
    :func:`respond` and the public port's fast path (:mod:`services.gateway.fastpath`) use."""
    zipped = False
    if blob.gzip_headers is not None and blob.gzip is not None and accept_encoding:
        zipped = accepts_gzip(accept_encoding)
    if if_none_match is not None:
        headers = blob.gzip_headers if zipped and blob.gzip_headers is not None else blob.identity_headers
        return zipped, none_match(if_none_match, headers["ETag"])
    fresh = if_modified_since is not None and unmodified_since(if_modified_since, blob.last_modified)
    return zipped, fresh


def respond(request_headers: CIMultiDictProxy[str], blob: Blob) -> web.Response:
    """The response to a GET or HEAD for ``blob`` (aiohttp leaves the body out for HEAD itself):
    304 or 200, gzip or not, as :func:`negotiate` decides."""
    zipped, fresh = negotiate(
        blob,
        request_headers.get("Accept-Encoding"),
        request_headers.get("If-None-Match"),
        request_headers.get("If-Modified-Since"),
    )
    headers = blob.gzip_headers if zipped and blob.gzip_headers is not None else blob.identity_headers
    if fresh:
        not_modified = CIMultiDict(headers)
        del not_modified["Content-Type"]
        not_modified.popall("Content-Encoding", None)
        return web.Response(status=304, headers=not_modified)
    body = blob.gzip if zipped and blob.gzip is not None else blob.body
    return web.Response(body=body, headers=CIMultiDict(headers))
