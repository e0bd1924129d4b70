from lnsync.v1 import persistence_pb2 as _persistence_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ComputeDeltaRequest(_message.Message):
    __slots__ = ("last_sync_timestamp", "version", "reference_time", "apply_lag")
    LAST_SYNC_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    APPLY_LAG_FIELD_NUMBER: _ClassVar[int]
    last_sync_timestamp: int
    version: int
    reference_time: int
    apply_lag: int
    def __init__(self, last_sync_timestamp: _Optional[int] = ..., version: _Optional[int] = ..., reference_time: _Optional[int] = ..., apply_lag: _Optional[int] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data", "info")
    DATA_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    info: BlobInfo
    def __init__(self, data: _Optional[bytes] = ..., info: _Optional[_Union[BlobInfo, _Mapping]] = ...) -> None: ...

class BlobInfo(_message.Message):
    __slots__ = ("version", "timestamp", "last_sync_timestamp", "reference_time", "size", "node_count", "announcement_count", "update_count", "data_generation")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_GENERATION_FIELD_NUMBER: _ClassVar[int]
    version: int
    timestamp: int
    last_sync_timestamp: int
    reference_time: int
    size: int
    node_count: int
    announcement_count: int
    update_count: int
    data_generation: int
    def __init__(self, version: _Optional[int] = ..., timestamp: _Optional[int] = ..., last_sync_timestamp: _Optional[int] = ..., reference_time: _Optional[int] = ..., size: _Optional[int] = ..., node_count: _Optional[int] = ..., announcement_count: _Optional[int] = ..., update_count: _Optional[int] = ..., data_generation: _Optional[int] = ...) -> None: ...

class GetServingPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServingPolicy(_message.Message):
    __slots__ = ("ingest_lag", "timestamp_granularity", "versions")
    INGEST_LAG_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ingest_lag: int
    timestamp_granularity: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ingest_lag: _Optional[int] = ..., timestamp_granularity: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ...) -> None: ...

class GraphSummaryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GraphSummaryResponse(_message.Message):
    __slots__ = ("channels", "nodes", "directions", "last_gossip_at", "channel_updates_stored", "data_generation")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_GOSSIP_AT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_UPDATES_STORED_FIELD_NUMBER: _ClassVar[int]
    DATA_GENERATION_FIELD_NUMBER: _ClassVar[int]
    channels: int
    nodes: int
    directions: int
    last_gossip_at: int
    channel_updates_stored: int
    data_generation: int
    def __init__(self, channels: _Optional[int] = ..., nodes: _Optional[int] = ..., directions: _Optional[int] = ..., last_gossip_at: _Optional[int] = ..., channel_updates_stored: _Optional[int] = ..., data_generation: _Optional[int] = ...) -> None: ...
