"""Fuzzing the running gateway: no client input ever gets a 5xx.

* schemathesis generates requests from the gateway's own OpenAPI document (valid and invalid
  timestamps, arbitrary If-None-Match / Accept-Encoding values) and checks every answer against the
  document: documented status, content type and headers, and never a server error;
* hypothesis sends raw HTTP/1.1 requests with arbitrary path bytes and header values, which a
  schema-driven client would never produce.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    status_code_conformance,
)

from services.gateway import openapi
from tests.gateway.conftest import GatewayStack, raw_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def gateway_schema(synced: GatewayStack) -> Any:
    """The document as the running gateway serves it (on its admin listener)."""
    with urllib.request.urlopen(f"{synced.admin}/openapi.json", timeout=10) as r:
        return schemathesis.openapi.from_dict(json.load(r))


def test_every_operation_conforms_and_never_fails(synced: GatewayStack, gateway_schema: Any) -> None:
    # Driven by hand: schemathesis' pytest plugin does not work with this pytest version.
    operations = [result.ok() for result in gateway_schema.get_all_operations()]
    documented = sum(len(item.keys() - {"servers"}) for item in openapi.document()["paths"].values())
    assert len(operations) == documented, [op.label for op in operations]
    for operation in operations:
        base = synced.admin if operation.path in openapi.ADMIN_PATHS else synced.base

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=base,  # noqa: B023 - called at once, within this iteration
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_headers_conformance,
                ],
            )

        check()


_PATH_BYTES = st.binary(min_size=0, max_size=40).map(
    lambda b: b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")
)
_HEADER_NAMES = st.sampled_from(
    [b"Accept-Encoding", b"If-None-Match", b"Range", b"If-Modified-Since", b"Connection", b"X-Anything"]
)
_HEADER_VALUES = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(
    prefix=st.sampled_from([b"/snapshot/", b"/snapshot/v2/", b"/delta/v2/", b"/", b"/api/", b"/readyz/"]),
    tail=_PATH_BYTES,
    headers=st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4),
    method=st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS", b"DELETE"]),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_raw_requests_never_get_a_server_error(
    synced: GatewayStack, prefix: bytes, tail: bytes, headers: list[tuple[bytes, bytes]], method: bytes
) -> None:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    request = (
        method + b" " + prefix + tail + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + lines + b"\r\n"
    )
    status = raw_status(synced.stack.ports["gateway"], request)
    assert status < 500, (request, status)
