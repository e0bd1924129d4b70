"""Feature bit vectors (BOLT 9): big-endian byte strings whose bit 0 is the last byte's low bit.

Bits come in pairs: the even bit means "required", the odd bit "supported". The rule for unknown
bits depends on where the vector travels:

* ``init`` (BOLT 1): an unknown even bit means the connection must be closed
  (:func:`check_init_features`).
* ``channel_announcement`` / ``node_announcement`` (BOLT 7): the message stays valid and is
  stored and relayed; only *routing* through the channel or node is forbidden. So validators
  accept such messages, and :func:`unknown_required_bits` tells consumers which bits made it so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lnsync.gossip.errors import MissingFeatureDependency, UnknownRequiredFeature

# BOLT 9 feature names by their even bit (the odd bit is the same feature, optional).
# Includes the features BOLT 9 now marks ASSUMED: peers still set them and they are not unknown.
FEATURE_NAMES: dict[int, str] = {
    0: "option_data_loss_protect",
    4: "option_upfront_shutdown_script",
    6: "gossip_queries",
    8: "var_onion_optin",
    10: "gossip_queries_ex",
    12: "option_static_remotekey",
    14: "payment_secret",
    16: "basic_mpp",
    18: "option_support_large_channel",
    20: "option_anchor_outputs",  # the pre-zero-fee anchors, now gone from BOLT 9 but still seen
    22: "option_anchors",
    24: "option_route_blinding",
    26: "option_shutdown_anysegwit",
    28: "option_dual_fund",
    34: "option_quiesce",
    36: "option_attribution_data",
    38: "option_onion_messages",
    42: "option_provide_storage",
    44: "option_channel_type",
    46: "option_scid_alias",
    48: "option_payment_metadata",
    50: "option_zeroconf",
    60: "option_simple_close",
    62: "option_splice",
}

# Even bits whose feature we know, for each context (BOLT 9 "Context" column). "Known" means BOLT 9
# assigns it: a gossip-only client never opens channels, so a peer requiring, say, dual funding
# costs it nothing, while an unassigned required bit may change the protocol under our feet.
KNOWN_INIT_FEATURES = frozenset(b for b in FEATURE_NAMES if b != 48)  # payment_metadata: invoices only
KNOWN_NODE_FEATURES = KNOWN_INIT_FEATURES
KNOWN_CHANNEL_FEATURES: frozenset[int] = frozenset()  # BOLT 9 assigns no channel_announcement bits

# BOLT 9 "Dependencies" column: feature -> features it needs (even bits).
DEPENDENCIES: dict[int, tuple[int, ...]] = {
    16: (14,),  # basic_mpp needs payment_secret
    50: (46,),  # option_zeroconf needs option_scid_alias
    60: (26,),  # option_simple_close needs option_shutdown_anysegwit
}

GOSSIP_QUERIES = 6


def to_int(features: bytes) -> int:
    return int.from_bytes(features, "big")


def from_bits(bits: Iterable[int]) -> bytes:
    """The minimal-length vector with exactly ``bits`` set."""
    value = 0
    for bit in bits:
        if bit < 0:
            raise ValueError("feature bits are non-negative")
        value |= 1 << bit
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def set_bits(features: bytes) -> list[int]:
    """The bits set in ``features``, ascending."""
    value = to_int(features)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def supports(features: bytes, even_bit: int) -> bool:
    """True if the feature whose pair starts at ``even_bit`` is set as required or optional."""
    return bool(to_int(features) >> (even_bit & ~1) & 0b11)


def requires(features: bytes, even_bit: int) -> bool:
    return bool(to_int(features) >> (even_bit & ~1) & 1)


def combine(*vectors: bytes) -> bytes:
    """Bitwise OR of vectors of any lengths (``init`` joins globalfeatures and features this way)."""
    value = 0
    for v in vectors:
        value |= to_int(v)
    return value.to_bytes(max((len(v) for v in vectors), default=0), "big")


def unknown_required_bits(features: bytes, known: frozenset[int]) -> list[int]:
    """Even (required) bits set in ``features`` whose feature is not in ``known``."""
    value = to_int(features)
    return [i for i in range(0, value.bit_length(), 2) if value >> i & 1 and i not in known]


def missing_dependencies(features: bytes, deps: Mapping[int, tuple[int, ...]] = DEPENDENCIES) -> list[str]:
    """Human-readable "a needs b" for each feature set without one it depends on."""
    problems: list[str] = []
    for feature, needs in deps.items():
        if supports(features, feature):
            problems.extend(
                f"{name(feature)} needs {name(need)}" for need in needs if not supports(features, need)
            )
    return problems


def name(bit: int) -> str:
    return FEATURE_NAMES.get(bit & ~1, f"unknown_feature_{bit & ~1}")


def check_init_features(
    features: bytes, known: frozenset[int] = KNOWN_INIT_FEATURES, *, check_dependencies: bool = True
) -> None:
    """Raise if a peer's combined ``init`` features forbid talking to it (BOLT 1 and BOLT 9)."""
    unknown = unknown_required_bits(features, known)
    if unknown:
        raise UnknownRequiredFeature(f"peer requires unknown feature bit(s) {unknown}")
    if check_dependencies:
        problems = missing_dependencies(features)
        if problems:
            raise MissingFeatureDependency("; ".join(problems))
