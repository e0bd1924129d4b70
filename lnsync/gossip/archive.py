"""Readers and writers for the files Lightning gossip is archived in (pure: bytes and file objects).

Three formats, recognised from their first bytes (:func:`detect_format`):

* **GSP** (lnresearch/gossip): ``b"GSP\\x01"``, then records of ``[BigSize length][message]``.
  The length is a BOLT BigSize (big-endian prefixes), whatever the lnresearch docs call it.
* **gossip_store** (Core Lightning, ``common/gossip_store.h``): a version byte (major version in the
  top 3 bits, must be 0; minor 9..16 are read), then records of a 12-byte header
  ``[u16 flags][u16 length][u32 crc][u32 timestamp]`` and the message. The crc is CRC-32C of the
  message, chained from the timestamp. Flag bits: ``0x8000`` deleted, ``0x2000`` completed (v15+;
  rate-limited before v14), ``0x0800`` dying (channel spent, kept for 12 blocks); ``0x4000`` (push)
  and ``0x1000`` (zombie, v12..13) are obsolete. Core Lightning also stores its own records (types
  4101..4107: channel amounts, tombstones, uuids, end markers). They are not gossip and are not
  yielded, except that a channel amount fills in the ``funding_sats`` of the channel_announcement
  it follows. The ``ended`` record (4105) closes a store that was replaced by a compacted copy, so
  reading stops there.
* **u16**: plain ``[u16 big-endian length][message]`` records, as the project's derived fixtures use.

Readers stream in fixed-size chunks, so memory does not grow with the file, and yield
:class:`ArchiveRecord` s. A malformed file raises an :class:`ArchiveError` subclass naming the byte
offset of the bad record after every good record before it has been yielded, so nothing is lost.
Writers produce the gossip_store and u16 formats (the data generator and the tests use them).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c

from lnsync import bigsize

GSP_MAGIC = b"GSP\x01"

# Core Lightning gossip_store header flags (common/gossip_store.h and gossipd/gossip_store.c).
STORE_DELETED = 0x8000
STORE_PUSH = 0x4000  # obsolete; records written by old versions may still carry it
STORE_COMPLETED = 0x2000  # v15+: a record without it was never finished (rate-limited in v9..v13)
STORE_ZOMBIE = 0x1000  # v12..v13 only
STORE_DYING = 0x0800

# Core Lightning's own record types (common/gossip_store_wire.csv).
STORE_CHANNEL_AMOUNT = 4101
STORE_PRIVATE_UPDATE_OBS = 4102
STORE_DELETE_CHAN = 4103
STORE_PRIVATE_CHANNEL_OBS = 4104
STORE_ENDED = 4105
STORE_CHAN_DYING = 4106
STORE_UUID = 4107

STORE_MIN_VERSION = 9  # the oldest version Core Lightning itself still upgrades from
STORE_MAX_VERSION = 16
STORE_WRITE_VERSION = 16  # what Core Lightning writes today (a uuid record comes first)

MAX_RECORD = 65535  # a Lightning message never exceeds one BOLT 8 frame

_CHANNEL_ANNOUNCEMENT = 256
_GOSSIP_TYPES = frozenset({256, 257, 258})
_STORE_HDR = struct.Struct(">HHII")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_CHUNK = 1 << 20
_BIGSIZE_WIDTH = {0xFD: 3, 0xFE: 5, 0xFF: 9}


class ArchiveFormat(enum.Enum):
    GSP = "gsp"
    GOSSIP_STORE = "gossip_store"
    U16 = "u16"


class ArchiveError(ValueError):
    """The archive is malformed at ``offset`` (bytes from the start of the file)."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"{what} at byte offset {offset}")
        self.offset = offset
        self.what = what


class UnknownArchiveFormat(ArchiveError):
    """The first bytes match none of the supported formats."""


class UnsupportedVersion(ArchiveError):
    """A gossip_store whose version this reader does not know."""


class TruncatedArchive(ArchiveError):
    """The file ends inside a record (header or message)."""


class IncompleteRecord(TruncatedArchive):
    """A gossip_store record without the completed flag: Core Lightning was still writing it."""


class CorruptRecord(ArchiveError):
    """A record is structurally impossible or its checksum does not match."""


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One message from an archive.

    ``timestamp`` is the record's own time where the format has one (gossip_store: what Core
    Lightning stored, usually the message's timestamp), else None. ``flags`` are the gossip_store
    header flags (0 for the other formats); ``offset`` is where the record starts in the file.
    ``funding_sats`` is the channel's amount for a gossip_store channel_announcement followed by
    Core Lightning's amount record, else None.
    """

    raw: bytes
    timestamp: int | None
    offset: int
    flags: int = 0
    funding_sats: int | None = None

    @property
    def msg_type(self) -> int:
        return int(_U16.unpack_from(self.raw)[0])


class _Buffer:
    """Read buffer over a binary file: ``fill(n)`` makes ``n`` bytes available at ``pos``."""

    def __init__(self, f: BinaryIO, initial: bytes) -> None:
        self._f = f
        self.buf = initial
        self.pos = 0
        self._base = 0  # file offset of buf[0]

    @property
    def offset(self) -> int:
        return self._base + self.pos

    def fill(self, n: int) -> int:
        """Bytes available at ``pos`` up to ``n``: fewer than ``n`` only at the end of the file."""
        have = len(self.buf) - self.pos
        if have >= n:
            return n
        parts = [self.buf[self.pos :]]
        self._base += self.pos
        self.pos = 0
        while have < n:
            chunk = self._f.read(max(_CHUNK, n - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)
        return min(have, n)

    def take(self, n: int) -> bytes:
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def _is_u16_record(head: bytes) -> bool:
    return len(head) >= 4 and _U16.unpack_from(head)[0] >= 2 and _U16.unpack_from(head, 2)[0] in _GOSSIP_TYPES


def detect_format(head: bytes) -> ArchiveFormat | None:
    """The format of a file starting with ``head`` (give it enough bytes to hold the first record,
    as :func:`read_archive` does); None for an empty file.

    A first byte below 0x20 is a gossip_store version byte (major version 0), unless the file reads
    as u16 records and the first record's checksum does not match. Otherwise u16 records are assumed
    when the first record's type is a gossip message. Anything else is :class:`UnknownArchiveFormat`.
    """
    if not head:
        return None
    if head.startswith(GSP_MAGIC):
        return ArchiveFormat.GSP
    u16_like = _is_u16_record(head)
    version = head[0]
    if version < 0x20:
        if STORE_MIN_VERSION <= version <= STORE_MAX_VERSION:
            if len(head) < 1 + _STORE_HDR.size or not u16_like:
                return ArchiveFormat.GOSSIP_STORE
            _, length, crc, ts = _STORE_HDR.unpack_from(head, 1)
            body = head[1 + _STORE_HDR.size : 1 + _STORE_HDR.size + length]
            if len(body) == length and google_crc32c.extend(ts, body) == crc:
                return ArchiveFormat.GOSSIP_STORE
        elif not u16_like:
            raise UnsupportedVersion(0, f"gossip_store version 0.{version} is not supported")
    if u16_like:
        return ArchiveFormat.U16
    raise UnknownArchiveFormat(0, f"unrecognised archive (first bytes {head[:8].hex()})")


# Enough to check the crc of a gossip_store's first record, whatever its size.
_DETECT_BYTES = 1 + _STORE_HDR.size + MAX_RECORD


def read_archive(
    f: BinaryIO,
    fmt: ArchiveFormat | None = None,
    *,
    include_deleted: bool = False,
    verify_crc: bool = True,
) -> Iterator[ArchiveRecord]:
    """Iterate the messages of an archive read from ``f`` (format auto-detected unless given).

    gossip_store options: ``include_deleted`` also yields records Core Lightning marked deleted
    (superseded updates and closed channels: real history); ``verify_crc`` checks every record.
    """
    head = f.read(_DETECT_BYTES)
    if fmt is None:
        fmt = detect_format(head)
        if fmt is None:
            return
    buf = _Buffer(f, head)
    if fmt is ArchiveFormat.GSP:
        yield from _read_gsp(buf)
    elif fmt is ArchiveFormat.GOSSIP_STORE:
        yield from _read_gossip_store(buf, include_deleted=include_deleted, verify_crc=verify_crc)
    else:
        yield from _read_u16(buf)


def read_archive_bytes(
    data: bytes,
    fmt: ArchiveFormat | None = None,
    *,
    include_deleted: bool = False,
    verify_crc: bool = True,
) -> list[ArchiveRecord]:
    """All records of an in-memory archive (for tests and small files)."""
    return list(read_archive(io.BytesIO(data), fmt, include_deleted=include_deleted, verify_crc=verify_crc))


def _message(buf: _Buffer, start: int, length: int) -> bytes:
    if buf.fill(length) < length:
        raise TruncatedArchive(start, "file ends inside a record")
    if length < 2:
        raise CorruptRecord(start, f"record of {length} bytes cannot hold a message type")
    return buf.take(length)


def _read_gsp(buf: _Buffer) -> Iterator[ArchiveRecord]:
    if buf.fill(len(GSP_MAGIC)) < len(GSP_MAGIC) or buf.take(len(GSP_MAGIC)) != GSP_MAGIC:
        raise UnknownArchiveFormat(0, "not a GSP file (no GSP\\x01 header)")
    while True:
        start = buf.offset
        if buf.fill(1) == 0:
            return
        width = _BIGSIZE_WIDTH.get(buf.buf[buf.pos], 1)
        if buf.fill(width) < width:
            raise TruncatedArchive(start, "file ends inside a record length")
        try:
            length, end = bigsize.decode(buf.buf[buf.pos : buf.pos + width])
        except bigsize.BigSizeError as exc:
            raise CorruptRecord(start, str(exc)) from None
        if length > MAX_RECORD:
            raise CorruptRecord(start, f"record length {length} exceeds the {MAX_RECORD}-byte message limit")
        buf.pos += end
        yield ArchiveRecord(_message(buf, start, length), None, start)


def _read_u16(buf: _Buffer) -> Iterator[ArchiveRecord]:
    while True:
        start = buf.offset
        got = buf.fill(2)
        if got == 0:
            return
        if got < 2:
            raise TruncatedArchive(start, "file ends inside a record length")
        (length,) = _U16.unpack_from(buf.buf, buf.pos)
        buf.pos += 2
        yield ArchiveRecord(_message(buf, start, length), None, start)


def _read_gossip_store(buf: _Buffer, *, include_deleted: bool, verify_crc: bool) -> Iterator[ArchiveRecord]:
    if buf.fill(1) == 0:
        return
    version = buf.take(1)[0]
    if version >> 5 != 0 or not STORE_MIN_VERSION <= version <= STORE_MAX_VERSION:
        raise UnsupportedVersion(0, f"gossip_store version {version >> 5}.{version & 0x1F} is not supported")
    needs_completed = version >= 15
    # A channel_announcement is held back until the next record, which may carry its amount.
    pending: ArchiveRecord | None = None
    try:
        while True:
            start = buf.offset
            got = buf.fill(_STORE_HDR.size)
            if got == 0:
                break
            if got < _STORE_HDR.size:
                raise TruncatedArchive(start, "file ends inside a record header")
            flags, length, crc, timestamp = _STORE_HDR.unpack_from(buf.buf, buf.pos)
            buf.pos += _STORE_HDR.size
            if needs_completed and not flags & STORE_COMPLETED:
                raise IncompleteRecord(start, "record was never completed (Core Lightning still writing it?)")
            raw = _message(buf, start, length)
            if verify_crc and google_crc32c.extend(timestamp, raw) != crc:
                raise CorruptRecord(start, "gossip_store record checksum mismatch")
            msg_type = _U16.unpack_from(raw)[0]
            if msg_type == STORE_CHANNEL_AMOUNT and pending is not None and length == 2 + _U64.size:
                yield dataclasses.replace(pending, funding_sats=_U64.unpack_from(raw, 2)[0])
                pending = None
                continue
            if pending is not None:
                yield pending
                pending = None
            if msg_type == STORE_ENDED:
                break
            if msg_type not in _GOSSIP_TYPES or (flags & STORE_DELETED and not include_deleted):
                continue
            record = ArchiveRecord(raw, timestamp, start, flags)
            if msg_type == _CHANNEL_ANNOUNCEMENT:
                pending = record
            else:
                yield record
    except ArchiveError:
        if pending is not None:  # yield the held record before the error: nothing is lost
            yield pending
        raise
    if pending is not None:
        yield pending


# -- writers ---------------------------------------------------------------------------------------


class GossipStoreWriter:
    """Writes a Core Lightning gossip_store (version 16 by default) to a binary file.

    Version 16 stores start with a uuid record; every record is written complete (flag 0x2000 for
    v15+). Core Lightning puts an amount record right after each channel_announcement: pass
    ``funding_sats`` to :meth:`add` to write one.
    """

    def __init__(self, f: BinaryIO, *, uuid: bytes = b"\0" * 32, version: int = STORE_WRITE_VERSION) -> None:
        if not STORE_MIN_VERSION <= version <= STORE_MAX_VERSION:
            raise ValueError(f"cannot write gossip_store version {version}")
        if len(uuid) != 32:
            raise ValueError("a gossip_store uuid is 32 bytes")
        self._f = f
        self._completed = STORE_COMPLETED if version >= 15 else 0
        self.records = 0  # gossip messages written (Core Lightning's own records not counted)
        f.write(bytes((version,)))
        if version >= 16:
            self._write(_U16.pack(STORE_UUID) + uuid, 0, 0)

    def _write(self, raw: bytes, timestamp: int, flags: int) -> None:
        if not 2 <= len(raw) <= MAX_RECORD:
            raise ValueError(f"a gossip_store record holds 2..{MAX_RECORD} bytes, not {len(raw)}")
        if not 0 <= timestamp <= 0xFFFFFFFF:
            raise ValueError(f"record timestamp {timestamp} does not fit in 32 bits")
        crc = google_crc32c.extend(timestamp, raw)
        self._f.write(_STORE_HDR.pack((flags | self._completed) & 0xFFFF, len(raw), crc, timestamp) + raw)

    def add(self, raw: bytes, timestamp: int, *, flags: int = 0, funding_sats: int | None = None) -> None:
        """Append one message with its record timestamp (Unix seconds) and extra header flags;
        ``funding_sats`` adds Core Lightning's amount record after a channel_announcement."""
        self._write(raw, timestamp, flags)
        self.records += 1
        if funding_sats is not None:
            self._write(_U16.pack(STORE_CHANNEL_AMOUNT) + _U64.pack(funding_sats), timestamp, flags)


class U16Writer:
    """Writes plain [u16 length][message] records."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.records = 0

    def add(self, raw: bytes) -> None:
        if len(raw) > MAX_RECORD:
            raise ValueError(f"a u16 record holds at most {MAX_RECORD} bytes")
        self._f.write(_U16.pack(len(raw)) + raw)
        self.records += 1


def encode_gsp(messages: Iterable[bytes]) -> bytes:
    """A GSP file holding ``messages`` (the project reads GSP but only tests need to write it)."""
    return GSP_MAGIC + b"".join(bigsize.encode(len(m)) + m for m in messages)
