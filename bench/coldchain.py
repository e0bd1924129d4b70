"""A real local chain for ``bench_coldstart --chain``: bcoin on regtest (``tests/chain/regtest.py``,
as ``bench_funding`` uses it) holding a real 2-of-2 P2WSH funding output for every channel of the
graph the demo peer serves.

The re-signed mainnet graph's short channel ids are synthetic (heights 600,000-930,000, up to 3,000
transactions a block): a regtest chain that long cannot be mined here. So the graph is moved onto a
chain that can be (and onto regtest's chain hash: the chain source must be the stack's network):
channel k (in scid order) gets ``(FIRST_HEIGHT + k // PER_BLOCK) x 1 x
(k % PER_BLOCK)``, i.e. ``PER_BLOCK`` funding outputs in the one transaction of each block (as
``bench_funding`` builds them), paying to the P2WSH of the announcement's own bitcoin keys. Every
channel_announcement is signed again for its new scid (its four keys are derivable: node
``sha256("node-<i>")``, bitcoin ``sha256("btc-<i>-a|b")``, data/SOURCE.md) and every channel_update
for it (the demo peer re-signs them once more when it re-times them). The moved graph is cached;
the chain is built (not timed) for each bench run, since bcoin keeps it in memory.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from bench import history
from lnsync.chain import chain_hash
from lnsync.chain.funding import funding_script, p2wsh
from lnsync.gossip import messages as m
from lnsync.gossip.archive import ArchiveFormat, read_archive
from lnsync.gossip.signing import pubkey_of, signed_message
from services.demopeer.graph import secrets_for
from tests.chain.regtest import API_KEY, RegtestNode, Spend, sign_segwit

PER_BLOCK = 10  # as bench_funding's chain (its docs/benchmarks.md section says why)
PRE_MINED = 432  # bcoin's regtest activates segwit here
FIRST_HEIGHT = PRE_MINED + 1
AMOUNT, FEE = 20_000, 2_000  # the fee, plus FEE_PER_OUTPUT a funding output: above 1 sat/vB
FEE_PER_OUTPUT = 100
REGTEST = chain_hash("regtest")  # the source checks that its chain is the stack's network
MAX_CHANNELS = 200_000  # bitcoin keys btc-<i>-a|b are looked for below this i


def moved_scid(k: int, per_block: int) -> int:
    return ((FIRST_HEIGHT + k // per_block) << 40) | (1 << 16) | (k % per_block)


def move_graph(dataset: Path, per_block: int) -> tuple[Path, list[bytes]]:
    """The graph of ``dataset`` on the local chain's scids (cached), and the funding output script
    of each channel in the order they are funded."""
    out = history.cache_dir() / f"{dataset.stem}-regtest{per_block}.bin"
    scripts = out.with_suffix(".scripts")
    if out.exists() and scripts.exists():
        data = scripts.read_bytes()
        return out, [data[i : i + 34] for i in range(0, len(data), 34)]
    started = time.perf_counter()
    with dataset.open("rb") as f:
        raws = [r.raw for r in read_archive(f, ArchiveFormat.U16)]
    anns = sorted((m.decode_channel_announcement(r) for r in raws if r[:2] == b"\x01\x00"),
                  key=lambda a: a.short_channel_id)  # fmt: skip
    node_secrets = secrets_for({n for a in anns for n in (a.node_id_1, a.node_id_2)})
    bitcoin_secrets: dict[bytes, bytes] = {}
    missing = {k for a in anns for k in (a.bitcoin_key_1, a.bitcoin_key_2)}
    i = 0
    while missing and i < MAX_CHANNELS:
        for side in "ab":
            secret = hashlib.sha256(f"btc-{i}-{side}".encode()).digest()
            key = pubkey_of(secret)
            bitcoin_secrets[key] = secret
            missing.discard(key)
        i += 1
    new = {a.short_channel_id: moved_scid(k, per_block) for k, a in enumerate(anns)}
    moved: list[bytes] = []
    funding: list[bytes] = []
    for a in anns:
        body = m.encode_channel_announcement_body(
            REGTEST, new[a.short_channel_id], a.node_id_1, a.node_id_2, a.bitcoin_key_1, a.bitcoin_key_2,
            a.features,
        )  # fmt: skip
        keys = (node_secrets[a.node_id_1], node_secrets[a.node_id_2],
                bitcoin_secrets[a.bitcoin_key_1], bitcoin_secrets[a.bitcoin_key_2])  # fmt: skip
        moved.append(signed_message(m.CHANNEL_ANNOUNCEMENT, keys, body))
        funding.append(p2wsh(funding_script(a.bitcoin_key_1, a.bitcoin_key_2)))
    origin = {a.short_channel_id: (a.node_id_1, a.node_id_2) for a in anns}
    for raw in raws:
        if raw[:2] == b"\x01\x02":
            cu = m.decode_channel_update(raw)
            body = m.encode_channel_update_body(
                REGTEST, new[cu.short_channel_id], cu.timestamp, cu.channel_flags, cu.cltv_expiry_delta,
                cu.htlc_minimum_msat, cu.fee_base_msat, cu.fee_proportional_millionths, cu.htlc_maximum_msat,
                cu.message_flags,
            ) + cu.excess  # fmt: skip
            secret = node_secrets[origin[cu.short_channel_id][cu.direction]]
            moved.append(signed_message(m.CHANNEL_UPDATE, (secret,), body))
        elif raw[:2] == b"\x01\x01":
            moved.append(raw)
    partial = out.with_suffix(".partial")
    with partial.open("wb") as dst:
        for raw in moved:
            dst.write(len(raw).to_bytes(2, "big") + raw)
    scripts.write_bytes(b"".join(funding))
    partial.rename(out)
    print(f"graph moved onto the local chain's scids and re-signed in {time.perf_counter() - started:.0f} s",
          flush=True)  # fmt: skip
    return out, funding


def _position(node: RegtestNode, txid: str) -> tuple[int, int]:
    """Where ``txid`` was mined (bcoin indexes a new block's transactions a moment after it)."""
    for _ in range(50):
        try:
            return node.position(txid)
        except RuntimeError:
            time.sleep(0.2)
    return node.position(txid)


class LocalChain:
    """bcoin on regtest with a funding output for every channel of the moved graph."""

    def __init__(self, dataset: Path, workdir: Path, per_block: int = PER_BLOCK) -> None:
        self.per_block = per_block
        self.name = f"bcoin regtest (JSON-RPC), {per_block} funding outputs a block"
        self.dataset, self.funding = move_graph(dataset, per_block)
        self.workdir = workdir
        self.node: RegtestNode | None = None

    def start(self) -> dict[str, str]:
        """Build the chain (every output confirmed six times); the settings that point at it."""
        started = time.perf_counter()
        node = self.node = RegtestNode()
        node.mine(PRE_MINED)
        coin = node.coinbase(1)
        change_script = b"\x00\x20" + hashlib.sha256(node.script).digest()
        per_block = self.per_block
        for first in range(0, len(self.funding), per_block):
            batch = self.funding[first : first + per_block]
            change = coin.amount - len(batch) * (AMOUNT + FEE_PER_OUTPUT) - FEE
            txid = node.send(sign_segwit([coin], [(AMOUNT, s) for s in batch] + [(change, change_script)]))
            node.mine(1)
            if first == 0 or first + per_block >= len(self.funding):
                height, index = _position(node, txid)
                if moved_scid(first, per_block) != (height << 40) | (index << 16):
                    raise RuntimeError(f"funding transaction at {height}x{index}, not where the graph says")
            coin = Spend(txid, len(batch), change, node.script, (node.key,))
        node.mine(6)
        blocks = -(-len(self.funding) // per_block)
        print(f"local chain: {len(self.funding):,} funding outputs in {blocks:,} blocks, "
              f"built in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
        password = self.workdir / "bcoin-password"
        password.write_text(API_KEY + "\n")
        return {
            "LNSYNC_CHAIN__SOURCE": "bitcoind",
            "LNSYNC_CHAIN__URL": node.url,
            "LNSYNC_CHAIN__USER": "x",
            "LNSYNC_CHAIN__PASSWORD_FILE": str(password),
        }

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
