import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from verifier.v1 import verifier_pb2 as _verifier_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consent(_message.Message):
    __slots__ = ("given", "gate_id", "text_version")
    GIVEN_FIELD_NUMBER: _ClassVar[int]
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    given: _timestamp_pb2.Timestamp
    gate_id: str
    text_version: str
    def __init__(self, given: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gate_id: _Optional[str] = ..., text_version: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("traveller_id", "document_number", "chip_photo", "live_capture", "consent")
    TRAVELLER_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CHIP_PHOTO_FIELD_NUMBER: _ClassVar[int]
    LIVE_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    traveller_id: str
    document_number: str
    chip_photo: _verifier_pb2.Image
    live_capture: _verifier_pb2.Image
    consent: Consent
    def __init__(self, traveller_id: _Optional[str] = ..., document_number: _Optional[str] = ..., chip_photo: _Optional[_Union[_verifier_pb2.Image, _Mapping]] = ..., live_capture: _Optional[_Union[_verifier_pb2.Image, _Mapping]] = ..., consent: _Optional[_Union[Consent, _Mapping]] = ...) -> None: ...

class TravellerRecord(_message.Message):
    __slots__ = ("traveller_id", "registered", "updated", "last_used", "consent", "templates")
    TRAVELLER_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    traveller_id: str
    registered: _timestamp_pb2.Timestamp
    updated: _timestamp_pb2.Timestamp
    last_used: _timestamp_pb2.Timestamp
    consent: Consent
    templates: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.Template]
    def __init__(self, traveller_id: _Optional[str] = ..., registered: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consent: _Optional[_Union[Consent, _Mapping]] = ..., templates: _Optional[_Iterable[_Union[_verifier_pb2.Template, _Mapping]]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("traveller", "score", "threshold", "replay_score", "quality", "nearest_other_score", "duplicate_threshold", "timings", "model_id")
    TRAVELLER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REPLAY_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    NEAREST_OTHER_SCORE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    traveller: TravellerRecord
    score: float
    threshold: float
    replay_score: float
    quality: float
    nearest_other_score: float
    duplicate_threshold: float
    timings: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.StageTiming]
    model_id: str
    def __init__(self, traveller: _Optional[_Union[TravellerRecord, _Mapping]] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., replay_score: _Optional[float] = ..., quality: _Optional[float] = ..., nearest_other_score: _Optional[float] = ..., duplicate_threshold: _Optional[float] = ..., timings: _Optional[_Iterable[_Union[_verifier_pb2.StageTiming, _Mapping]]] = ..., model_id: _Optional[str] = ...) -> None: ...

class VerifyTravellerRequest(_message.Message):
    __slots__ = ("traveller_id", "live_capture")
    TRAVELLER_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    traveller_id: str
    live_capture: _verifier_pb2.Image
    def __init__(self, traveller_id: _Optional[str] = ..., live_capture: _Optional[_Union[_verifier_pb2.Image, _Mapping]] = ...) -> None: ...

class VerifyTravellerResponse(_message.Message):
    __slots__ = ("match", "score", "threshold", "false_match_rate", "model_id", "live_face", "timings")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALSE_MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_FACE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    match: bool
    score: float
    threshold: float
    false_match_rate: float
    model_id: str
    live_face: _verifier_pb2.Face
    timings: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.StageTiming]
    def __init__(self, match: _Optional[bool] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., false_match_rate: _Optional[float] = ..., model_id: _Optional[str] = ..., live_face: _Optional[_Union[_verifier_pb2.Face, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[_verifier_pb2.StageTiming, _Mapping]]] = ...) -> None: ...

class UpdateTravellerRequest(_message.Message):
    __slots__ = ("traveller_id", "document_number", "chip_photo", "live_capture")
    TRAVELLER_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CHIP_PHOTO_FIELD_NUMBER: _ClassVar[int]
    LIVE_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    traveller_id: str
    document_number: str
    chip_photo: _verifier_pb2.Image
    live_capture: _verifier_pb2.Image
    def __init__(self, traveller_id: _Optional[str] = ..., document_number: _Optional[str] = ..., chip_photo: _Optional[_Union[_verifier_pb2.Image, _Mapping]] = ..., live_capture: _Optional[_Union[_verifier_pb2.Image, _Mapping]] = ...) -> None: ...

class UpdateTravellerResponse(_message.Message):
    __slots__ = ("traveller", "score")
    TRAVELLER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    traveller: TravellerRecord
    score: float
    def __init__(self, traveller: _Optional[_Union[TravellerRecord, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class EraseTravellerRequest(_message.Message):
    __slots__ = ("traveller_id",)
    TRAVELLER_ID_FIELD_NUMBER: _ClassVar[int]
    traveller_id: str
    def __init__(self, traveller_id: _Optional[str] = ...) -> None: ...

class EraseTravellerResponse(_message.Message):
    __slots__ = ("traveller_id",)
    TRAVELLER_ID_FIELD_NUMBER: _ClassVar[int]
    traveller_id: str
    def __init__(self, traveller_id: _Optional[str] = ...) -> None: ...

class GetTravellerRequest(_message.Message):
    __slots__ = ("traveller_id",)
    TRAVELLER_ID_FIELD_NUMBER: _ClassVar[int]
    traveller_id: str
    def __init__(self, traveller_id: _Optional[str] = ...) -> None: ...

class GetTravellerResponse(_message.Message):
    __slots__ = ("traveller",)
    TRAVELLER_FIELD_NUMBER: _ClassVar[int]
    traveller: TravellerRecord
    def __init__(self, traveller: _Optional[_Union[TravellerRecord, _Mapping]] = ...) -> None: ...
