from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamingConfig(_message.Message):
    __slots__ = ("sample_rate_hz", "language", "interim_results", "phrases", "call_id")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    PHRASES_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    language: str
    interim_results: bool
    phrases: _containers.RepeatedScalarFieldContainer[str]
    call_id: str
    def __init__(self, sample_rate_hz: _Optional[int] = ..., language: _Optional[str] = ..., interim_results: _Optional[bool] = ..., phrases: _Optional[_Iterable[str]] = ..., call_id: _Optional[str] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: StreamingConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[StreamingConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class WordInfo(_message.Message):
    __slots__ = ("word", "start_s", "end_s", "confidence")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    word: str
    start_s: float
    end_s: float
    confidence: float
    def __init__(self, word: _Optional[str] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., confidence: _Optional[float] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("text", "confidence", "words", "audio_start_s", "audio_end_s", "processing_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_START_S_FIELD_NUMBER: _ClassVar[int]
    AUDIO_END_S_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    words: _containers.RepeatedCompositeFieldContainer[WordInfo]
    audio_start_s: float
    audio_end_s: float
    processing_ms: float
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., words: _Optional[_Iterable[_Union[WordInfo, _Mapping]]] = ..., audio_start_s: _Optional[float] = ..., audio_end_s: _Optional[float] = ..., processing_ms: _Optional[float] = ...) -> None: ...

class SpeechEvent(_message.Message):
    __slots__ = ("kind", "audio_offset_s", "text")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[SpeechEvent.Kind]
        SPEECH_START: _ClassVar[SpeechEvent.Kind]
        SPEECH_END: _ClassVar[SpeechEvent.Kind]
        PAUSE: _ClassVar[SpeechEvent.Kind]
    KIND_UNSPECIFIED: SpeechEvent.Kind
    SPEECH_START: SpeechEvent.Kind
    SPEECH_END: SpeechEvent.Kind
    PAUSE: SpeechEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    AUDIO_OFFSET_S_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    kind: SpeechEvent.Kind
    audio_offset_s: float
    text: str
    def __init__(self, kind: _Optional[_Union[SpeechEvent.Kind, str]] = ..., audio_offset_s: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("partial", "final", "speech", "engine")
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    partial: Transcript
    final: Transcript
    speech: SpeechEvent
    engine: str
    def __init__(self, partial: _Optional[_Union[Transcript, _Mapping]] = ..., final: _Optional[_Union[Transcript, _Mapping]] = ..., speech: _Optional[_Union[SpeechEvent, _Mapping]] = ..., engine: _Optional[str] = ...) -> None: ...
