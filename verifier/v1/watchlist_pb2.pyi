import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from verifier.v1 import verifier_pb2 as _verifier_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchlistInfo(_message.Message):
    __slots__ = ("name", "description", "created", "subject_count", "template_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    created: _timestamp_pb2.Timestamp
    subject_count: int
    template_count: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject_count: _Optional[int] = ..., template_count: _Optional[int] = ...) -> None: ...

class Subject(_message.Message):
    __slots__ = ("watchlist", "subject_id", "external_reference", "reason", "source_agency", "expires", "created", "template_count", "model_ids")
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_AGENCY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    watchlist: str
    subject_id: str
    external_reference: str
    reason: str
    source_agency: str
    expires: _timestamp_pb2.Timestamp
    created: _timestamp_pb2.Timestamp
    template_count: int
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, watchlist: _Optional[str] = ..., subject_id: _Optional[str] = ..., external_reference: _Optional[str] = ..., reason: _Optional[str] = ..., source_agency: _Optional[str] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., template_count: _Optional[int] = ..., model_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateWatchlistRequest(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class CreateWatchlistResponse(_message.Message):
    __slots__ = ("watchlist",)
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    watchlist: WatchlistInfo
    def __init__(self, watchlist: _Optional[_Union[WatchlistInfo, _Mapping]] = ...) -> None: ...

class DeleteWatchlistRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteWatchlistResponse(_message.Message):
    __slots__ = ("watchlist",)
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    watchlist: WatchlistInfo
    def __init__(self, watchlist: _Optional[_Union[WatchlistInfo, _Mapping]] = ...) -> None: ...

class ListWatchlistsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWatchlistsResponse(_message.Message):
    __slots__ = ("watchlists", "next_page_token")
    WATCHLISTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    watchlists: _containers.RepeatedCompositeFieldContainer[WatchlistInfo]
    next_page_token: str
    def __init__(self, watchlists: _Optional[_Iterable[_Union[WatchlistInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EnrollSubjectRequest(_message.Message):
    __slots__ = ("subject", "samples", "allow_partial")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    samples: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.FaceSample]
    allow_partial: bool
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ..., samples: _Optional[_Iterable[_Union[_verifier_pb2.FaceSample, _Mapping]]] = ..., allow_partial: _Optional[bool] = ...) -> None: ...

class SampleResult(_message.Message):
    __slots__ = ("index", "enrolled", "reason", "face")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    index: int
    enrolled: bool
    reason: str
    face: _verifier_pb2.Face
    def __init__(self, index: _Optional[int] = ..., enrolled: _Optional[bool] = ..., reason: _Optional[str] = ..., face: _Optional[_Union[_verifier_pb2.Face, _Mapping]] = ...) -> None: ...

class EnrollSubjectResponse(_message.Message):
    __slots__ = ("subject", "samples", "timings")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    samples: _containers.RepeatedCompositeFieldContainer[SampleResult]
    timings: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.StageTiming]
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ..., samples: _Optional[_Iterable[_Union[SampleResult, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[_verifier_pb2.StageTiming, _Mapping]]] = ...) -> None: ...

class RemoveSubjectRequest(_message.Message):
    __slots__ = ("watchlist", "subject_id")
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    watchlist: str
    subject_id: str
    def __init__(self, watchlist: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class RemoveSubjectResponse(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ...) -> None: ...

class GetSubjectRequest(_message.Message):
    __slots__ = ("watchlist", "subject_id")
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    watchlist: str
    subject_id: str
    def __init__(self, watchlist: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class GetSubjectResponse(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ...) -> None: ...

class IdentifyRequest(_message.Message):
    __slots__ = ("probe", "watchlists", "top_k")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    WATCHLISTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    probe: _verifier_pb2.FaceSample
    watchlists: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    def __init__(self, probe: _Optional[_Union[_verifier_pb2.FaceSample, _Mapping]] = ..., watchlists: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("rank", "subject_id", "watchlist", "reason", "source_agency", "external_reference", "score", "provenance")
    RANK_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_AGENCY_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    rank: int
    subject_id: str
    watchlist: str
    reason: str
    source_agency: str
    external_reference: str
    score: float
    provenance: Provenance
    def __init__(self, rank: _Optional[int] = ..., subject_id: _Optional[str] = ..., watchlist: _Optional[str] = ..., reason: _Optional[str] = ..., source_agency: _Optional[str] = ..., external_reference: _Optional[str] = ..., score: _Optional[float] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("issuing_agency", "key_id", "bundle_sequence", "created", "expires", "model_id")
    ISSUING_AGENCY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    issuing_agency: str
    key_id: str
    bundle_sequence: int
    created: _timestamp_pb2.Timestamp
    expires: _timestamp_pb2.Timestamp
    model_id: str
    def __init__(self, issuing_agency: _Optional[str] = ..., key_id: _Optional[str] = ..., bundle_sequence: _Optional[int] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_id: _Optional[str] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("candidates", "threshold", "false_positive_identification_rate", "threshold_source", "probe_face", "timings", "model_id", "gallery_size", "data_as_of")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_IDENTIFICATION_RATE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PROBE_FACE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    threshold: float
    false_positive_identification_rate: float
    threshold_source: str
    probe_face: _verifier_pb2.Face
    timings: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.StageTiming]
    model_id: str
    gallery_size: int
    data_as_of: _timestamp_pb2.Timestamp
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., threshold: _Optional[float] = ..., false_positive_identification_rate: _Optional[float] = ..., threshold_source: _Optional[str] = ..., probe_face: _Optional[_Union[_verifier_pb2.Face, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[_verifier_pb2.StageTiming, _Mapping]]] = ..., model_id: _Optional[str] = ..., gallery_size: _Optional[int] = ..., data_as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
