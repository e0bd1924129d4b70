"""The upstream RGS client vectors (tests/data/rgs-test-vectors.txt) and the values they hold."""

from __future__ import annotations

import re
from pathlib import Path

VECTORS_FILE = Path(__file__).resolve().parent.parent / "data" / "rgs-test-vectors.txt"
DAY = 86_400


def load_vectors(path: Path = VECTORS_FILE) -> dict[str, bytes]:
    """``{"vector 1": bytes, ..., "constructed empty_delta v1": bytes}`` from the labelled file."""
    out: dict[str, bytes] = {}
    label = None
    for line in path.read_text().splitlines():
        if m := re.match(r"^\[(vector \d+|constructed [\w ]+?)\]", line):
            label = m.group(1)
        elif line.startswith("hex: ") and label is not None:
            out[label] = bytes.fromhex(line[5:])
            label = None
    return out


V = load_vectors()
VALID = V["vector 1"]  # VALID_RGS_BINARY
VALID_TS = 1642291930
NODE_IDS = {
    bytes.fromhex(h)
    for h in (
        "021607cfce19a4c5e7e6e738663dfafbbbac262e4ff76c2c9b30dbeefc35c00643",
        "02247d9db0dfafea745ef8c9e161eb322f73ac3f8858d8730b6fd97254747ce76b",
        "029e01f279986acc83ba235d46d80aede0b7595f410353b93a8ab540bb677f4432",
        "02c913118a8895b9e29c89af6e20ed00d95a1f64e4952edbafa84d048f26804c61",
    )
}
SCID_A, SCID_B = 619737530008010752, 783241506229452801
NODE_031B = bytes.fromhex("031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f")
NODE_024D = bytes.fromhex("024d4b6cd1361032ca9bd2aeb9d900aa4d45d9ead80ac9423374c451a7254d0766")
