import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("store_id", "from_seq", "epoch", "last_epoch")
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    store_id: str
    from_seq: int
    epoch: int
    last_epoch: int
    def __init__(self, store_id: _Optional[str] = ..., from_seq: _Optional[int] = ..., epoch: _Optional[int] = ..., last_epoch: _Optional[int] = ...) -> None: ...

class FollowRequest(_message.Message):
    __slots__ = ("hello", "applied_seq")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    applied_seq: int
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., applied_seq: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("seq", "epoch", "kind", "payload", "committed")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    epoch: int
    kind: str
    payload: bytes
    committed: _timestamp_pb2.Timestamp
    def __init__(self, seq: _Optional[int] = ..., epoch: _Optional[int] = ..., kind: _Optional[str] = ..., payload: _Optional[bytes] = ..., committed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("primary_seq", "epoch", "sent")
    PRIMARY_SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    primary_seq: int
    epoch: int
    sent: _timestamp_pb2.Timestamp
    def __init__(self, primary_seq: _Optional[int] = ..., epoch: _Optional[int] = ..., sent: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FeedMessage(_message.Message):
    __slots__ = ("change", "heartbeat")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    change: Change
    heartbeat: Heartbeat
    def __init__(self, change: _Optional[_Union[Change, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotTrailer(_message.Message):
    __slots__ = ("store_id", "seq", "epoch", "size", "sha256", "index_size")
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    INDEX_SIZE_FIELD_NUMBER: _ClassVar[int]
    store_id: str
    seq: int
    epoch: int
    size: int
    sha256: str
    index_size: int
    def __init__(self, store_id: _Optional[str] = ..., seq: _Optional[int] = ..., epoch: _Optional[int] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., index_size: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("data", "trailer", "index_data")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    INDEX_DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    trailer: SnapshotTrailer
    index_data: bytes
    def __init__(self, data: _Optional[bytes] = ..., trailer: _Optional[_Union[SnapshotTrailer, _Mapping]] = ..., index_data: _Optional[bytes] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("role", "primary", "seq", "epoch", "connected", "data_as_of", "data_age_seconds", "fenced_by")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    DATA_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FENCED_BY_FIELD_NUMBER: _ClassVar[int]
    role: str
    primary: str
    seq: int
    epoch: int
    connected: bool
    data_as_of: _timestamp_pb2.Timestamp
    data_age_seconds: float
    fenced_by: int
    def __init__(self, role: _Optional[str] = ..., primary: _Optional[str] = ..., seq: _Optional[int] = ..., epoch: _Optional[int] = ..., connected: _Optional[bool] = ..., data_as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_age_seconds: _Optional[float] = ..., fenced_by: _Optional[int] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PromoteResponse(_message.Message):
    __slots__ = ("epoch", "seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    seq: int
    def __init__(self, epoch: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class ImportBundleRequest(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: bytes
    def __init__(self, bundle: _Optional[bytes] = ...) -> None: ...

class ImportBundleResponse(_message.Message):
    __slots__ = ("watchlist", "issuing_agency", "bundle_sequence", "subjects")
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    ISSUING_AGENCY_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    watchlist: str
    issuing_agency: str
    bundle_sequence: int
    subjects: int
    def __init__(self, watchlist: _Optional[str] = ..., issuing_agency: _Optional[str] = ..., bundle_sequence: _Optional[int] = ..., subjects: _Optional[int] = ...) -> None: ...
