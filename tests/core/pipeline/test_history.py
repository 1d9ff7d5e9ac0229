"""The dialogue sent to the LLM always fits the LLM contract's limits (llm.proto header)."""

from __future__ import annotations

import pytest

from llm_service.validation import validate_messages
from opensips_ai_core.grpc_clients.llm import ROLES
from opensips_ai_core.pipeline.history import (
    CLIPPED,
    MAX_CONTENT_CHARS,
    MAX_MESSAGES,
    MAX_TOTAL_CHARS,
    TRUNCATED,
    History,
    fit,
)
from voiceai.llm.v1 import llm_pb2


def accepted_by_the_llm_service(messages: list[tuple[str, str]]) -> bool:
    request = llm_pb2.GenerateRequest(messages=[
        llm_pb2.ChatMessage(role=ROLES[role], content=content) for role, content in messages])
    validate_messages(request)  # raises InvalidRequestError as the service would refuse
    return True


def dialogue(turns: int, chars: int = 20) -> History:
    history = History("You are a test bot.", max_turns=100)
    for n in range(turns):
        history.add_user(f"{n:04d}" + "u" * (chars - 4))
        history.add_assistant(f"{n:04d}" + "a" * (chars - 4))
    history.add_user("the newest question")
    return history


def test_a_short_dialogue_is_sent_as_it_is() -> None:
    history = dialogue(3)
    assert history.for_llm() == [("system", "You are a test bot."), *history.entries]


@pytest.mark.parametrize(("turns", "chars"), [(100, 20), (40, 1000), (10, 9000)])
def test_a_long_dialogue_keeps_the_system_prompt_and_the_newest(turns: int, chars: int) -> None:
    history = dialogue(turns, chars)
    sent = history.for_llm()
    assert accepted_by_the_llm_service(sent)
    assert len(sent) <= MAX_MESSAGES
    assert sum(len(content) for _, content in sent) <= MAX_TOTAL_CHARS
    assert sent[0] == ("system", "You are a test bot.")
    assert sent[-1] == ("user", "the newest question")
    # What is kept is the most recent part, in order.
    kept = sent[1:]
    assert [entry[1][:4] for entry in kept] == [
        entry[1][:4] for entry in history.entries[-len(kept):]]


def test_an_over_long_message_is_cut_to_the_limit() -> None:
    sent = fit([("system", "s" * 5000), ("user", "u" * 4100)])
    assert accepted_by_the_llm_service(sent)
    assert [len(content) for _, content in sent] == [MAX_CONTENT_CHARS, MAX_CONTENT_CHARS]
    assert sent[1][1].endswith(CLIPPED)


def test_a_hypothesis_is_asked_about_without_entering_the_history() -> None:
    history = dialogue(1)
    sent = history.for_llm(extra_user="and my card")
    assert sent[-1] == ("user", "and my card")
    assert history.entries[-1] == ("user", "the newest question")


def test_a_reply_cut_off_is_marked_once() -> None:
    history = History("p", max_turns=10)
    index = history.add_assistant("Your balance is ten pounds.")
    history.mark_cut_off(index)
    history.mark_cut_off(index)
    assert history.entries == [("assistant", "Your balance is ten pounds." + TRUNCATED)]
