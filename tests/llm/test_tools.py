"""Tool calls through the LLM service: the contract's typed `tool_call` event, its limits.

A real service subprocess with the demo model (its tool step is the fixed rule in
llm_service/demo_tools.py); the streaming parser of `<tool_call>` text is tested on
its own below, as a model with a tool-aware template would produce it.
"""

from __future__ import annotations

import json

import grpc
import pytest

from llm_service.demo_tools import ASK_ACCOUNT, BLOCKED, SORRY
from llm_service.tool_calls import ToolCallExtractor
from opensips_ai_core.config import BotConfig, ToolConfig
from opensips_ai_core.grpc_clients.llm import LlmClient
from tests.core.pipeline.harness import new_call, until
from tests.llm.conftest import SERVICE, Role, start_server
from voice_testkit.bank import mock_bank
from voice_testkit.procs import health_status
from voiceai.llm.v1 import llm_pb2

ACCOUNT_SCHEMA = json.dumps({"type": "object", "properties": {"account": {"type": "string"}},
                             "required": ["account"]})
BANK_TOOLS = [
    llm_pb2.Tool(name="get_balance", description="The balance of an account.",
                 parameters_json=ACCOUNT_SCHEMA),
    llm_pb2.Tool(name="block_card", description="Block the card of an account.",
                 parameters_json=ACCOUNT_SCHEMA),
]
SYSTEM = Role(role=Role.SYSTEM, content="You are the phone assistant of Example Bank.")


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_build):
    yield from start_server(tmp_path_factory, demo_build, "tools")


def generate(stub, messages, tools=BANK_TOOLS):
    """(text, tool calls, done) of one Generate stream."""
    text, calls, done = "", [], None
    for response in stub.Generate(llm_pb2.GenerateRequest(messages=messages, tools=tools),
                                  timeout=60):
        assert done is None, "nothing may follow `done`"
        kind = response.WhichOneof("event")
        if kind == "delta":
            text += response.delta
        elif kind == "tool_call":
            calls.append(response.tool_call)
        else:
            done = response.done
    assert done is not None
    return text, calls, done


def user(text):
    return Role(role=Role.USER, content=text)


def assistant(text, calls=()):
    return Role(role=Role.ASSISTANT, content=text, tool_calls=list(calls))


def test_balance_asks_for_the_account_then_calls_the_tool_then_speaks_the_result(server):
    conversation = [SYSTEM, user("what is my balance")]
    text, calls, done = generate(server.stub, conversation)
    assert (text, calls, done.finish_reason) == (ASK_ACCOUNT["get_balance"], [], "stop")

    conversation += [assistant(text), user("12345678#")]  # keypad digits, as the core sends
    text, calls, done = generate(server.stub, conversation)
    assert text == "" and done.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [
        ("get_balance", {"account": "12345678"})]
    assert calls[0].id.startswith("call_")

    conversation += [assistant("", calls),
                     Role(role=Role.TOOL, tool_call_id=calls[0].id,
                          content=json.dumps({"account": "12345678", "balance": 1250.4,
                                              "currency": "dollars"}))]
    text, calls, done = generate(server.stub, conversation)
    assert (text, calls, done.finish_reason) == ("Your balance is 1,250.40 dollars.", [], "stop")


def test_spoken_account_number_and_block_card(server):
    conversation = [SYSTEM, user("i lost my card")]
    text, calls, _ = generate(server.stub, conversation)
    assert text == ASK_ACCOUNT["block_card"] and not calls
    conversation += [assistant(text), user("one two three four five six")]
    text, calls, _ = generate(server.stub, conversation)
    assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [
        ("block_card", {"account": "123456"})]
    conversation += [assistant("", calls),
                     Role(role=Role.TOOL, tool_call_id=calls[0].id, content='{"blocked": true}')]
    assert generate(server.stub, conversation)[0] == BLOCKED


def test_a_failed_tool_result_is_spoken_as_sorry_and_other_intents_are_untouched(server):
    call = llm_pb2.ToolCall(id="call_x", name="get_balance", arguments_json='{"account":"1234"}')
    failed = [SYSTEM, user("what is my balance 1234"), assistant("", [call]),
              Role(role=Role.TOOL, tool_call_id="call_x", content='{"error": "timeout"}')]
    assert generate(server.stub, failed)[0] == SORRY
    text, calls, done = generate(server.stub, [SYSTEM, user("goodbye")])
    assert "Goodbye" in text and not calls and done.finish_reason == "stop"
    # Without the tools offered the demo gives its trained answer, as before.
    text, calls, _ = generate(server.stub, [SYSTEM, user("what is my balance")], tools=[])
    assert text.startswith("Your current account balance") and not calls


BAD_TOOL_REQUESTS = {
    "too many tools": ([llm_pb2.Tool(name=f"t{i}") for i in range(17)], [user("hi")],
                       "at most 16"),
    "bad name": ([llm_pb2.Tool(name="get balance")], [user("hi")], "tools[0].name"),
    "duplicate name": ([llm_pb2.Tool(name="a"), llm_pb2.Tool(name="a")], [user("hi")],
                       "offered twice"),
    "schema not JSON": ([llm_pb2.Tool(name="a", parameters_json="{type: object")],
                        [user("hi")], "not valid JSON"),
    "schema not an object": ([llm_pb2.Tool(name="a", parameters_json="[]")], [user("hi")],
                             "must be a JSON object"),
    "schema too big": ([llm_pb2.Tool(name="a", parameters_json='{"d": "' + "x" * 4000 + '"}')],
                       [user("hi")], "at most 4000"),
    "description too long": ([llm_pb2.Tool(name="a", description="x" * 1001)], [user("hi")],
                             "at most 1000"),
    "tool message without id": (BANK_TOOLS, [user("hi"), Role(role=Role.TOOL, content="{}")],
                                "without tool_call_id"),
    "tool call arguments not JSON": (BANK_TOOLS, [
        user("hi"), assistant("", [llm_pb2.ToolCall(id="c", name="a", arguments_json="{")]),
        Role(role=Role.TOOL, tool_call_id="c", content="{}")], "not valid JSON"),
    "tool calls on a user message": (BANK_TOOLS, [Role(role=Role.USER, content="hi", tool_calls=[
        llm_pb2.ToolCall(id="c", name="a")])], "ASSISTANT only"),
}


@pytest.mark.parametrize("name", list(BAD_TOOL_REQUESTS))
def test_bad_tools_are_refused_and_the_service_stays_up(server, name):
    tools, messages, expected = BAD_TOOL_REQUESTS[name]
    with pytest.raises(grpc.RpcError) as err:
        generate(server.stub, messages, tools)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in err.value.details()
    assert health_status(server.target, SERVICE) == "SERVING"


def test_streamed_tool_call_text_becomes_calls_and_the_rest_stays_text():
    extractor = ToolCallExtractor(["get_balance"])
    pieces = ["One moment. <tool", "_call>{\"name\": \"get_balance\", ",
              "\"arguments\": {\"account\": \"42\"}}</tool_", "call> <tool_call>{\"name\": ",
              "\"unknown\", \"arguments\": {}}</tool_call><tool_call>not json</tool_call>",
              " Done <to"]
    spoken, calls = "", []
    for piece in pieces:
        text, found = extractor.feed(piece)
        spoken += text
        calls += found
    spoken += extractor.flush()
    assert spoken == "One moment.   Done <to"
    assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [
        ("get_balance", {"account": "42"})]


def test_arguments_as_a_json_string_and_an_unclosed_tag():
    extractor = ToolCallExtractor(["a"])
    text, calls = extractor.feed('<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}'
                                 '</tool_call><tool_call>{"name": "a"')
    assert text == "" and [json.loads(c.arguments_json) for c in calls] == [{"x": 1}]
    assert extractor.flush() == ""


# ---------------------------------------------------------------- core + demo LLM + bank
@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    with mock_bank(tmp_path_factory.mktemp("mock-bank")) as base:
        yield base


def bank_bot(base: str) -> BotConfig:
    schema = json.loads(ACCOUNT_SCHEMA)
    return BotConfig(greeting="Hello.", tools=(
        ToolConfig(name="get_balance", description="The balance of an account.",
                   parameters=schema, url=f"{base}/get_balance"),
        ToolConfig(name="block_card", description="Block the card of an account.",
                   parameters=schema, url=f"{base}/block_card"),
    ))


async def test_the_core_asks_for_the_account_calls_the_bank_and_speaks_the_balance(
        server, bank):
    """The core's conversation (fake media and TTS) with the real LLM client and service
    (demo model) and the real mock bank over HTTP: the caller keys the account in."""
    bot = bank_bot(bank)
    h = new_call(bot, llm=LlmClient(server.target), autoplay=True)  # type: ignore[arg-type]
    try:
        await h.greeted()
        await h.reply_to("what is my balance")
        # The question's first clause is a TTS chunk of its own (pipeline.sentences.ReplyChunker).
        assert h.tts.texts[-2:] == ["Please tell me your account number,",
                                    "or key it in and press hash."]
        assert " ".join(h.tts.texts[-2:]) == ASK_ACCOUNT["get_balance"]
        for digit in "12345678#":
            h.call.on_dtmf(digit)
        await until(lambda: h.call.turn.user_text == "[DTMF 12345678#]", "the keyed account")
        await h.call.turn.wait_for_work()
        assert h.tts.texts[-2:] == [bot.tool_filler, "Your balance is 1,250.40 dollars."]
        assert h.call.turn.tool_calls == [("get_balance", '{"account":"12345678"}', "ok")]

        await h.reply_to("i lost my card")
        await h.reply_to("nine nine nine nine")  # spoken; no such account: the bank says 404
        assert h.tts.texts[-2:] == [bot.tool_filler, bot.tool_failed]
        await h.reply_to("goodbye")
        assert "Goodbye" in h.tts.texts[-1]
    finally:
        await h.call.close("test over")
        await h.llm.close()


# A tool-aware chat template in the Hermes/Qwen style (tools listed in the system turn,
# calls and results as tagged turns), standing for a hub model's.
HERMES_TEMPLATE = (
    "{%- if tools %}<|system|>Tools:{% for t in tools %} {{ t | tojson }}{% endfor %}\n"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}<|user|><tool_response>{{ m.content }}</tool_response>\n"
    "{%- elif m.tool_calls is defined %}<|assistant|>{% for c in m.tool_calls %}"
    "<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}\n"
    "{%- else %}<|{{ m.role }}|>{{ m.content }}\n{%- endif %}"
    "{%- endfor %}<|assistant|>"
)


def test_tools_and_tool_turns_reach_a_tool_aware_chat_template(demo_build):
    from transformers import AutoTokenizer

    from llm_service.engine import LanguageModel, Message, ToolCallRecord, ToolSpec
    from llm_service.settings import LlmSettings

    model = LanguageModel(LlmSettings())
    model.tokenizer = AutoTokenizer.from_pretrained(demo_build.model_dir)
    model.tokenizer.chat_template = HERMES_TEMPLATE
    call = ToolCallRecord("call_1", "get_balance", {"account": "1234"})
    prompt = model.render_prompt(
        [Message("user", "my balance"), Message("assistant", "", tool_calls=(call,)),
         Message("tool", '{"balance": 3}', tool_call_id="call_1")],
        (ToolSpec("get_balance", "The balance.", json.loads(ACCOUNT_SCHEMA)),))
    assert '"name": "get_balance"' in prompt.text and '"required": ["account"]' in prompt.text
    assert '<tool_call>{"name": "get_balance", "arguments": {"account": "1234"}}</tool_call>' \
        in prompt.text
    assert '<tool_response>{"balance": 3}</tool_response>' in prompt.text
    assert prompt.ids and prompt.text.endswith("<|assistant|>")


def test_the_demo_model_is_not_routed_by_meaning(server):
    """Tool routing (tool_router.py) is for templates that ignore tools; the demo keeps
    its own rule: "talk to a person" with transfer offered is its trained transfer line,
    which the core's `transfer_phrases` act on, and no tool call."""
    builtins = [llm_pb2.Tool(name="transfer", description="Transfer the caller to a person.",
                             parameters_json='{"type": "object", "properties": {}}'),
                llm_pb2.Tool(name="hang_up", description="End the call after saying goodbye.",
                             parameters_json='{"type": "object", "properties": {}}')]
    text, calls, done = generate(server.stub, [SYSTEM, user("i want to talk to a person")],
                                 tools=BANK_TOOLS + builtins)
    assert not calls
    assert "transfer you to" in text
    assert done.finish_reason == "stop"
    assert "tool call by meaning" not in server.proc.output()
