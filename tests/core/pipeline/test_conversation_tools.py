"""Tool calls in a conversation: the fakes for the LLM, TTS and media (fakes.py), and a
real aiohttp tool server on 127.0.0.1 standing for the bank's HTTP API.

The LLM's tool calls are scripted (`LlmPlan.tool_call`, what the client collects from
the contract's `tool_call` events); the tool itself is reached over real HTTP, so the
timeout, the 500, the garbage, the oversized reply and the cancelled request are the
real aiohttp client's behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from opensips_ai_core.config import BotConfig, ToolConfig
from opensips_ai_core.grpc_clients.llm import ToolCall, ToolExchange
from opensips_ai_core.pipeline.conversation import CallState
from opensips_ai_core.pipeline.tools import MAX_RESULT_BYTES
from opensips_ai_core.pipeline.turn import TurnState
from opensips_ai_core.signalling.base import TransferResult
from tests.core.pipeline.fakes import FakeLlm, LlmPlan
from tests.core.pipeline.harness import GREETING, until
from tests.core.pipeline.test_conversation_transfer import ManagerTransfer
from voice_testkit.http_server import serve

pytestmark = [pytest.mark.timeout(20)]

FILLER = "One moment, please."
FAILED = "Sorry, I could not do that."
ANSWER = "Your balance is 1,250.40 dollars."
SCHEMA = {"type": "object", "properties": {"account": {"type": "string", "pattern": "^[0-9]+$"}},
          "required": ["account"], "additionalProperties": False}


class ToolServer:
    """The bank's API: one route per behaviour; records what it was sent."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, object]] = []
        self.cancelled = asyncio.Event()
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info["route"]
        self.bodies.append((route, await request.json()))
        if route == "balance":
            return web.json_response({"account": "1234", "balance": 1250.4,
                                      "currency": "dollars"})
        if route == "slow":
            try:
                await asyncio.Event().wait()  # until the client goes away
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if route == "error":
            return web.Response(status=500, text="internal error")
        if route == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if route == "big":
            return web.json_response({"rows": "x" * MAX_RESULT_BYTES})
        return web.Response(status=404)

    def url(self, route: str) -> str:
        return f"{self.base}/{route}"


@pytest.fixture
async def tool_server() -> AsyncIterator[ToolServer]:
    server = ToolServer()
    app = web.Application()
    app.router.add_post("/{route}", server.handle)
    # handler_cancellation: the handler sees the client's disconnect (a cancelled call).
    async with serve(app, handler_cancellation=True) as address:
        server.base = f"http://{address}"
        yield server


def bot(server: ToolServer, route: str = "balance", **extra: object) -> BotConfig:
    tool = ToolConfig(name="get_balance", description="The balance of an account.",
                      parameters=SCHEMA, url=server.url(route), timeout_s=0.5)
    return BotConfig(greeting=GREETING, tools=(tool,), tool_filler=FILLER, tool_failed=FAILED,
                     **extra)  # type: ignore[arg-type]


def calling(arguments: str, *then: LlmPlan, name: str = "get_balance") -> FakeLlm:
    call = ToolCall("call_1", name, arguments)
    return FakeLlm(plans=[LlmPlan(tool_call=call), *then])


async def test_a_tool_call_says_the_filler_posts_the_arguments_and_speaks_the_answer(
        make_call, tool_server) -> None:
    h = make_call(bot(tool_server), autoplay=True,
                  llm=calling('{"account": "1234"}', LlmPlan(reply=ANSWER)))
    await h.greeted()
    await h.reply_to("what is my balance, account 1234")
    assert h.tts.texts[1:] == [FILLER, ANSWER]
    assert tool_server.bodies == [("balance", {"account": "1234"})]
    assert h.llm.offered[0] == ["get_balance", "hang_up"]
    second = h.llm.requests[1]
    assert second[:-1] == h.llm.requests[0]
    assert second[-1] == ToolExchange(
        ToolCall("call_1", "get_balance", '{"account": "1234"}'),
        '{"account":"1234","balance":1250.4,"currency":"dollars"}')
    assert h.call.history[-1] == ("assistant", f"{FILLER} {ANSWER}")
    assert h.call.turn.tool_calls == [("get_balance", '{"account": "1234"}', "ok")]
    assert h.call.transcript.turns[-1]["tool_calls"] == [
        {"name": "get_balance", "arguments": '{"account": "1234"}', "outcome": "ok"}]


BAD_TOOLS = {
    # (route, arguments): each ends with the bot saying it could not do it.
    "times out": ("slow", '{"account": "1234"}'),
    "answers 500": ("error", '{"account": "1234"}'),
    "answers garbage": ("garbage", '{"account": "1234"}'),
    "answers too much": ("big", '{"account": "1234"}'),
    "arguments fail the schema": ("balance", '{"account": "12a4"}'),
    "arguments missing": ("balance", "{}"),
    "arguments not JSON": ("balance", '{"account": '),
}


@pytest.mark.parametrize("name", list(BAD_TOOLS))
async def test_a_failing_tool_is_said_and_the_call_goes_on(make_call, tool_server, name) -> None:
    route, arguments = BAD_TOOLS[name]
    h = make_call(bot(tool_server, route), autoplay=True, llm=calling(arguments))
    await h.greeted()
    await h.reply_to("what is my balance")
    assert h.tts.texts[1:] == [FILLER, FAILED]
    assert len(h.llm.requests) == 1  # the failure is not fed back to the LLM
    assert h.call.turn.tool_calls == [("get_balance", arguments, "failed")]
    # Arguments that fail never reach the tool; the others did.
    assert [route for route, _ in tool_server.bodies] == ([] if route == "balance" else [route])
    await h.reply_to("and my card")
    assert h.call.history[-1] == ("assistant", "You said and my card. Anything else?")
    assert h.call.state is CallState.ACTIVE


async def test_barge_in_cancels_a_running_tool_call(make_call, tool_server) -> None:
    tool = ToolConfig(name="get_balance", parameters=SCHEMA, url=tool_server.url("slow"),
                      timeout_s=30)
    h = make_call(BotConfig(greeting=GREETING, tools=(tool,), tool_filler=FILLER),
                  llm=calling('{"account": "1234"}'))
    await h.greeted()
    await h.asr.stream.final("what is my balance")
    turn = h.call.turn
    await until(lambda: "TOOL" in turn.in_flight and tool_server.bodies, "the tool call")
    await h.asr.stream.partial("no wait")
    await turn.wait_for_work()
    assert turn.state is TurnState.INTERRUPTED
    await asyncio.wait_for(tool_server.cancelled.wait(), 5)  # the HTTP request went away
    assert h.tts.texts[1:] == [FILLER]
    h.media.play_out()
    await h.reply_to("hello")
    assert h.call.history[-1] == ("assistant", "You said hello. Anything else?")


async def test_a_reply_prepared_at_a_pause_calls_its_tool_only_once_committed(
        make_call, tool_server) -> None:
    h = make_call(bot(tool_server), llm=calling('{"account": "1234"}',
                                                 LlmPlan(reply="About your card.")))
    await h.greeted()
    await h.asr.stream.pause("what is my balance")
    discarded = h.call.prepared
    await until(lambda: discarded.held_audio, "the held filler")
    await h.reply_to("i lost my card")  # the final differs: the prepared reply goes
    assert discarded.state is TurnState.DISCARDED
    assert h.call.history[-1] == ("assistant", "About your card.")
    assert tool_server.bodies == []  # a discarded reply acted on nothing

    h.llm.plans += [LlmPlan(tool_call=ToolCall("call_2", "get_balance", '{"account": "1234"}')),
                    LlmPlan(reply=ANSWER)]
    h.media.play_out()
    await h.asr.stream.pause("what is my balance please")
    prepared = h.call.prepared
    await until(lambda: prepared.held_audio, "the held filler")
    assert tool_server.bodies == []  # held: waiting for the final transcript
    await h.asr.stream.final("what is my balance please")
    await prepared.wait_for_work()
    assert prepared.state is TurnState.DONE
    assert tool_server.bodies == [("balance", {"account": "1234"})]
    assert h.call.history[-1] == ("assistant", f"{FILLER} {ANSWER}")


async def test_built_in_hang_up_ends_the_call_after_the_reply(make_call, tool_server) -> None:
    h = make_call(bot(tool_server), autoplay=True,
                  llm=FakeLlm(plans=[LlmPlan(reply="Have a nice day.",
                                             tool_call=ToolCall("c", "hang_up", "{}"))]))
    await h.greeted()
    await h.reply_to("that is all")
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")
    assert h.tts.texts[1:] == ["Have a nice day."]
    assert tool_server.bodies == []


async def test_built_in_transfer_goes_to_the_named_target(make_call, tool_server) -> None:
    sales = "sip:sales@127.0.0.1:5998"
    h = make_call(bot(tool_server, transfer_to={"advisers": "sip:advisers@127.0.0.1:5999",
                                                "sales": sales}), autoplay=True,
                  llm=FakeLlm(plans=[LlmPlan(reply="Putting you through.", tool_call=ToolCall(
                      "c", "transfer", json.dumps({"target": "sales"})))]))
    transfer = ManagerTransfer(h.call, TransferResult(True, 200, "OK"))
    h.call.transfer = transfer
    await h.greeted()
    await h.reply_to("i want to buy a card")
    await until(lambda: h.call.state is CallState.CLOSED, "the transfer to end the call")
    assert transfer.targets == [sales]
    assert h.llm.offered[0] == ["get_balance", "transfer", "hang_up"]


async def test_no_tools_configured_sends_no_tools(make_call) -> None:
    h = make_call(autoplay=True)
    await h.greeted()
    await h.reply_to("hello")
    assert h.llm.offered == [[]]


def test_tool_config_is_checked() -> None:
    with pytest.raises(ValueError, match="built in"):
        ToolConfig(name="transfer", url="http://127.0.0.1:1/x")
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        ToolConfig(name="t", url="http://127.0.0.1:1/x", parameters={"type": "objekt"})
    with pytest.raises(ValueError, match="unique"):
        BotConfig(tools=(ToolConfig(name="t", url="http://127.0.0.1:1/x"),) * 2)


def test_the_demo_bot_offers_the_mock_banks_tools() -> None:
    """core/bot.toml declares get_balance and block_card as paths after tools_base_url,
    the dev stack's mock bank; BOT_TOOLS_BASE_URL moves them (tests use their own bank)."""
    from opensips_ai_core.config import DEFAULT_BOT_CONFIG, load_bot_config, tool_url

    demo = load_bot_config(DEFAULT_BOT_CONFIG, {})
    assert [tool.name for tool in demo.tools] == ["get_balance", "block_card"]
    assert [tool_url(demo.tools_base_url, tool.url) for tool in demo.tools] == [
        "http://127.0.0.1:8090/get_balance", "http://127.0.0.1:8090/block_card"]
    moved = load_bot_config(DEFAULT_BOT_CONFIG, {"BOT_TOOLS_BASE_URL": "http://127.0.0.1:9/api/"})
    assert tool_url(moved.tools_base_url, moved.tools[0].url) == "http://127.0.0.1:9/api/get_balance"
    # The digit words: the demo's restricted recognizer hears spoken account numbers.
    assert {"zero", "one", "five", "nine"} <= set(demo.asr_phrases)


@pytest.mark.parametrize("value", ["127.0.0.1:8090", "ftp://bank", "http://", "http://bank:99999",
                                   "http://bank/x?y=1", "http://bank /x"])
def test_a_bad_tools_base_url_is_one_line_naming_the_variable(value: str) -> None:
    from opensips_ai_core.config import DEFAULT_BOT_CONFIG, BotConfigError, load_bot_config

    with pytest.raises(BotConfigError) as caught:
        load_bot_config(DEFAULT_BOT_CONFIG, {"BOT_TOOLS_BASE_URL": value})
    message = str(caught.value)
    assert message.startswith(f"BOT_TOOLS_BASE_URL={value!r} (environment): ")
    assert "is not a base URL" in message and "\n" not in message


def test_a_tool_path_without_a_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="set tools_base_url"):
        BotConfig(tools=(ToolConfig(name="t", url="/t"),))


async def test_a_tool_path_is_posted_after_the_base_url(make_call, tool_server) -> None:
    tool = ToolConfig(name="get_balance", parameters=SCHEMA, url="/balance", timeout_s=0.5)
    config = BotConfig(greeting=GREETING, tools=(tool,), tools_base_url=tool_server.base,
                       tool_filler=FILLER, tool_failed=FAILED)
    h = make_call(config, autoplay=True,
                  llm=calling('{"account": "1234"}', LlmPlan(reply=ANSWER)))
    await h.greeted()
    await h.reply_to("what is my balance, account 1234")
    assert h.tts.texts[1:] == [FILLER, ANSWER]
    assert tool_server.bodies == [("balance", {"account": "1234"})]


def test_tool_results_are_fitted_into_the_llms_limits() -> None:
    """A long dialogue (fitted by history.py) plus tool results: the oldest turns go, the
    caller's last turn and the results stay, within 16000 characters."""
    from opensips_ai_core.pipeline.history import MAX_TOTAL_CHARS
    from opensips_ai_core.pipeline.tools import fit_exchanges

    dialogue = [("system", "s"), *[("user" if i % 2 else "assistant", "x" * 1900)
                                   for i in range(7)], ("user", "my balance")]
    results = [ToolExchange(ToolCall(f"c{i}", "get_balance", "{}"), "y" * 3990)
               for i in range(3)]
    fitted = fit_exchanges([*dialogue, *results])
    assert fitted[0] == ("system", "s") and fitted[-4:] == [("user", "my balance"), *results]
    total = sum(len(m.result_json) + 2 if isinstance(m, ToolExchange) else len(m[1])
                for m in fitted)
    assert total <= MAX_TOTAL_CHARS and len(fitted) < len(dialogue) + 3
