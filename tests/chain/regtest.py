"""A real Bitcoin node on regtest for the chain-source tests: bcoin (npm, ``tools/bcoin``), in
memory, with its bitcoind-compatible JSON-RPC. Transactions are built and signed here (segwit v0,
BIP 143 signatures with coincurve), so funding outputs are real 2-of-2 P2WSH outputs that the test
can also spend.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

from lnsync.chain.funding import funding_script, p2wsh

ROOT = Path(__file__).resolve().parents[2]
BCOIN = ROOT / "tools" / "bcoin"
API_KEY = "regtest-secret"


def _free_port() -> int:
    from tests.conftest import free_port  # a port of this pytest worker's own range

    return free_port()


def dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    return b"\xfe" + struct.pack("<I", n)


def push(data: bytes) -> bytes:
    return varint(len(data)) + data


# -- bech32 (BIP 173), for generatetoaddress ------------------------------------------------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: list[int]) -> int:
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def segwit_address(hrp: str, program: bytes) -> str:
    """A witness v0 address (bech32) for ``program``."""
    acc, bits, data = 0, 0, [0]
    for b in program:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            data.append((acc >> bits) & 31)
    if bits:
        data.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    mod = _polymod(expanded + data + [0] * 6) ^ 1
    checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)


# -- transactions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """An input: the outpoint, its amount, the witness script it pays to, and how to sign it."""

    txid: str
    vout: int
    amount: int
    script: bytes  # the P2WSH witness script
    keys: tuple[PrivateKey, ...]  # signatures in this order; a multisig also gets the empty item


def sign_segwit(spends: list[Spend], outputs: list[tuple[int, bytes]]) -> bytes:
    """A version-2 segwit transaction spending ``spends`` (all P2WSH) to ``outputs`` (value,
    scriptPubKey), signed with SIGHASH_ALL per BIP 143."""
    version, locktime, sequence = struct.pack("<i", 2), struct.pack("<I", 0), struct.pack("<I", 0xFFFFFFFF)
    outpoints = [bytes.fromhex(s.txid)[::-1] + struct.pack("<I", s.vout) for s in spends]
    outs = b"".join(struct.pack("<q", v) + push(spk) for v, spk in outputs)
    hash_prevouts = dsha256(b"".join(outpoints))
    hash_sequence = dsha256(sequence * len(spends))
    hash_outputs = dsha256(outs)
    witnesses = []
    for spend, outpoint in zip(spends, outpoints, strict=True):
        preimage = (
            version + hash_prevouts + hash_sequence + outpoint + push(spend.script)
            + struct.pack("<q", spend.amount) + sequence + hash_outputs + locktime + struct.pack("<I", 1)
        )  # fmt: skip
        digest = dsha256(preimage)
        sigs = [k.sign(digest, hasher=None) + b"\x01" for k in spend.keys]
        items = ([b""] if len(sigs) > 1 else []) + sigs + [spend.script]
        witnesses.append(varint(len(items)) + b"".join(push(i) for i in items))
    ins = b"".join(o + b"\x00" + sequence for o in outpoints)
    return (
        version + b"\x00\x01" + varint(len(spends)) + ins + varint(len(outputs)) + outs
        + b"".join(witnesses) + locktime
    )  # fmt: skip


def single_key_script(key: PrivateKey) -> bytes:
    """``<pubkey> OP_CHECKSIG``: what the test's coins pay to (as P2WSH)."""
    return push(key.public_key.format()) + b"\xac"


def multisig_spend(txid: str, vout: int, amount: int, k1: PrivateKey, k2: PrivateKey) -> Spend:
    """Spending a BOLT 3 funding output: signatures in the order of the sorted keys."""
    pairs = sorted((k.public_key.format(), k) for k in (k1, k2))
    script = funding_script(pairs[0][0], pairs[1][0])
    return Spend(txid, vout, amount, script, (pairs[0][1], pairs[1][1]))


def funding_output(k1: PrivateKey, k2: PrivateKey) -> bytes:
    return p2wsh(funding_script(k1.public_key.format(), k2.public_key.format()))


# -- the node ----------------------------------------------------------------------------------------


class RegtestNode:
    """bcoin on regtest, in memory, with its JSON-RPC on a free port; the test's coins belong to
    ``self.key``."""

    def __init__(self) -> None:
        if not (BCOIN / "node_modules" / ".installed").exists() or shutil.which("node") is None:
            raise RuntimeError("bcoin is not installed: run `make test` (it runs tools/bcoin/setup.sh)")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = Path(tempfile.mkdtemp(prefix="lnsync-bcoin-"))
        self.log = (self.prefix / "bcoin.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "node", str(BCOIN / "node_modules" / "bcoin" / "bin" / "node"), "--network=regtest",
                "--memory=true", "--index-tx=true", "--no-wallet", "--listen=false", "--only=127.0.0.1:1",
                f"--http-port={self.port}", f"--api-key={API_KEY}", f"--prefix={self.prefix}",
                "--log-level=warning",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.key = PrivateKey(hashlib.sha256(b"regtest coins").digest())
        self.script = single_key_script(self.key)
        self.address = segwit_address("rb", hashlib.sha256(self.script).digest())
        deadline = time.monotonic() + 30
        while True:
            try:
                self.rpc("getblockcount")
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = (self.prefix / "bcoin.log").read_text(errors="replace")[-2000:]
                    self.close()
                    raise RuntimeError("bcoin did not start: " + log) from None
                time.sleep(0.2)

    def rpc(self, method: str, *params: Any) -> Any:
        body = json.dumps({"method": method, "params": list(params)}).encode()
        auth = "Basic " + base64.b64encode(f"x:{API_KEY}".encode()).decode()
        request = urllib.request.Request(self.url, body, {"Authorization": auth})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read() or b"{}")
        if answer.get("error"):
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def mine(self, blocks: int) -> list[str]:
        return list(self.rpc("generatetoaddress", blocks, self.address))

    def coinbase(self, height: int) -> Spend:
        """The (mature) coinbase output of block ``height``, spendable by ``self.key``."""
        txid = self.rpc("getblock", self.rpc("getblockhash", height))["tx"][0]
        value = self.rpc("getrawtransaction", txid, True)["vout"][0]["value"]
        return Spend(txid, 0, round(value * 100_000_000), self.script, (self.key,))

    def send(self, raw_tx: bytes) -> str:
        return str(self.rpc("sendrawtransaction", raw_tx.hex()))

    def position(self, txid: str) -> tuple[int, int]:
        """(block height, index in the block) of a mined transaction."""
        tx = self.rpc("getrawtransaction", txid, True)
        block = self.rpc("getblock", tx["blockhash"])
        return int(block["height"]), list(block["tx"]).index(txid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.prefix, ignore_errors=True)


def scid(height: int, tx_index: int, out_index: int) -> int:
    return (height << 40) | (tx_index << 16) | out_index
