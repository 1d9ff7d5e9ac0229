"""pocketsphinx 5 engine: the US-English model bundled with the PyPI wheel.

Audio goes through a voice-activity endpointer (endpointing.py, on pocketsphinx's
WebRTC-derived VAD); the frames of an utterance go to a decoder, which gives
partial hypotheses while the utterance runs, a PAUSE with the hypothesis so far
after a short silence, and the final one when the endpointer decides it ended. The
model is 16 kHz, so 8 kHz input is resampled with soxr (streaming, no edge clicks).

Decoder options trade a little free-form accuracy for speed (measured on espeak-ng
and Piper speech, 16 kHz and telephone band): no second forward pass (`fwdflat`,
~0.3 s at each utterance's end), no lattice best-path search for the final
hypothesis (`bestpath`: 0.9-1.9 s per final with a phrase grammar, the same words),
and at most 5000 HMMs and 10 words per frame, which halve the CPU per second of
audio at about the same word error rate.

A phrase list becomes a JSGF grammar (any sequence of the phrases). Phrases with
words missing from the pronunciation dictionary are dropped with a warning; if
none is left the stream decodes free-form with the language model.

Decoders take ~0.3 s to create, so finished streams return theirs to a pool.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import numpy as np

from asr_service.engines.base import (
    Engine,
    EngineStream,
    EventKind,
    FrameBuffer,
    RecognitionEvent,
    StreamOptions,
    Word,
)
from asr_service.engines.endpointing import Edge, EndpointConfig, VadEndpointer

log = logging.getLogger(__name__)

MODEL_RATE = 16000
FRAMES_PER_SECOND = 100  # pocketsphinx's default -frate
# Silence that ends an utterance; 0.3 s splits sentences at commas.
ENDPOINT_WINDOW_S = 0.5
# Silence after which a PAUSE (with the hypothesis so far) is reported.
PAUSE_S = 0.2
# WebRTC VAD aggressiveness 0-3: 2 ends speech ~0.1 s after a word's last sound
# (0, the loosest, ~0.2 s), and still hears soft telephone speech.
VAD_MODE = 2
# soxr's better qualities hand out 8 -> 16 kHz audio in ~100 ms bursts, which delayed
# every endpoint by up to 100 ms; the quick (cubic) one returns each chunk at once, and
# the model hears no difference in telephone-band audio.
RESAMPLE_QUALITY = "QQ"
DECODER_OPTIONS: dict[str, Any] = {"fwdflat": False, "bestpath": False, "maxhmmpf": 5000,
                                   "maxwpf": 10}
# A partial hypothesis costs a search backtrace: one per 100 ms of audio is plenty.
PARTIAL_INTERVAL_S = 0.1
PHRASE_SEARCH = "phrases"
DEFAULT_SEARCH = "_default"
JSGF_TOKEN = re.compile(r"^[a-z0-9'.\-]+$")
ALTERNATE_SUFFIX = re.compile(r"\(\d+\)$")


class PocketsphinxEngine(Engine):
    name = "pocketsphinx"
    holds_gil = True  # the binding keeps the GIL while it decodes

    def __init__(self, pool_size: int = 16, endpoint_silence_s: float = ENDPOINT_WINDOW_S,
                 pause_s: float = PAUSE_S, vad_mode: int = VAD_MODE) -> None:
        self.pool_size = pool_size
        self.endpoint_silence_s = endpoint_silence_s
        self.pause_s = pause_s
        self.vad_mode = vad_mode
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.model_dir = ""
        try:
            import pocketsphinx

            self.model_dir = str(pocketsphinx.get_model_path())
        except ImportError:
            pass  # load() reports it

    def describe(self) -> str:
        return f"pocketsphinx bundled en-us model {self.model_dir}"

    def _new_decoder(self) -> Any:
        import pocketsphinx

        return pocketsphinx.Decoder(samprate=MODEL_RATE, loglevel="FATAL", **DECODER_OPTIONS)

    def load(self) -> None:
        decoder = self._new_decoder()  # proves the model loads, and is the first pooled one
        with self._lock:
            self._idle.append(decoder)

    def acquire(self) -> Any:
        with self._lock:
            decoder = self._idle.pop() if self._idle else None
        if decoder is None:
            return self._new_decoder()
        # A pooled decoder's live cepstral mean has adapted to the last caller's line: a
        # fresh feature front end (0.1 ms) makes every stream start as a new decoder does,
        # so one call's line never changes what another's recognizer hears.
        decoder.reinit_feat()
        return decoder

    def release(self, decoder: Any, added_phrase_search: bool) -> None:
        """Back to the pool, with the default (language model) search active again."""
        try:
            if added_phrase_search:
                decoder.activate_search(DEFAULT_SEARCH)
                decoder.remove_search(PHRASE_SEARCH)
        except (KeyError, RuntimeError):
            log.warning("a pocketsphinx decoder could not be reset; dropping it")
            return
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(decoder)

    def open_stream(self, options: StreamOptions) -> EngineStream:
        return PocketsphinxStream(self, options)

    def close(self) -> None:
        with self._lock:
            self._idle.clear()


def phrases_grammar(decoder: Any, phrases: tuple[str, ...]) -> str | None:
    """A JSGF grammar accepting any sequence of the known phrases, or None if none is known."""
    usable: list[str] = []
    dropped: list[str] = []
    for phrase in phrases:
        words = phrase.lower().split()
        if words and all(JSGF_TOKEN.match(w) and decoder.lookup_word(w) for w in words):
            usable.append(" ".join(words))
        elif words:
            dropped.append(phrase)
    if dropped:
        log.warning("phrases with words outside the pocketsphinx dictionary ignored: %s",
                    "; ".join(dropped[:10]))
    if not usable:
        return None
    alternatives = " | ".join(f"( {p} )" for p in dict.fromkeys(usable))
    return f"#JSGF V1.0;\ngrammar phrases;\npublic <phrases> = ( {alternatives} )+;\n"


class PocketsphinxStream(EngineStream):
    def __init__(self, engine: PocketsphinxEngine, options: StreamOptions) -> None:
        import pocketsphinx
        import soxr

        self.engine = engine
        self.options = options
        self._decoder: Any = engine.acquire()
        grammar = phrases_grammar(self._decoder, options.phrases)
        self._phrase_search = grammar is not None
        if grammar is not None:
            try:
                self._decoder.add_jsgf_string(PHRASE_SEARCH, grammar)
                self._decoder.activate_search(PHRASE_SEARCH)
            except (KeyError, RuntimeError, ValueError):
                # The decoder may hold a half-added search: do not pool it again.
                self._decoder = None
                raise
        vad = pocketsphinx.Vad(mode=engine.vad_mode, sample_rate=MODEL_RATE)
        self._endpointer = VadEndpointer(vad.is_speech, EndpointConfig(
            frame_s=vad.frame_length, pause_s=engine.pause_s,
            end_s=engine.endpoint_silence_s))
        self._resampler = (
            soxr.ResampleStream(options.sample_rate_hz, MODEL_RATE, 1, dtype="int16",
                                quality=RESAMPLE_QUALITY)
            if options.sample_rate_hz != MODEL_RATE else None
        )
        self._frames = FrameBuffer(vad.frame_bytes)
        self._fed_samples = 0  # at the model rate
        self._in_utterance = False
        self._last_partial = ""
        self._last_hypothesis = ""
        self._next_partial_at = 0  # samples at the model rate

    def _to_model_rate(self, pcm: bytes, last: bool = False) -> bytes:
        if self._resampler is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return self._resampler.resample_chunk(samples, last=last).astype("<i2").tobytes()

    def accept(self, pcm: bytes) -> list[RecognitionEvent]:
        resampled = self._to_model_rate(pcm)
        self._fed_samples += len(resampled) // 2
        events: list[RecognitionEvent] = []
        for frame in self._frames.push(resampled):
            self._process_frame(frame, events)
        if (self._in_utterance and self.options.interim_results
                and self._fed_samples >= self._next_partial_at):
            self._next_partial_at = self._fed_samples + int(PARTIAL_INTERVAL_S * MODEL_RATE)
            hyp = self._decoder.hyp()
            text = hyp.hypstr.strip() if hyp is not None else ""
            if text:
                self._last_hypothesis = text
            if text and text != self._last_partial:
                self._last_partial = text
                events.append(RecognitionEvent(EventKind.PARTIAL, text=text,
                                               start_s=self._endpointer.speech_start_s,
                                               end_s=self._fed_samples / MODEL_RATE))
        return events

    def _process_frame(self, frame: bytes, events: list[RecognitionEvent]) -> None:
        step = self._endpointer.process(frame)
        if Edge.START in step.edges:
            self._start_utterance(events)
        if step.decode:
            self._decoder.process_raw(b"".join(step.decode), False, False)
        if Edge.PAUSE in step.edges:
            self._pause(events)
        if Edge.END in step.edges:
            self._end_utterance(events)

    def _start_utterance(self, events: list[RecognitionEvent]) -> None:
        self._decoder.start_utt()
        self._in_utterance = True
        self._last_partial = ""
        self._last_hypothesis = ""
        start = self._endpointer.speech_start_s
        events.append(RecognitionEvent(EventKind.SPEECH_START, start_s=start, end_s=start))

    def _pause(self, events: list[RecognitionEvent]) -> None:
        hyp = self._decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if text:
            self._last_hypothesis = text
            at = self._fed_samples / MODEL_RATE
            events.append(RecognitionEvent(EventKind.PAUSE, text=text,
                                           start_s=self._endpointer.speech_start_s, end_s=at))

    def _end_utterance(self, events: list[RecognitionEvent]) -> None:
        self._decoder.end_utt()
        self._in_utterance = False
        start = self._endpointer.speech_start_s
        end = self._endpointer.speech_end_s
        hyp = self._decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if not text and self._phrase_search:
            # A grammar gives no final when the utterance does not reach its end state
            # ("can I talk to a person" against "... a real person"): the best partial
            # path heard so far is the answer then.
            text = self._last_hypothesis
        if text:
            words = self._words(start) if self.options.show_words else ()
            # pocketsphinx's posterior is not a usable confidence: report none (0).
            events.append(RecognitionEvent(EventKind.FINAL, text=text, words=words,
                                           start_s=start, end_s=end))
        events.append(RecognitionEvent(EventKind.SPEECH_END, start_s=end, end_s=end))

    def _words(self, utterance_start_s: float) -> tuple[Word, ...]:
        """The final's word timings; none when the decoder has no segmentation (a grammar
        that did not reach its end state: the final is then the last partial hypothesis)."""
        segments = self._decoder.seg()
        if segments is None:
            return ()
        words = []
        for seg in segments:
            if seg.word.startswith(("<", "[", "(")):
                continue  # silence, sentence marks, noise, a grammar's (NULL) transitions
            words.append(Word(
                ALTERNATE_SUFFIX.sub("", seg.word),
                utterance_start_s + seg.start_frame / FRAMES_PER_SECOND,
                utterance_start_s + (seg.end_frame + 1) / FRAMES_PER_SECOND,
            ))
        return tuple(words)

    def finish(self) -> list[RecognitionEvent]:
        events: list[RecognitionEvent] = []
        if self._resampler is not None:
            for frame in self._frames.push(self._to_model_rate(b"", last=True)):
                self._process_frame(frame, events)
        rest = self._frames.take_rest()
        if self._in_utterance:
            # What is left is shorter than a VAD frame; the decoder still hears it.
            if rest:
                self._decoder.process_raw(rest, False, False)
            if Edge.END in self._endpointer.flush().edges:
                self._end_utterance(events)
        return events

    def close(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            return
        if self._in_utterance:
            decoder.end_utt()
            self._in_utterance = False
        self.engine.release(decoder, self._phrase_search)
