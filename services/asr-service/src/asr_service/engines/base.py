"""What the servicer needs from an engine: a model loaded once, and one recognizer per stream.

Engines are synchronous and CPU-bound; the servicer calls them from worker threads or
worker processes (workers.py), never from the event loop. One `EngineStream` is only
ever used by one thread at a time.

Audio framing has one owner, the engine: `accept` takes audio of any length (the
client's chunks as they came, or several at once when the stream backed up) and each
engine cuts it into the fixed frames its decoder wants with a `FrameBuffer`
(pocketsphinx: its VAD's 30 ms frames; Vosk: 20 ms pieces, since Kaldi checks for an
utterance's end once per call). The result then does not depend on how the audio was
chunked on the wire or batched by the servicer.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import Enum


class FrameBuffer:
    """Audio of any length in, whole frames of `frame_bytes` out; the rest waits for more."""

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self._rest = b""

    def push(self, pcm: bytes) -> list[bytes]:
        """Add `pcm`; the whole frames now available, in order."""
        data = self._rest + pcm if self._rest else pcm
        size = self.frame_bytes
        usable = len(data) - len(data) % size
        self._rest = data[usable:]
        return [data[offset:offset + size] for offset in range(0, usable, size)]

    def take_rest(self) -> bytes:
        """What is left, shorter than a frame (at the end of the stream)."""
        rest, self._rest = self._rest, b""
        return rest


class EventKind(Enum):
    PARTIAL = "partial"
    FINAL = "final"
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    # A pause inside an utterance; `text` is the hypothesis so far (see asr.proto).
    PAUSE = "pause"


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    confidence: float = 0.0


@dataclass(frozen=True)
class RecognitionEvent:
    """One thing an engine noticed; offsets are seconds from the start of the stream's audio."""

    kind: EventKind
    text: str = ""
    confidence: float = 0.0
    words: tuple[Word, ...] = ()
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass(frozen=True)
class StreamOptions:
    sample_rate_hz: int
    interim_results: bool
    phrases: tuple[str, ...] = ()
    show_words: bool = False
    language: str = ""
    call_id: str = ""


class EngineStream(abc.ABC):
    """A recognizer for one audio stream."""

    @abc.abstractmethod
    def accept(self, pcm: bytes) -> list[RecognitionEvent]:
        """Feed PCM16 little-endian mono audio; return what it produced, in order."""

    @abc.abstractmethod
    def finish(self) -> list[RecognitionEvent]:
        """The stream's audio ended: flush the last utterance (final + SPEECH_END if any)."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release per-stream resources; called once, after `finish` or on cancellation."""


class Engine(abc.ABC):
    """A loaded model that opens recognizers."""

    name: str = "engine"
    # True when decoding holds the GIL, so threads cannot run two streams at once and
    # ASR_WORKERS (unset) runs streams in worker processes instead.
    holds_gil: bool = False

    @abc.abstractmethod
    def describe(self) -> str:
        """Which model is in use, for the start-up log line."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model (blocking; called once in a thread at warm-up)."""

    @abc.abstractmethod
    def open_stream(self, options: StreamOptions) -> EngineStream:
        """A recognizer for one stream (blocking; called in a worker thread)."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the model at shutdown."""
