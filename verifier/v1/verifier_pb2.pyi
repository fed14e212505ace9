import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_KIND_LIVE: _ClassVar[ImageKind]
    IMAGE_KIND_DOCUMENT: _ClassVar[ImageKind]
IMAGE_KIND_LIVE: ImageKind
IMAGE_KIND_DOCUMENT: ImageKind

class Template(_message.Message):
    __slots__ = ("model_id", "version", "dimension", "vector")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    dimension: int
    vector: bytes
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., dimension: _Optional[int] = ..., vector: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class FaceSample(_message.Message):
    __slots__ = ("image", "template")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    image: Image
    template: Template
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., template: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "detection_score", "landmarks", "faces_detected")
    BOX_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    FACES_DETECTED_FIELD_NUMBER: _ClassVar[int]
    box: Box
    detection_score: float
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    faces_detected: int
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., detection_score: _Optional[float] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., faces_detected: _Optional[int] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "milliseconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MILLISECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    milliseconds: float
    def __init__(self, stage: _Optional[str] = ..., milliseconds: _Optional[float] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("probe", "reference")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    probe: Image
    reference: FaceSample
    def __init__(self, probe: _Optional[_Union[Image, _Mapping]] = ..., reference: _Optional[_Union[FaceSample, _Mapping]] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("score", "match", "threshold", "false_match_rate", "threshold_source", "probe_face", "reference_face", "timings", "model_id", "data_as_of")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALSE_MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PROBE_FACE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FACE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_AS_OF_FIELD_NUMBER: _ClassVar[int]
    score: float
    match: bool
    threshold: float
    false_match_rate: float
    threshold_source: str
    probe_face: Face
    reference_face: Face
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    model_id: str
    data_as_of: _timestamp_pb2.Timestamp
    def __init__(self, score: _Optional[float] = ..., match: _Optional[bool] = ..., threshold: _Optional[float] = ..., false_match_rate: _Optional[float] = ..., threshold_source: _Optional[str] = ..., probe_face: _Optional[_Union[Face, _Mapping]] = ..., reference_face: _Optional[_Union[Face, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., model_id: _Optional[str] = ..., data_as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExtractTemplateRequest(_message.Message):
    __slots__ = ("image", "kind")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    image: Image
    kind: ImageKind
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., kind: _Optional[_Union[ImageKind, str]] = ...) -> None: ...

class ExtractTemplateResponse(_message.Message):
    __slots__ = ("template", "face", "timings")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    template: Template
    face: Face
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ..., face: _Optional[_Union[Face, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ...) -> None: ...

class CompareTemplatesRequest(_message.Message):
    __slots__ = ("a", "b")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    a: Template
    b: Template
    def __init__(self, a: _Optional[_Union[Template, _Mapping]] = ..., b: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class CompareTemplatesResponse(_message.Message):
    __slots__ = ("score", "match", "threshold", "false_match_rate", "model_id", "threshold_source")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALSE_MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    score: float
    match: bool
    threshold: float
    false_match_rate: float
    model_id: str
    threshold_source: str
    def __init__(self, score: _Optional[float] = ..., match: _Optional[bool] = ..., threshold: _Optional[float] = ..., false_match_rate: _Optional[float] = ..., model_id: _Optional[str] = ..., threshold_source: _Optional[str] = ...) -> None: ...
