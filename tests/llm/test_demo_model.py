"""The embedded demo model's build, and incremental decoding with its real tokenizer."""

from __future__ import annotations

import re
import subprocess

import pytest

from llm_service.demo_model import weights_hash
from llm_service.detokenize import IncrementalDetokenizer, StopStringFilter
from tests.llm.conftest import load_dialogue
from voice_testkit.procs import ROOT, base_env, python_module


def test_dialogue_file_covers_the_demo_intents():
    intents = {item["name"]: item for item in load_dialogue()}
    assert set(intents) >= {"greeting", "balance", "lost_card", "opening_hours",
                            "human_agent", "goodbye"}
    assert "Goodbye" in intents["goodbye"]["answer"]
    for item in intents.values():
        assert len(item["questions"]) >= 5
        # ASR output: lowercase and unpunctuated phrasings are part of the training data.
        assert any(re.fullmatch(r"[a-z ]+", q) for q in item["questions"]), item["name"]


def test_build_is_deterministic_and_reused(demo_build, tmp_path):
    # A second, independent build into another directory gives the same weights.
    second = tmp_path / "second"
    result = subprocess.run(
        python_module("llm_service.demo_model", "build", "--out", str(second)),
        env=base_env(VOICE_CACHE_DIR=str(tmp_path / "unused")), capture_output=True, text=True,
        timeout=240, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert weights_hash(second) == weights_hash(demo_build.model_dir)
    assert (second / "tokenizer.json").read_bytes() == (
        demo_build.model_dir / "tokenizer.json").read_bytes()
    # Building again where it exists is a no-op (no training line in the log).
    again = subprocess.run(
        python_module("llm_service.demo_model", "build"),
        env=base_env(VOICE_CACHE_DIR=str(demo_build.cache_dir)), capture_output=True, text=True,
        timeout=120, cwd=ROOT,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(demo_build.model_dir)
    assert "trained" not in again.stderr and "trained" in demo_build.build_log


@pytest.fixture(scope="module")
def demo_tokenizer(demo_build):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_build.model_dir, local_files_only=True)


@pytest.mark.parametrize("text", [
    "Café ☕ 日本語 — naïve",  # multi-byte characters split across byte-level tokens
    "Your current account balance is 1,250 dollars and 40 cents.",
])
def test_incremental_decoding_is_exact_and_never_shows_half_characters(demo_tokenizer, text):
    ids = demo_tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > 3
    detok = IncrementalDetokenizer(demo_tokenizer)
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)
    assert sum(1 for p in pieces if p) > 1  # it streams, not all at the end


def test_prompt_uses_the_chat_template_else_a_plain_dialogue(demo_build, demo_tokenizer):
    from llm_service.engine import PLAIN_STOP, LanguageModel, Message
    from llm_service.settings import LlmSettings

    lm = LanguageModel(LlmSettings(_env_file=None))
    lm.tokenizer = demo_tokenizer
    messages = [Message("system", "Be brief."), Message("user", "hi"),
                Message("assistant", "Hello."), Message("user", "What's my balance?")]
    # The demo template keeps the caller's last turn, normalised like ASR output.
    templated = lm.render_prompt(messages)
    assert templated.text == "<|user|>whats my balance<|assistant|>"
    assert demo_tokenizer.decode(templated.ids) == templated.text
    assert templated.stop == ()
    # A tokenizer without a chat template gets the plain format, which stops at "User:".
    from transformers import AutoTokenizer

    plain_tokenizer = AutoTokenizer.from_pretrained(demo_build.model_dir, local_files_only=True)
    plain_tokenizer.chat_template = None
    lm.tokenizer = plain_tokenizer
    plain = lm.render_prompt(messages)
    assert plain.text == ("System: Be brief.\nUser: hi\nAssistant: Hello.\n"
                          "User: What's my balance?\nAssistant:")
    assert plain_tokenizer.decode(plain.ids) == plain.text
    assert plain.stop == (PLAIN_STOP,)


def test_stop_strings_cut_text_even_across_pieces():
    stops = StopStringFilter(["\nUser:", "END"])
    out = [stops.feed(p) for p in ["Hello", " there\nU", "ser: more", " text"]]
    assert "".join(out) == "Hello there"
    assert stops.stopped
    # A held-back partial match that completes is cut; nothing after it comes out.
    cut = StopStringFilter(["END"])
    assert "".join([cut.feed("the EN"), cut.feed("D-less"), cut.feed(" more"), cut.flush()]) \
        == "the "
    # A partial match that turns out not to be a stop string is released.
    free = StopStringFilter(["END"])
    text = "".join([free.feed("weekEN"), free.feed("d ok E"), free.flush()])
    assert text == "weekENd ok E"
    assert not free.stopped
