"""The LLM service with the demo model, as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import grpc
import pytest

from tests.llm.conftest import SERVICE, Role, collect, load_dialogue, request, start_server
from voice_testkit.procs import health_status
from voiceai.llm.v1 import llm_pb2


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_build):
    yield from start_server(tmp_path_factory, demo_build, "service")


QUESTIONS = [(item["answer"], q) for item in load_dialogue() for q in item["questions"]]


@pytest.mark.parametrize("history", [True, False], ids=["with-system-and-history", "alone"])
def test_every_demo_question_gets_its_trained_answer(server, history):
    wrong = []
    for answer, question in QUESTIONS:
        deltas, done = collect(server.stub, request(question, history=history))
        if "".join(deltas) != answer or done.finish_reason != "stop":
            wrong.append((question, "".join(deltas), done.finish_reason))
    assert not wrong


def test_reply_streams_as_several_deltas_with_sane_timings(server):
    answer = next(i["answer"] for i in load_dialogue() if i["name"] == "lost_card")
    deltas, done = collect(server.stub, request("i lost my card", call_id="timing"))
    assert "".join(deltas) == answer
    assert len(deltas) >= 5 and all(deltas)
    assert done.finish_reason == "stop"
    assert done.prompt_tokens > 0
    assert len(deltas) <= done.completion_tokens <= 64
    assert 0 < done.time_to_first_token_ms <= done.total_ms
    assert 0 <= done.queue_ms <= done.time_to_first_token_ms
    assert done.tokens_per_second > 0


def test_length_limit_stop_strings_and_seeded_sampling(server):
    deltas, done = collect(server.stub, request("what is my balance", max_new_tokens=3))
    assert done.finish_reason == "length" and done.completion_tokens == 3
    assert "Your current account balance".startswith("".join(deltas))

    deltas, done = collect(server.stub, request("what is my balance", stop=["balance", "zz"]))
    assert "".join(deltas) == "Your current account "
    assert done.finish_reason == "stop"

    sampled = request("where can i find the nearest branch", temperature=1.5, top_p=0.9,
                      seed=42, max_new_tokens=20)
    first = "".join(collect(server.stub, sampled)[0])
    second = "".join(collect(server.stub, sampled)[0])
    assert first == second and first  # same seed, same text


def _long_text(chars: int) -> str:
    return ("word " * (chars // 5 + 1))[:chars]


BAD_REQUESTS = {
    "no messages": (llm_pb2.GenerateRequest(), "empty"),
    "too many messages": (llm_pb2.GenerateRequest(messages=[
        Role(role=Role.USER, content="hi")] * 65), "at most 64"),
    "oversized content": (request(_long_text(4001), history=False), "at most 4000"),
    "oversized in all": (llm_pb2.GenerateRequest(messages=[
        Role(role=Role.USER, content=_long_text(3900))] * 5), "at most 16000"),
    "last not from user": (llm_pb2.GenerateRequest(messages=[
        Role(role=Role.USER, content="hi"), Role(role=Role.ASSISTANT, content="hello")]),
        "last message must be from the user"),
    "role unspecified": (llm_pb2.GenerateRequest(messages=[Role(content="hi")]),
                         "use SYSTEM, USER, ASSISTANT or TOOL"),
    "empty user turn": (request("   ", history=False), "empty"),
    "max_new_tokens too big": (request("hi", max_new_tokens=513), "to 512"),
    "max_new_tokens negative": (request("hi", max_new_tokens=-1), "to 512"),
    "temperature too high": (request("hi", temperature=2.5), "temperature"),
    "temperature negative": (request("hi", temperature=-0.1), "temperature"),
    "temperature nan": (request("hi", temperature=float("nan")), "temperature"),
    "top_p above one": (request("hi", top_p=1.5), "top_p"),
    "too many stop strings": (request("hi", stop=["x"] * 17), "at most 16"),
    "empty stop string": (request("hi", stop=[""]), "params.stop[0]"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_refused_and_the_service_stays_up(server, name):
    bad, expected = BAD_REQUESTS[name]
    with pytest.raises(grpc.RpcError) as err:
        collect(server.stub, bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in err.value.details()
    assert health_status(server.target, SERVICE) == "SERVING"
    deltas, _done = collect(server.stub, request("goodbye"))
    assert "Goodbye" in "".join(deltas)
