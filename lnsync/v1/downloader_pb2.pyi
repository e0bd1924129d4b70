from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetDownloaderStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DownloaderStatus(_message.Message):
    __slots__ = ("peer_id", "address", "connected", "state", "initial_sync_complete", "channel_announcements", "channel_updates", "node_announcements", "invalid", "unacknowledged", "last_message_at", "reconnects")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_SYNC_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ANNOUNCEMENTS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_UPDATES_FIELD_NUMBER: _ClassVar[int]
    NODE_ANNOUNCEMENTS_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    UNACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_AT_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    address: str
    connected: bool
    state: str
    initial_sync_complete: bool
    channel_announcements: int
    channel_updates: int
    node_announcements: int
    invalid: int
    unacknowledged: int
    last_message_at: int
    reconnects: int
    def __init__(self, peer_id: _Optional[str] = ..., address: _Optional[str] = ..., connected: _Optional[bool] = ..., state: _Optional[str] = ..., initial_sync_complete: _Optional[bool] = ..., channel_announcements: _Optional[int] = ..., channel_updates: _Optional[int] = ..., node_announcements: _Optional[int] = ..., invalid: _Optional[int] = ..., unacknowledged: _Optional[int] = ..., last_message_at: _Optional[int] = ..., reconnects: _Optional[int] = ...) -> None: ...
