"""Without node or the npm package the LDK fixtures must fail loudly, naming the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tests.ldk as ldk


def test_missing_package_names_make_test(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ldk, "WASM", tmp_path / "node_modules" / "lightningdevkit" / "liblightningjs.wasm")
    monkeypatch.setattr(ldk, "ROOT", tmp_path)
    with pytest.raises(ldk.LdkUnavailable, match="run `make test`"):
        ldk.LdkRgsClient()


def test_missing_node_names_make_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(ldk.LdkUnavailable, match=r"Node\.js .*`make test`"):
        ldk.LdkPeer().start()
