"""`lnsync inspect`: what an operator sees for a blob, as text and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.interop.rgs_vectors import load_vectors

V = load_vectors()


def inspect(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lnsync", "inspect", *args], input=stdin, capture_output=True
    )


def test_json_summary_and_records(tmp_path: Path) -> None:
    blob = tmp_path / "valid.bin"
    blob.write_bytes(V["vector 1"])
    out = inspect(str(blob), "--json", "--records")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert (d["version"], d["network"], d["timestamp"], d["size"]) == (1, "bitcoin", 1642291930, 300)
    assert (d["nodes"], d["announcements"], d["updates"], d["full_updates"]) == (4, 2, 4, 4)
    assert d["defaults"]["htlc_maximum_msat"] == 495_000_000
    first = d["update_records"][0]
    assert first["scid_bxtxo"] == "563648x539x0"
    assert (first["fee_base_msat"], first["fee_proportional_millionths"]) == (100, 736)


def test_text_from_stdin_and_clear_errors() -> None:
    out = inspect("-", stdin=V["vector 5"])
    assert out.returncode == 0
    text = out.stdout.decode()
    assert "RGS v2" in text and "trailing bytes 23" in text
    bad = inspect("-", stdin=V["vector 14"])
    assert bad.returncode == 1 and b"unknown_version" in bad.stderr and b"Traceback" not in bad.stderr
    missing = inspect("/nonexistent/blob")
    assert missing.returncode == 1 and b"cannot read" in missing.stderr
