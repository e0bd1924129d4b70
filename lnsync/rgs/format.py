"""Constants of the RGS binary format (versions 1 and 2), as LDK's client reads it.

All integers are big-endian; variable-length integers are BigSize (see :mod:`lnsync.bigsize`).
"""

from __future__ import annotations

MAGIC = b"LDK"
VERSIONS = (1, 2)

# Update record flags.
UPDATE_INCREMENTAL = 0x80
UPDATE_CLTV = 0x40
UPDATE_HTLC_MIN = 0x20
UPDATE_FEE_BASE = 0x10
UPDATE_FEE_PROP = 0x08
UPDATE_HTLC_MAX = 0x04
UPDATE_DISABLED = 0x02
UPDATE_DIRECTION = 0x01
# The five value fields, in the order their values follow the flags byte.
FIELD_BITS = (UPDATE_CLTV, UPDATE_HTLC_MIN, UPDATE_FEE_BASE, UPDATE_FEE_PROP, UPDATE_HTLC_MAX)
VALUE_FIELDS_MASK = UPDATE_CLTV | UPDATE_HTLC_MIN | UPDATE_FEE_BASE | UPDATE_FEE_PROP | UPDATE_HTLC_MAX
# Size in bytes of each value field, same order as FIELD_BITS.
FIELD_SIZES = (2, 8, 4, 4, 8)

# v2 node entry: flags carried in the first byte of the compressed public key.
NODE_HAS_ADDRESSES = 0x04
NODE_FEATURES_SHIFT = 3  # bits 3-5: 0 none, 1..6 default set m-1, 7 explicit features
NODE_FEATURES_MASK = 0x38
NODE_FEATURES_EXPLICIT = 7
NODE_REMINDER = 0x40
NODE_HAS_EXTRA = 0x80
NODE_KEY_BITS = 0x03
MAX_DEFAULT_NODE_FEATURES = 6

# v2 announcement: bit 63 of node_2's index announces a length-prefixed tail (funding sats first).
ANNOUNCEMENT_HAS_EXTRA = 1 << 63

# The LDK client backdates everything to (header timestamp - 7 days) and prunes what it has not
# heard about for 14 days, so data written by a blob lives for 7 days after its header time.
CLIENT_BACKDATE = 7 * 86400
CLIENT_PRUNE_AFTER = 14 * 86400
CLIENT_LIFETIME = CLIENT_PRUNE_AFTER - CLIENT_BACKDATE

# Gossip older than this is dead on the network (BOLT 7 / LDK prune after two weeks).
STALE_AFTER = 14 * 86400
