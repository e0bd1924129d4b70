"""Bitcoin networks and their genesis block hashes, as BOLT messages carry them (``chain_hash``)."""

from __future__ import annotations

from typing import Literal

Network = Literal["bitcoin", "testnet", "testnet4", "signet", "regtest"]

# Genesis block hashes in the byte order they appear on the wire (internal byte order).
CHAIN_HASHES: dict[str, bytes] = {
    "bitcoin": bytes.fromhex("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000"),
    "testnet": bytes.fromhex("43497fd7f826957108f4a30fd9cec3aeba79972084e90ead01ea330900000000"),
    "testnet4": bytes.fromhex("43f08bdab050e35b567c864b91f47f50ae725ae2de53bcfbbaf284da00000000"),
    "signet": bytes.fromhex("f61eee3b63a380a477a063af32b2bbc97c9ff9f01f2c4225e973988108000000"),
    "regtest": bytes.fromhex("06226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f"),
}

NETWORK_ALIASES: dict[str, str] = {"mainnet": "bitcoin", "main": "bitcoin"}


def normalize_network(name: str) -> str:
    """Map user spellings ("mainnet", "Bitcoin") to the canonical network name."""
    key = name.strip().lower()
    key = NETWORK_ALIASES.get(key, key)
    if key not in CHAIN_HASHES:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(CHAIN_HASHES)} (or mainnet)")
    return key


def chain_hash(network: str) -> bytes:
    return CHAIN_HASHES[normalize_network(network)]


def network_of(chain: bytes) -> str | None:
    """The network whose genesis hash is ``chain``, or None if unknown."""
    for name, value in CHAIN_HASHES.items():
        if value == chain:
            return name
    return None
