from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestRequest(_message.Message):
    __slots__ = ("header", "messages")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    header: StreamHeader
    messages: _containers.RepeatedCompositeFieldContainer[GossipMessage]
    def __init__(self, header: _Optional[_Union[StreamHeader, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[GossipMessage, _Mapping]]] = ...) -> None: ...

class StreamHeader(_message.Message):
    __slots__ = ("peer_id", "source", "historical")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HISTORICAL_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    source: str
    historical: bool
    def __init__(self, peer_id: _Optional[str] = ..., source: _Optional[str] = ..., historical: _Optional[bool] = ...) -> None: ...

class GossipMessage(_message.Message):
    __slots__ = ("seq", "raw", "received_at_us", "funding_sats")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_US_FIELD_NUMBER: _ClassVar[int]
    FUNDING_SATS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    raw: bytes
    received_at_us: int
    funding_sats: int
    def __init__(self, seq: _Optional[int] = ..., raw: _Optional[bytes] = ..., received_at_us: _Optional[int] = ..., funding_sats: _Optional[int] = ...) -> None: ...

class IngestAck(_message.Message):
    __slots__ = ("acked_seq", "stored", "duplicates", "rejected", "rejections", "rejected_by_reason")
    class RejectedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    acked_seq: int
    stored: int
    duplicates: int
    rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    rejected_by_reason: _containers.ScalarMap[str, int]
    def __init__(self, acked_seq: _Optional[int] = ..., stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., rejected_by_reason: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("seq", "reason")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    reason: str
    def __init__(self, seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportSyncCompleteRequest(_message.Message):
    __slots__ = ("peer_id", "channel_announcements", "channel_updates", "node_announcements", "caught_up_to")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ANNOUNCEMENTS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_UPDATES_FIELD_NUMBER: _ClassVar[int]
    NODE_ANNOUNCEMENTS_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_TO_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    channel_announcements: int
    channel_updates: int
    node_announcements: int
    caught_up_to: int
    def __init__(self, peer_id: _Optional[str] = ..., channel_announcements: _Optional[int] = ..., channel_updates: _Optional[int] = ..., node_announcements: _Optional[int] = ..., caught_up_to: _Optional[int] = ...) -> None: ...

class ReportSyncCompleteResponse(_message.Message):
    __slots__ = ("fully_synced",)
    FULLY_SYNCED_FIELD_NUMBER: _ClassVar[int]
    fully_synced: bool
    def __init__(self, fully_synced: _Optional[bool] = ...) -> None: ...

class GetSyncStatusRequest(_message.Message):
    __slots__ = ("peer_id",)
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    def __init__(self, peer_id: _Optional[str] = ...) -> None: ...

class GetSyncGateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncGate(_message.Message):
    __slots__ = ("fully_synced", "fully_synced_at", "quorum", "peers_complete", "syncing")
    FULLY_SYNCED_FIELD_NUMBER: _ClassVar[int]
    FULLY_SYNCED_AT_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    PEERS_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    SYNCING_FIELD_NUMBER: _ClassVar[int]
    fully_synced: bool
    fully_synced_at: int
    quorum: int
    peers_complete: int
    syncing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fully_synced: _Optional[bool] = ..., fully_synced_at: _Optional[int] = ..., quorum: _Optional[int] = ..., peers_complete: _Optional[int] = ..., syncing: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncStatus(_message.Message):
    __slots__ = ("fully_synced", "fully_synced_at", "quorum", "peers")
    FULLY_SYNCED_FIELD_NUMBER: _ClassVar[int]
    FULLY_SYNCED_AT_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    fully_synced: bool
    fully_synced_at: int
    quorum: int
    peers: _containers.RepeatedCompositeFieldContainer[PeerSyncState]
    def __init__(self, fully_synced: _Optional[bool] = ..., fully_synced_at: _Optional[int] = ..., quorum: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[PeerSyncState, _Mapping]]] = ...) -> None: ...

class PeerSyncState(_message.Message):
    __slots__ = ("peer_id", "initial_sync_complete", "completed_at", "channel_announcements", "channel_updates", "node_announcements", "last_message_at", "stored", "duplicates", "caught_up_to")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    INITIAL_SYNC_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ANNOUNCEMENTS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_UPDATES_FIELD_NUMBER: _ClassVar[int]
    NODE_ANNOUNCEMENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_AT_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_TO_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    initial_sync_complete: bool
    completed_at: int
    channel_announcements: int
    channel_updates: int
    node_announcements: int
    last_message_at: int
    stored: int
    duplicates: int
    caught_up_to: int
    def __init__(self, peer_id: _Optional[str] = ..., initial_sync_complete: _Optional[bool] = ..., completed_at: _Optional[int] = ..., channel_announcements: _Optional[int] = ..., channel_updates: _Optional[int] = ..., node_announcements: _Optional[int] = ..., last_message_at: _Optional[int] = ..., stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., caught_up_to: _Optional[int] = ...) -> None: ...

class KnownChannelsRequest(_message.Message):
    __slots__ = ("max_channels",)
    MAX_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    max_channels: int
    def __init__(self, max_channels: _Optional[int] = ...) -> None: ...

class KnownChannelsChunk(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedCompositeFieldContainer[KnownChannel]
    def __init__(self, channels: _Optional[_Iterable[_Union[KnownChannel, _Mapping]]] = ...) -> None: ...

class KnownChannel(_message.Message):
    __slots__ = ("short_channel_id", "node_id_1", "node_id_2")
    SHORT_CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_1_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_2_FIELD_NUMBER: _ClassVar[int]
    short_channel_id: int
    node_id_1: bytes
    node_id_2: bytes
    def __init__(self, short_channel_id: _Optional[int] = ..., node_id_1: _Optional[bytes] = ..., node_id_2: _Optional[bytes] = ...) -> None: ...
