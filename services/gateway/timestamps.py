"""The client's ``last_sync_timestamp`` as it appears in a URL: strict, bounded, canonical.

Only plain decimal digits are accepted (no sign, no spaces, no leading zeros, no other Unicode
digits), at most 10 of them, and the value must fit RGS's u32. One spelling per value keeps URLs
canonical, so HTTP caches and CDNs never hold two copies of the same answer.
"""

from __future__ import annotations

import re

from lnsync.rgs import policy

U32_MAX = (1 << 32) - 1
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,9}", re.ASCII)


class BadTimestamp(ValueError):
    """The URL's timestamp is not acceptable; the message is the one-line reason sent to the client."""


def parse_timestamp(text: str, now: float) -> int:
    """The u32 timestamp spelled by ``text``, or :class:`BadTimestamp` saying why not."""
    if not _CANONICAL.fullmatch(text):
        shown = repr(text) if len(text) <= 24 and text.isprintable() else "in the URL"
        raise BadTimestamp(
            f"timestamp {shown} is not a decimal integer from 0 to {U32_MAX} "
            "(digits only, no sign or leading zeros)"
        )
    value = int(text)
    if value > U32_MAX:
        raise BadTimestamp(f"timestamp {value} is above {U32_MAX} (RGS timestamps are 32-bit)")
    if policy.in_future(value, now):
        raise BadTimestamp(f"timestamp {value} is in the future")
    return value
