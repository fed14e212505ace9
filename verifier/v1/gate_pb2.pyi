from verifier.v1 import verifier_pb2 as _verifier_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GateDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATE_DECISION_UNSPECIFIED: _ClassVar[GateDecision]
    ACCEPT: _ClassVar[GateDecision]
    RETRY: _ClassVar[GateDecision]
    REFER: _ClassVar[GateDecision]
GATE_DECISION_UNSPECIFIED: GateDecision
ACCEPT: GateDecision
RETRY: GateDecision
REFER: GateDecision

class ScreenRequest(_message.Message):
    __slots__ = ("frames", "reference", "gate_id", "transaction_id", "attempt")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.Image]
    reference: _verifier_pb2.FaceSample
    gate_id: str
    transaction_id: str
    attempt: int
    def __init__(self, frames: _Optional[_Iterable[_Union[_verifier_pb2.Image, _Mapping]]] = ..., reference: _Optional[_Union[_verifier_pb2.FaceSample, _Mapping]] = ..., gate_id: _Optional[str] = ..., transaction_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class QualityComponent(_message.Message):
    __slots__ = ("name", "score", "raw", "unit", "code")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    score: float
    raw: float
    unit: str
    code: str
    def __init__(self, name: _Optional[str] = ..., score: _Optional[float] = ..., raw: _Optional[float] = ..., unit: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class QualityReport(_message.Message):
    __slots__ = ("unified", "utility_calibrated", "utility", "components")
    UNIFIED_FIELD_NUMBER: _ClassVar[int]
    UTILITY_CALIBRATED_FIELD_NUMBER: _ClassVar[int]
    UTILITY_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    unified: float
    utility_calibrated: bool
    utility: float
    components: _containers.RepeatedCompositeFieldContainer[QualityComponent]
    def __init__(self, unified: _Optional[float] = ..., utility_calibrated: _Optional[bool] = ..., utility: _Optional[float] = ..., components: _Optional[_Iterable[_Union[QualityComponent, _Mapping]]] = ...) -> None: ...

class WatchlistHit(_message.Message):
    __slots__ = ("watchlist", "subject_id", "reason", "source_agency", "external_reference", "score", "face_index")
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_AGENCY_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    watchlist: str
    subject_id: str
    reason: str
    source_agency: str
    external_reference: str
    score: float
    face_index: int
    def __init__(self, watchlist: _Optional[str] = ..., subject_id: _Optional[str] = ..., reason: _Optional[str] = ..., source_agency: _Optional[str] = ..., external_reference: _Optional[str] = ..., score: _Optional[float] = ..., face_index: _Optional[int] = ...) -> None: ...

class ScreenResponse(_message.Message):
    __slots__ = ("decision", "reasons", "score", "match", "threshold", "false_match_rate", "threshold_source", "hits", "watchlist_searched", "watchlist_threshold", "false_positive_identification_rate", "quality", "replay_checked", "replay_score", "replay_threshold", "faces", "frame_index", "timings", "model_id", "model_pack", "gate_id", "transaction_id", "repeated_answer", "pad_checked", "pad_score", "pad_threshold", "display_pattern_checked", "display_pattern_score", "display_pattern_threshold")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALSE_MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_SEARCHED_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_IDENTIFICATION_RATE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    REPLAY_CHECKED_FIELD_NUMBER: _ClassVar[int]
    REPLAY_SCORE_FIELD_NUMBER: _ClassVar[int]
    REPLAY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_PACK_FIELD_NUMBER: _ClassVar[int]
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REPEATED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    PAD_CHECKED_FIELD_NUMBER: _ClassVar[int]
    PAD_SCORE_FIELD_NUMBER: _ClassVar[int]
    PAD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_PATTERN_CHECKED_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_PATTERN_SCORE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_PATTERN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    decision: GateDecision
    reasons: _containers.RepeatedScalarFieldContainer[str]
    score: float
    match: bool
    threshold: float
    false_match_rate: float
    threshold_source: str
    hits: _containers.RepeatedCompositeFieldContainer[WatchlistHit]
    watchlist_searched: bool
    watchlist_threshold: float
    false_positive_identification_rate: float
    quality: QualityReport
    replay_checked: bool
    replay_score: float
    replay_threshold: float
    faces: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.Face]
    frame_index: int
    timings: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.StageTiming]
    model_id: str
    model_pack: str
    gate_id: str
    transaction_id: str
    repeated_answer: bool
    pad_checked: bool
    pad_score: float
    pad_threshold: float
    display_pattern_checked: bool
    display_pattern_score: float
    display_pattern_threshold: float
    def __init__(self, decision: _Optional[_Union[GateDecision, str]] = ..., reasons: _Optional[_Iterable[str]] = ..., score: _Optional[float] = ..., match: _Optional[bool] = ..., threshold: _Optional[float] = ..., false_match_rate: _Optional[float] = ..., threshold_source: _Optional[str] = ..., hits: _Optional[_Iterable[_Union[WatchlistHit, _Mapping]]] = ..., watchlist_searched: _Optional[bool] = ..., watchlist_threshold: _Optional[float] = ..., false_positive_identification_rate: _Optional[float] = ..., quality: _Optional[_Union[QualityReport, _Mapping]] = ..., replay_checked: _Optional[bool] = ..., replay_score: _Optional[float] = ..., replay_threshold: _Optional[float] = ..., faces: _Optional[_Iterable[_Union[_verifier_pb2.Face, _Mapping]]] = ..., frame_index: _Optional[int] = ..., timings: _Optional[_Iterable[_Union[_verifier_pb2.StageTiming, _Mapping]]] = ..., model_id: _Optional[str] = ..., model_pack: _Optional[str] = ..., gate_id: _Optional[str] = ..., transaction_id: _Optional[str] = ..., repeated_answer: _Optional[bool] = ..., pad_checked: _Optional[bool] = ..., pad_score: _Optional[float] = ..., pad_threshold: _Optional[float] = ..., display_pattern_checked: _Optional[bool] = ..., display_pattern_score: _Optional[float] = ..., display_pattern_threshold: _Optional[float] = ...) -> None: ...

class ScreenStart(_message.Message):
    __slots__ = ("reference", "gate_id", "transaction_id")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    reference: _verifier_pb2.FaceSample
    gate_id: str
    transaction_id: str
    def __init__(self, reference: _Optional[_Union[_verifier_pb2.FaceSample, _Mapping]] = ..., gate_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class ScreenStreamRequest(_message.Message):
    __slots__ = ("start", "frame")
    START_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    start: ScreenStart
    frame: _verifier_pb2.Image
    def __init__(self, start: _Optional[_Union[ScreenStart, _Mapping]] = ..., frame: _Optional[_Union[_verifier_pb2.Image, _Mapping]] = ...) -> None: ...

class ScreenHint(_message.Message):
    __slots__ = ("frame_index", "reasons", "quality")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    reasons: _containers.RepeatedScalarFieldContainer[str]
    quality: QualityReport
    def __init__(self, frame_index: _Optional[int] = ..., reasons: _Optional[_Iterable[str]] = ..., quality: _Optional[_Union[QualityReport, _Mapping]] = ...) -> None: ...

class ScreenStreamResponse(_message.Message):
    __slots__ = ("hint", "decision")
    HINT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    hint: ScreenHint
    decision: ScreenResponse
    def __init__(self, hint: _Optional[_Union[ScreenHint, _Mapping]] = ..., decision: _Optional[_Union[ScreenResponse, _Mapping]] = ...) -> None: ...
