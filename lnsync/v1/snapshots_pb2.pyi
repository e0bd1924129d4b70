from lnsync.v1 import lookup_pb2 as _lookup_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SnapshotKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_KIND_UNSPECIFIED: _ClassVar[SnapshotKind]
    SNAPSHOT_KIND_FULL: _ClassVar[SnapshotKind]
    SNAPSHOT_KIND_SCOPED: _ClassVar[SnapshotKind]
    SNAPSHOT_KIND_NOTHING_NEW: _ClassVar[SnapshotKind]
SNAPSHOT_KIND_UNSPECIFIED: SnapshotKind
SNAPSHOT_KIND_FULL: SnapshotKind
SNAPSHOT_KIND_SCOPED: SnapshotKind
SNAPSHOT_KIND_NOTHING_NEW: SnapshotKind

class GetSnapshotRequest(_message.Message):
    __slots__ = ("timestamp", "version", "gzip", "kind", "scope_seconds")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GZIP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCOPE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    version: int
    gzip: bool
    kind: SnapshotKind
    scope_seconds: int
    def __init__(self, timestamp: _Optional[int] = ..., version: _Optional[int] = ..., gzip: _Optional[bool] = ..., kind: _Optional[_Union[SnapshotKind, str]] = ..., scope_seconds: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("data", "info")
    DATA_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    info: SnapshotInfo
    def __init__(self, data: _Optional[bytes] = ..., info: _Optional[_Union[SnapshotInfo, _Mapping]] = ...) -> None: ...

class SnapshotInfo(_message.Message):
    __slots__ = ("generation", "reference_time", "scope_seconds", "last_sync_timestamp", "version", "size", "sha256", "gzip_size", "gzip", "blob", "kind")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    GZIP_SIZE_FIELD_NUMBER: _ClassVar[int]
    GZIP_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    generation: int
    reference_time: int
    scope_seconds: int
    last_sync_timestamp: int
    version: int
    size: int
    sha256: bytes
    gzip_size: int
    gzip: bool
    blob: _lookup_pb2.BlobInfo
    kind: SnapshotKind
    def __init__(self, generation: _Optional[int] = ..., reference_time: _Optional[int] = ..., scope_seconds: _Optional[int] = ..., last_sync_timestamp: _Optional[int] = ..., version: _Optional[int] = ..., size: _Optional[int] = ..., sha256: _Optional[bytes] = ..., gzip_size: _Optional[int] = ..., gzip: _Optional[bool] = ..., blob: _Optional[_Union[_lookup_pb2.BlobInfo, _Mapping]] = ..., kind: _Optional[_Union[SnapshotKind, str]] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("unless_generation", "wait_seconds")
    UNLESS_GENERATION_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    unless_generation: int
    wait_seconds: int
    def __init__(self, unless_generation: _Optional[int] = ..., wait_seconds: _Optional[int] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("generation", "reference_time", "generated_at", "snapshots", "interval", "proof_failure")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PROOF_FAILURE_FIELD_NUMBER: _ClassVar[int]
    generation: int
    reference_time: int
    generated_at: int
    snapshots: _containers.RepeatedCompositeFieldContainer[SnapshotInfo]
    interval: int
    proof_failure: ProofFailure
    def __init__(self, generation: _Optional[int] = ..., reference_time: _Optional[int] = ..., generated_at: _Optional[int] = ..., snapshots: _Optional[_Iterable[_Union[SnapshotInfo, _Mapping]]] = ..., interval: _Optional[int] = ..., proof_failure: _Optional[_Union[ProofFailure, _Mapping]] = ...) -> None: ...

class ProofFailure(_message.Message):
    __slots__ = ("reference_time", "problem")
    REFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    reference_time: int
    problem: str
    def __init__(self, reference_time: _Optional[int] = ..., problem: _Optional[str] = ...) -> None: ...

class RegenerateRequest(_message.Message):
    __slots__ = ("reference_time", "replace_newer")
    REFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    REPLACE_NEWER_FIELD_NUMBER: _ClassVar[int]
    reference_time: int
    replace_newer: bool
    def __init__(self, reference_time: _Optional[int] = ..., replace_newer: _Optional[bool] = ...) -> None: ...

class RegenerateResponse(_message.Message):
    __slots__ = ("generation", "reference_time", "seconds")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    reference_time: int
    seconds: float
    def __init__(self, generation: _Optional[int] = ..., reference_time: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
