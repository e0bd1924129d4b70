"""The generated gRPC code in lnsync/v1 is exactly what protos/ produces (never hand-edited)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_generated_code_is_up_to_date() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "protogen.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_contracts_import_and_are_versioned() -> None:
    from lnsync.v1 import lookup_pb2, persistence_pb2, snapshots_pb2

    assert persistence_pb2.DESCRIPTOR.package == "lnsync.v1"
    assert "Ingest" in persistence_pb2.DESCRIPTOR.services_by_name["Persistence"].methods_by_name
    assert "ComputeDelta" in lookup_pb2.DESCRIPTOR.services_by_name["Lookup"].methods_by_name
    assert {"GetSnapshot", "ListSnapshots", "Regenerate"} <= set(
        snapshots_pb2.DESCRIPTOR.services_by_name["Snapshots"].methods_by_name
    )
