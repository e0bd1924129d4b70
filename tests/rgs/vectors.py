"""Loads tests/data/rgs-test-vectors.txt: upstream rust-lightning RGS client vectors (hex)."""

from __future__ import annotations

import re
from pathlib import Path

VECTORS_FILE = Path(__file__).resolve().parent.parent / "data" / "rgs-test-vectors.txt"


def load_vectors() -> dict[str, bytes]:
    """Map of label ("vector 1", "constructed empty_delta v1", ...) to blob bytes."""
    out: dict[str, bytes] = {}
    label = None
    for line in VECTORS_FILE.read_text().splitlines():
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            label = m.group(1)
        elif line.startswith("hex: ") and label:
            out[label] = bytes.fromhex(line[5:].strip())
    return out
