"""HTTP errors the gateway answers with, and how upstream gRPC failures map onto them.

Every error is a status, a one-line reason (sent as ``text/plain``) and, for the ones a client
should retry, a ``Retry-After``. Client input problems are 4xx; an upstream service that is down,
busy or not yet synced is 503, one too slow is 504, and one that answered with an unexpected
error is 502. The gateway itself never answers 500 on purpose.
"""

from __future__ import annotations

import grpc


class HttpError(Exception):
    """An answer other than 200/304: raised anywhere in a handler, rendered by the app's middleware."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


# gRPC status -> (HTTP status, Retry-After seconds). INVALID_ARGUMENT is the client's doing.
_GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, int | None]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, None),
    grpc.StatusCode.OUT_OF_RANGE: (400, None),
    grpc.StatusCode.FAILED_PRECONDITION: (503, 30),  # not fully synced yet
    grpc.StatusCode.NOT_FOUND: (503, 30),  # no snapshot generation yet
    grpc.StatusCode.UNAVAILABLE: (503, 5),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (503, 5),
    grpc.StatusCode.CANCELLED: (503, 5),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, 10),
}
_OTHER = (502, 10)


_PUBLIC_REASON = {
    grpc.StatusCode.FAILED_PRECONDITION: "the first full graph sync is not complete yet",
    grpc.StatusCode.NOT_FOUND: "no snapshot generation yet",
    grpc.StatusCode.DEADLINE_EXCEEDED: "took too long",
}


def from_grpc(exc: grpc.aio.AioRpcError, service: str) -> HttpError:
    """The HTTP error for a failed call to ``service``.

    Only a rejection of the client's own input repeats the upstream's words; for the rest the
    reason names the service and the kind of failure, never internal addresses or messages.
    """
    code = exc.code()
    status, retry_after = _GRPC_TO_HTTP.get(code, _OTHER)
    if status == 400:
        said = (exc.details() or "").splitlines()[:1]
        return HttpError(400, said[0][:200] if said else f"{service} rejected the request")
    what = _PUBLIC_REASON.get(code, "unavailable" if status == 503 else "failed")
    return HttpError(status, f"{service}: {what}", retry_after)
