"""BOLT 7's funding-output rule, pure: BOLT 3's funding script and every verdict."""

from __future__ import annotations

import pytest

from lnsync.chain.funding import (
    FundingFacts,
    Verdict,
    funding_script,
    judge,
    p2wsh,
    split_scid,
)

# BOLT 3, Appendix B (funding transaction test vectors).
LOCAL = bytes.fromhex("023da092f6980e58d2c037173180e9a465476026ee50f96695963e8efe436f54eb")
REMOTE = bytes.fromhex("030e9f7b623d2ccc7c9bd44d66d5ce21ce504c0acf6385a132cec6d3c39fa711c1")
WITNESS_SCRIPT = (
    "5221023da092f6980e58d2c037173180e9a465476026ee50f96695963e8efe436f54eb21"
    "030e9f7b623d2ccc7c9bd44d66d5ce21ce504c0acf6385a132cec6d3c39fa711c152ae"
)
OUTPUT_SCRIPT = "0020c015c4a6be010e21657068fc2e6a9d02b27ebe4d490a25846f7237f104d1a3cd"


def test_bolt3_funding_script_and_output() -> None:
    for keys in ((LOCAL, REMOTE), (REMOTE, LOCAL)):  # keys are sorted, whatever the order
        assert funding_script(*keys).hex() == WITNESS_SCRIPT
        assert p2wsh(funding_script(*keys)).hex() == OUTPUT_SCRIPT


def test_split_scid() -> None:
    assert split_scid((539_268 << 40) | (845 << 16) | 1) == (539_268, 845, 1)


GOOD = p2wsh(funding_script(LOCAL, REMOTE))


@pytest.mark.parametrize(
    ("facts", "verdict"),
    [
        (FundingFacts(105, 100, ["aa"] * 3, 1, GOOD, 50_000, False), Verdict.VERIFIED),
        (FundingFacts(104, 100, ["aa"] * 3, 1, GOOD, 50_000, False), Verdict.TOO_FEW_CONFIRMATIONS),
        (FundingFacts(99, 100, None, 1), Verdict.TOO_FEW_CONFIRMATIONS),  # not mined (as far as we know)
        (FundingFacts(105, 100, None, 1), Verdict.NO_BLOCK),
        (FundingFacts(105, 100, ["aa"], 1), Verdict.NO_TRANSACTION),
        (FundingFacts(105, 100, ["aa"] * 3, 1, None, None), Verdict.NO_OUTPUT),
        (FundingFacts(105, 100, ["aa"] * 3, 1, b"\x00\x14" + bytes(20), 1), Verdict.WRONG_SCRIPT),
        (FundingFacts(105, 100, ["aa"] * 3, 1, GOOD, 50_000, True), Verdict.SPENT),
        (FundingFacts(105, 100, ["aa"] * 3, 1, GOOD, 50_000, None), Verdict.VERIFIED),  # cannot tell
    ],
)
def test_verdicts(facts: FundingFacts, verdict: Verdict) -> None:
    judgement = judge(facts, REMOTE, LOCAL)
    assert judgement.verdict is verdict
    assert judgement.funding_sats == (50_000 if verdict is Verdict.VERIFIED else None)
    assert verdict.final == (verdict is not Verdict.TOO_FEW_CONFIRMATIONS)
