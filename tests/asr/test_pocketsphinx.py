"""pocketsphinx (the embedded US-English default) on English speech from espeak-ng."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.asr.conftest import asr_service, requires_espeak
from voice_testkit.asr_client import final_text, finals, kinds, transcribe, transcribe_with_progress
from voice_testkit.speech import read_pcm16, speech_pcm, synthesize

pytestmark = [requires_espeak, pytest.mark.timeout(120)]

SENTENCE = "hello world, please call my office tomorrow"
# A little slower than espeak-ng's default: the small en-us model hears it far better.
WORDS_PER_MINUTE = 150


def english(text: str, directory: Path, rate: int, name: str = "speech") -> bytes:
    return speech_pcm(text, "en-us", directory, rate, name, words_per_minute=WORDS_PER_MINUTE)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("asr-pocketsphinx")
    with asr_service(logs / "asr.log", ASR_ENGINE="pocketsphinx") as (address, proc):
        yield address
    # Failures the client never sees (e.g. a recognizer that cannot be reset) are logged.
    assert '"level": "ERROR"' not in proc.log_path.read_text(errors="replace")


def words_of(text: str) -> set[str]:
    return set(text.lower().split())


def test_recognizes_key_words_at_16k(target: str, speech_dir: Path) -> None:
    responses = transcribe(target, english(SENTENCE, speech_dir, 16000), 16000)
    text = final_text(responses)
    assert {"hello", "world", "tomorrow"} <= words_of(text), text
    assert all(r.engine == "pocketsphinx" for r in responses)


def test_events_partials_then_final_then_speech_end(target: str, speech_dir: Path) -> None:
    responses = transcribe(target, english(SENTENCE, speech_dir, 16000), 16000)
    order = kinds(responses)
    first_final = order.index("final")
    assert order[0] == "SPEECH_START"
    assert "partial" in order[:first_final]
    assert "SPEECH_END" in order[first_final:]
    final = finals(responses)[0]
    assert 0 < final.audio_start_s < final.audio_end_s
    assert final.processing_ms > 0


def test_8k_input_is_resampled_and_recognized(target: str, speech_dir: Path) -> None:
    # The bundled model is wideband; telephone-band audio is recognised less well, so only
    # a restricted vocabulary is checked word for word here.
    pcm = english(SENTENCE, speech_dir, 8000)
    assert final_text(transcribe(target, pcm, 8000))
    phrases = ["hello world", "please", "call my office", "tomorrow", "goodbye", "table"]
    text = final_text(transcribe(target, pcm, 8000, phrases=phrases))
    assert "hello world" in text, text


def test_phrase_list_restricts_the_vocabulary(target: str, speech_dir: Path) -> None:
    phrases = ["hello world", "please", "call my office", "tomorrow", "goodbye", "table"]
    pcm = english(SENTENCE, speech_dir, 16000)
    text = final_text(transcribe(target, pcm, 16000, phrases=phrases))
    allowed = {w for p in phrases for w in p.split()}
    assert text
    assert words_of(text) <= allowed, text
    assert {"hello", "world", "office", "tomorrow"} <= words_of(text), text


def test_end_of_stream_flushes_the_final(target: str, speech_dir: Path) -> None:
    # No trailing silence: the endpointer never sees the end, the client's half-close must.
    wav = synthesize("hello world", "en-us", speech_dir, "no-tail", WORDS_PER_MINUTE)
    pcm = read_pcm16(wav, 16000, tail_silence_s=0.0)
    responses = transcribe(target, pcm, 16000, interim=False)
    assert "world" in final_text(responses)
    assert kinds(responses)[-1] == "SPEECH_END"
    assert "partial" not in kinds(responses)  # interim_results off


def test_eight_concurrent_streams_complete(target: str, speech_dir: Path) -> None:
    sentences = [SENTENCE, "i would like to book a table for two people"] * 4
    audio = [english(s, speech_dir, 16000, f"s{i}") for i, s in enumerate(sentences)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda pcm: transcribe(target, pcm, 16000, speed=1.0), audio))
    assert len(results) == 8
    for responses in results:
        assert final_text(responses)


def test_speech_start_comes_while_the_caller_is_still_talking(target: str,
                                                              speech_dir: Path) -> None:
    # Barge-in needs SPEECH_START during the utterance, not after it: stream at real time
    # and check how much audio had been sent when it arrived.
    pcm = english(SENTENCE, speech_dir, 16000, "barge")
    progress = transcribe_with_progress(target, pcm, 16000, speed=1.0)
    starts = [(r, sent) for r, sent in progress if kinds([r]) == ["SPEECH_START"]]
    first_final_end = finals([r for r, _ in progress])[0].audio_end_s
    assert starts, kinds([r for r, _ in progress])
    response, sent_s = starts[0]
    assert response.speech.audio_offset_s < first_final_end
    # It comes out before any transcript of the utterance: the service emits it while the
    # caller talks. When it reached the client (sent_s) depends on the machine's load, so
    # that is measured by the ASR benchmark, not asserted here.
    order = [kinds([r])[0] for r, _ in progress]
    assert order.index("SPEECH_START") < order.index("final"), order
    assert sent_s > 0



def test_stream_ending_on_a_frame_boundary_flushes_cleanly(target: str, speech_dir: Path) -> None:
    # Regression: 16 kHz speech (no resampler) that stops mid-utterance exactly on an
    # endpointer frame boundary left an empty remainder, and pocketsphinx's end_stream()
    # raised IndexError on it, which reached the client as UNKNOWN.
    wav = synthesize("hello world", "en-us", speech_dir, "boundary", WORDS_PER_MINUTE)
    pcm = read_pcm16(wav, 16000, tail_silence_s=0.0)
    cut = 16000 * 2 * 30 // 1000  # 30 ms, the endpointer's frame
    pcm = pcm[: len(pcm) * 3 // 4 // cut * cut]  # stop in the middle of the speech
    responses = transcribe(target, pcm, 16000, interim=False)
    assert kinds(responses)[-1] == "SPEECH_END"


def test_pause_carries_the_hypothesis_before_the_final(target: str, speech_dir: Path) -> None:
    # With a phrase list, as the core streams: the PAUSE (0.2 s of silence) comes before the
    # final (0.5 s), and its text is what the recognizer had heard by then.
    phrases = ["hello world", "please", "call my office", "tomorrow", "goodbye", "table"]
    pcm = english("please call my office", speech_dir, 8000, "pause")
    responses = transcribe(target, pcm, 8000, phrases=phrases)
    order = kinds(responses)
    assert "PAUSE" in order, order
    assert order.index("PAUSE") < order.index("final"), order
    pause = next(r.speech for r in responses if kinds([r]) == ["PAUSE"])
    final = finals(responses)[0]
    assert "office" in pause.text.split(), pause.text
    assert set(pause.text.split()) <= {w for p in phrases for w in p.split()}
    # The pause is reported at the point of the audio where it was noticed.
    assert final.audio_start_s < pause.audio_offset_s
