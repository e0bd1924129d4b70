"""secp256k1 signatures over gossip: double-SHA256 digests, verification and (for tests, the
generator and the demo peer) signing, all through libsecp256k1 as bundled by ``coincurve``.

Verification calls libsecp256k1 through coincurve's cffi bindings directly: it avoids converting
every compact signature to DER and re-parsing keys, which is most of the Python-level cost per
signature in the downloader's hot loop. Parsed public keys are cached (node ids repeat a lot).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import coincurve
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

from lnsync.gossip import messages as m

_CTX = GLOBAL_CONTEXT.ctx
_sha256 = hashlib.sha256


def sha256d(data: bytes) -> bytes:
    return _sha256(_sha256(data).digest()).digest()


def _parse_pubkey(pubkey: bytes) -> Any:
    """libsecp256k1's parsed form of a 33-byte compressed key, or None if it is not a valid point."""
    key = ffi.new("secp256k1_pubkey *")
    if len(pubkey) != 33 or not lib.secp256k1_ec_pubkey_parse(_CTX, key, pubkey, 33):
        return None
    return key


# Node ids sign again and again (every channel_update); bitcoin keys sign once per channel and
# would only push node ids out, so they are parsed without the cache (``cache=False``).
_cached_pubkey = lru_cache(maxsize=65536)(_parse_pubkey)


def forget_parsed_keys() -> None:
    """Empty the cache of parsed node ids (a benchmark's repeat starts as cold as a new process)."""
    _cached_pubkey.cache_clear()


def is_valid_pubkey(pubkey: bytes, *, cache: bool = False) -> bool:
    """True for a valid compressed point; ``cache=True`` for node ids about to be verified against."""
    return (_cached_pubkey(pubkey) if cache else _parse_pubkey(pubkey)) is not None


def parse_pubkey(pubkey: bytes, *, cache: bool = False) -> Any:
    """libsecp256k1's parsed form of a compressed key for :func:`verify_parsed`, or None if it is
    not a valid point (``cache=True`` for node ids, as in :func:`is_valid_pubkey`)."""
    return _cached_pubkey(pubkey) if cache else _parse_pubkey(pubkey)


def verify(pubkey: bytes, signature: bytes, digest: bytes, *, cache: bool = True) -> bool:
    """True if the 64-byte compact ``signature`` by ``pubkey`` over the 32-byte ``digest`` verifies.

    High-S signatures are normalised first: BOLT 7 does not require low-S (relays may flip s),
    libsecp256k1 does. An invalid key or signature encoding is simply False.
    """
    return verify_parsed(_cached_pubkey(pubkey) if cache else _parse_pubkey(pubkey), signature, digest)


def verify_parsed(key: Any, signature: bytes, digest: bytes) -> bool:
    """:func:`verify` with the key already parsed by :func:`parse_pubkey` (None: False): a key
    checked for validity first need not be parsed twice (a point decompression, ~5 µs)."""
    if key is None or len(signature) != 64 or len(digest) != 32:
        return False
    sig = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_signature_parse_compact(_CTX, sig, signature):
        return False
    lib.secp256k1_ecdsa_signature_normalize(_CTX, sig, sig)
    return bool(lib.secp256k1_ecdsa_verify(_CTX, sig, digest, key))


# -- signing --------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def pubkey_of(secret: bytes) -> bytes:
    """The compressed public key of a 32-byte secret key."""
    return bytes(coincurve.PrivateKey(secret).public_key.format(compressed=True))


def sign(secret: bytes, digest: bytes) -> bytes:
    """64-byte compact, low-S (RFC 6979) ECDSA signature of ``digest``.

    Straight to libsecp256k1: most keys that sign (the generator's fresh bitcoin keys) sign once,
    and building a coincurve key object would cost two more curve multiplications each.
    """
    sig = ffi.new("secp256k1_ecdsa_signature *")
    if len(secret) != 32 or not lib.secp256k1_ecdsa_sign(_CTX, sig, digest, secret, ffi.NULL, ffi.NULL):
        raise ValueError("invalid secret key")
    out = ffi.new("unsigned char[64]")
    lib.secp256k1_ecdsa_signature_serialize_compact(_CTX, out, sig)
    return bytes(ffi.buffer(out, 64))


def signed_message(msg_type: int, secrets: tuple[bytes, ...] | list[bytes], body: bytes) -> bytes:
    """The wire message ``msg_type`` with ``body`` signed by each of ``secrets`` in turn (the one
    signing step every builder of gossip shares: core, generator, demo peer, tests)."""
    digest = sha256d(body)
    return m.with_type(msg_type, b"".join(sign(s, digest) for s in secrets), body)


def sign_channel_announcement(
    chain_hash: bytes,
    short_channel_id: int,
    node_secret_1: bytes,
    node_secret_2: bytes,
    bitcoin_secret_1: bytes,
    bitcoin_secret_2: bytes,
    features: bytes = b"",
) -> bytes:
    """A signed channel_announcement; node keys are put in BOLT 7 order (node_id_1 < node_id_2)."""
    n1, n2 = pubkey_of(node_secret_1), pubkey_of(node_secret_2)
    if n1 > n2:
        node_secret_1, node_secret_2 = node_secret_2, node_secret_1
        bitcoin_secret_1, bitcoin_secret_2 = bitcoin_secret_2, bitcoin_secret_1
        n1, n2 = n2, n1
    body = m.encode_channel_announcement_body(
        chain_hash,
        short_channel_id,
        n1,
        n2,
        pubkey_of(bitcoin_secret_1),
        pubkey_of(bitcoin_secret_2),
        features,
    )
    secrets = (node_secret_1, node_secret_2, bitcoin_secret_1, bitcoin_secret_2)
    return signed_message(m.CHANNEL_ANNOUNCEMENT, secrets, body)


def sign_channel_update(
    node_secret: bytes,
    chain_hash: bytes,
    short_channel_id: int,
    timestamp: int,
    channel_flags: int,
    cltv_expiry_delta: int,
    htlc_minimum_msat: int,
    fee_base_msat: int,
    fee_proportional_millionths: int,
    htlc_maximum_msat: int,
) -> bytes:
    """A signed channel_update; ``node_secret`` must belong to the direction's origin node."""
    body = m.encode_channel_update_body(
        chain_hash, short_channel_id, timestamp, channel_flags, cltv_expiry_delta, htlc_minimum_msat,
        fee_base_msat, fee_proportional_millionths, htlc_maximum_msat,
    )  # fmt: skip
    return signed_message(m.CHANNEL_UPDATE, (node_secret,), body)


def sign_node_announcement(
    node_secret: bytes,
    timestamp: int,
    *,
    features: bytes = b"",
    rgb_color: bytes = b"\0\0\0",
    alias: bytes = b"",
    addresses: bytes = b"",
) -> bytes:
    body = m.encode_node_announcement_body(
        pubkey_of(node_secret),
        timestamp,
        features=features,
        rgb_color=rgb_color,
        alias=alias,
        addresses=addresses,
    )
    return signed_message(m.NODE_ANNOUNCEMENT, (node_secret,), body)
