"""pocketsphinx with the dev stack's settings (VOSK_SHOW_WORDS=1, ASR_ENABLE_DEBUG=1) on
speech that is not one of the demo's phrases, with the demo's phrase list as the core sends it.

Regression: the grammar did not reach its end state, the final fell back to the last
partial hypothesis, and `Decoder.seg()` returned None there: the word timings raised
TypeError, the stream died (UNKNOWN) and the caller's turn was lost.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.asr.conftest import asr_service, requires_espeak
from voice_testkit.asr_client import final_text, finals, kinds, transcribe
from voice_testkit.procs import ROOT
from voice_testkit.speech import speech_pcm

pytestmark = [requires_espeak, pytest.mark.timeout(180)]

# Off the demo's script, each a phrasing the phrase list does not hold.
OFF_SCRIPT = [
    "can you tell me my balance please",
    "what's the weather like today",
    "I would like to open a new savings account",
]


def demo_phrases() -> list[str]:
    bot = tomllib.loads((ROOT / "core/bot.toml").read_text())
    return list(bot["bot"]["asr_phrases"])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    logs = tmp_path_factory.mktemp("asr-show-words")
    # The dev stack's settings, spelled out: the fixture's defaults, but this test is
    # about them.
    with asr_service(logs / "asr.log", ASR_ENGINE="pocketsphinx", VOSK_SHOW_WORDS="1",
                     ASR_ENABLE_DEBUG="1", DEVELOPMENT_MODE="1", LOG_LEVEL="DEBUG",
                     ) as (address, proc):
        yield address, proc.log_path


@pytest.mark.parametrize("text", OFF_SCRIPT)
def test_off_script_speech_with_word_timings_ends_cleanly(
        service: tuple[str, Path], speech_dir: Path, text: str) -> None:
    target, log_path = service
    pcm = speech_pcm(text, "en-us", speech_dir, 8000, text.split(maxsplit=1)[0].strip("'"),
                     words_per_minute=150)
    # A stream that dies raises grpc.RpcError here (UNKNOWN before the fix).
    responses = transcribe(target, pcm, 8000, phrases=demo_phrases())
    order = kinds(responses)
    assert order[0] == "SPEECH_START", order
    assert order[-1] == "SPEECH_END", order
    assert final_text(responses), order
    for final in finals(responses):
        for word in final.words:
            assert final.audio_start_s <= word.start_s < word.end_s, word
    log = log_path.read_text(errors="replace")
    assert "TypeError" not in log
    assert "Traceback" not in log


def test_word_timings_come_with_a_final_that_has_them(
        service: tuple[str, Path], speech_dir: Path) -> None:
    target, _ = service
    pcm = speech_pcm("what is my balance", "en-us", speech_dir, 8000, "balance",
                     words_per_minute=150)
    responses = transcribe(target, pcm, 8000, phrases=demo_phrases())
    words = [w.word for f in finals(responses) for w in f.words]
    assert "balance" in words, (final_text(responses), words)
