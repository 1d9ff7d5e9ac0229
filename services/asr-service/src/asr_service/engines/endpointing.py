"""Where utterances start, pause and end, from per-frame voice-activity decisions.

pocketsphinx's own `Endpointer` uses one window for both edges (0.5 s of speech to
start, 0.5 s of silence to end) and its loose VAD mode keeps calling ~0.2 s of a
word's fade-out speech, so an utterance ended ~0.7 s after the caller stopped. This
one starts on a short window (0.12 s: a "hi" is 0.25 s long), ends on `end_s` of silence
with a stricter VAD mode, and reports a pause (`pause_s` of silence) before that, so
a client can prepare its answer while the end is still being decided.

It only decides; the engine feeds the frames it is given to its decoder.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class Edge(Enum):
    START = "start"
    PAUSE = "pause"
    END = "end"


@dataclass(frozen=True)
class EndpointConfig:
    frame_s: float
    # Speech starts when START_RATIO of the last `start_s` of frames are speech.
    start_s: float = 0.12
    start_ratio: float = 0.6
    # Audio before the start handed to the decoder, so a word's onset is not cut. More
    # leading silence skews pocketsphinx's live cepstral mean: its first words suffer.
    preroll_s: float = 0.1
    pause_s: float = 0.2
    end_s: float = 0.5
    # Silence ends an utterance when END_RATIO of the last `end_s` of frames are silent
    # and the newest frame is (a click inside the window does not keep it open).
    end_ratio: float = 0.9

    def frames(self, seconds: float) -> int:
        return max(1, round(seconds / self.frame_s))


@dataclass
class Step:
    """What one frame did: the edges it crossed and the frames to decode, in order."""

    edges: list[Edge] = field(default_factory=list)
    decode: list[bytes] = field(default_factory=list)


class VadEndpointer:
    def __init__(self, is_speech: Callable[[bytes], bool], config: EndpointConfig) -> None:
        self.is_speech = is_speech
        self.config = config
        self._start_window: deque[bool] = deque(maxlen=config.frames(config.start_s))
        self._preroll: deque[bytes] = deque(
            maxlen=max(config.frames(config.preroll_s), config.frames(config.start_s)))
        self._end_window: deque[bool] = deque(maxlen=config.frames(config.end_s))
        self._pause_frames = config.frames(config.pause_s)
        self._silent_run = 0
        self._paused = False
        self.frames_seen = 0
        self.in_speech = False
        self.speech_start_s = 0.0
        self.speech_end_s = 0.0

    def process(self, frame: bytes) -> Step:
        step = Step()
        speech = self.is_speech(frame)
        self.frames_seen += 1
        now_s = self.frames_seen * self.config.frame_s
        if not self.in_speech:
            self._start_window.append(speech)
            self._preroll.append(frame)
            window = self._start_window
            if (len(window) == window.maxlen
                    and sum(window) >= self.config.start_ratio * len(window)):
                self._begin(now_s - len(window) * self.config.frame_s, step)
            return step
        step.decode.append(frame)
        self._end_window.append(speech)
        self._silent_run = 0 if speech else self._silent_run + 1
        if speech:
            self._paused = False
        elif self._silent_run >= self._pause_frames and not self._paused:
            self._paused = True
            step.edges.append(Edge.PAUSE)
        window = self._end_window
        silent = len(window) - sum(window)
        if (not speech and len(window) == window.maxlen
                and silent >= self.config.end_ratio * len(window)):
            self._end(now_s - self._silent_run * self.config.frame_s, step)
        return step

    def flush(self) -> Step:
        """The audio ended: close an utterance in progress."""
        step = Step()
        if self.in_speech:
            now_s = self.frames_seen * self.config.frame_s
            self._end(now_s - self._silent_run * self.config.frame_s, step)
        return step

    def _begin(self, start_s: float, step: Step) -> None:
        self.in_speech = True
        self.speech_start_s = max(0.0, start_s)
        step.edges.append(Edge.START)
        step.decode.extend(self._preroll)
        self._preroll.clear()
        self._start_window.clear()
        self._end_window.clear()
        self._silent_run = 0
        self._paused = False

    def _end(self, end_s: float, step: Step) -> None:
        self.in_speech = False
        self.speech_end_s = max(self.speech_start_s, end_s)
        step.edges.append(Edge.END)
