"""The funding-output rule of BOLT 7 for a channel_announcement (pure code, no I/O).

A channel's short_channel_id names its funding output: block height, transaction index in the
block, output index. BOLT 7 has nodes ignore an announcement unless that output exists, is the P2WSH
of the BOLT 3 funding script ``2 <key1> <key2> 2 OP_CHECKMULTISIG`` over the announcement's
``bitcoin_key_1``/``bitcoin_key_2`` (sorted lexicographically), is unspent and has at least six
confirmations. :func:`judge` makes that decision from what a chain source reported
(:class:`FundingFacts`); fetching the facts is :mod:`lnsync.chain.sources`' business.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

MIN_CONFIRMATIONS = 6  # BOLT 7
_OP_2 = 0x52
_OP_CHECKMULTISIG = 0xAE


def split_scid(scid: int) -> tuple[int, int, int]:
    """(block height, transaction index, output index) of a short_channel_id."""
    return scid >> 40, (scid >> 16) & 0xFFFFFF, scid & 0xFFFF


def funding_script(bitcoin_key_1: bytes, bitcoin_key_2: bytes) -> bytes:
    """BOLT 3's funding witness script: 2-of-2 multisig over the two keys, sorted lexicographically."""
    a, b = sorted((bitcoin_key_1, bitcoin_key_2))
    return bytes([_OP_2, 33]) + a + bytes([33]) + b + bytes([_OP_2, _OP_CHECKMULTISIG])


def p2wsh(script: bytes) -> bytes:
    """The P2WSH scriptPubKey (``OP_0 <sha256(script)>``) paying to ``script``."""
    return b"\x00\x20" + hashlib.sha256(script).digest()


class Verdict(enum.Enum):
    VERIFIED = "verified"
    # Final rejections: the announcement is never stored or served.
    NO_BLOCK = "no_block"  # the height is below the tip but the source has no block there (never)
    NO_TRANSACTION = "no_transaction"  # the block has fewer transactions
    NO_OUTPUT = "no_output"  # the transaction has fewer outputs
    WRONG_SCRIPT = "wrong_script"  # not the P2WSH of the announcement's 2-of-2
    SPENT = "spent"  # the channel was closed
    # Not yet decidable: held and asked again later.
    TOO_FEW_CONFIRMATIONS = "too_few_confirmations"

    @property
    def final(self) -> bool:
        return self is not Verdict.TOO_FEW_CONFIRMATIONS


@dataclass(frozen=True, slots=True)
class FundingFacts:
    """What a chain source says about a short_channel_id's output.

    ``block_txids`` is None when the source has no block at that height; ``script``/``value_sats``
    are None when the transaction has no such output; ``spent`` is None when the source cannot say.
    """

    tip_height: int
    height: int
    block_txids: list[str] | None
    tx_index: int
    script: bytes | None = None
    value_sats: int | None = None
    spent: bool | None = None


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    funding_sats: int | None = None


def confirmations(tip_height: int, height: int) -> int:
    return max(0, tip_height - height + 1)


def judge(facts: FundingFacts, bitcoin_key_1: bytes, bitcoin_key_2: bytes) -> Judgement:
    """BOLT 7's decision for one announcement from the facts about its funding output."""
    if confirmations(facts.tip_height, facts.height) < MIN_CONFIRMATIONS:
        return Judgement(Verdict.TOO_FEW_CONFIRMATIONS)
    if facts.block_txids is None:
        return Judgement(Verdict.NO_BLOCK)
    if facts.tx_index >= len(facts.block_txids):
        return Judgement(Verdict.NO_TRANSACTION)
    if facts.script is None or facts.value_sats is None:
        return Judgement(Verdict.NO_OUTPUT)
    if facts.script != p2wsh(funding_script(bitcoin_key_1, bitcoin_key_2)):
        return Judgement(Verdict.WRONG_SCRIPT)
    if facts.spent:
        return Judgement(Verdict.SPENT)
    return Judgement(Verdict.VERIFIED, facts.value_sats)
