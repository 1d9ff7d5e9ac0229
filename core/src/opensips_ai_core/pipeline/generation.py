"""A turn's words and audio: LLM -> sentences -> TTS, with retries, into the turn.

The LLM streams the reply; each finished sentence goes to TTS at once, so the first
sentence plays while the LLM still writes. A service that fails before it produced
anything is retried with backoff within its deadline (CORE_LLM_TIMEOUT_S /
CORE_TTS_TIMEOUT_S, `retry.RetryWindow`): a restart delays the turn instead of
losing it. A lost LLM turn is apologised for rather than left silent; a lost sentence
is skipped and the turn goes on.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.grpc_clients.llm import ChatItem, GenerationResult, ToolCall, ToolExchange
from opensips_ai_core.pipeline.protocols import LanguageModel, SpeechSynthesizer
from opensips_ai_core.pipeline.retry import RetryWindow, describe
from opensips_ai_core.pipeline.sentences import ReplyChunker
from opensips_ai_core.pipeline.tools import (
    HANG_UP,
    TRANSFER,
    ToolFailure,
    ToolRunner,
    fit_exchanges,
    parse_arguments,
    request_tools,
)
from opensips_ai_core.pipeline.transfer import strip_transfer_marker
from opensips_ai_core.pipeline.turn import Turn
from voice_common import get_development_logger

log = get_development_logger("core.generation")

SAMPLE_RATE = 8000
# Tool calls one reply may chain (call, result, call again...) before the bot gives up.
MAX_TOOL_ROUNDS = 3


class Generation:
    def __init__(self, call_id: str, llm: LanguageModel, tts: SpeechSynthesizer,
                 bot: BotConfig) -> None:
        self.call_id = call_id
        self.llm = llm
        self.tts = tts
        self.bot = bot
        self.tool_runner = ToolRunner(call_id, bot.tools, bot.tools_base_url)
        self.tools = request_tools(bot)

    async def say(self, turn: Turn, text: str) -> None:
        """A fixed text (greeting, prompt, goodbye) as the turn's reply."""
        await self.speak(turn, text)
        turn.reply = text

    async def reply(self, turn: Turn) -> None:
        """The LLM's answer to `turn.messages`, the first sentence spoken while it writes."""
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak_all(turn, sentences))
        try:
            await self._write(turn, sentences)
        except BaseException:
            speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaker
            raise
        await sentences.put(None)
        await speaker

    async def _write(self, turn: Turn, out: asyncio.Queue[str | None]) -> None:
        messages: list[ChatItem] = list(turn.messages)
        said: list[str] = []
        for _ in range(MAX_TOOL_ROUNDS + 1):
            result = await self._generate(turn, messages, out)
            if result is None:  # lost: apologised
                said.append(self.bot.apology)
                break
            if result.text.strip():
                said.append(result.text.strip())
            if not result.tool_calls:
                break
            call = result.tool_calls[0]  # one at a time: the next round may call the next
            if call.name in (TRANSFER, HANG_UP):
                self._builtin(turn, call)
                break
            await out.put(self.bot.tool_filler)
            said.append(self.bot.tool_filler)
            # A reply prepared at the caller's pause may still be discarded: a tool can
            # act (block a card), so it runs only for what the caller really said.
            await turn.wait_until_committed()
            turn.in_flight.add("TOOL")
            try:
                outcome = await self.tool_runner.run(call)
            finally:
                turn.in_flight.discard("TOOL")
            turn.tool_calls.append((call.name, call.arguments_json,
                                    "failed" if isinstance(outcome, ToolFailure) else "ok"))
            if isinstance(outcome, ToolFailure):
                await out.put(self.bot.tool_failed)
                said.append(self.bot.tool_failed)
                break
            messages = fit_exchanges([*messages, ToolExchange(call, outcome.result_json)])
        else:
            log.warning("Call %s: more than %d tool calls in one reply", self.call_id,
                        MAX_TOOL_ROUNDS)
            await out.put(self.bot.tool_failed)
            said.append(self.bot.tool_failed)
        turn.reply = " ".join(said)

    def _builtin(self, turn: Turn, call: ToolCall) -> None:
        """`transfer` / `hang_up`: mark the turn; replies.py acts once it has played."""
        if call.name == HANG_UP:
            turn.hang_up = True
            return
        schema = {"type": "object", "properties": {"target": {"type": "string"}}}
        arguments = parse_arguments(call, schema)
        target = arguments.get("target", "") if isinstance(arguments, dict) else ""
        targets = self.bot.transfer_to
        turn.transfer_to = targets.get(target) or next(iter(targets.values()), None)

    async def _generate(self, turn: Turn, messages: list[ChatItem],
                        out: asyncio.Queue[str | None]) -> GenerationResult | None:
        """One LLM request, its sentences queued for TTS; None when it was lost."""
        window = RetryWindow(self.llm.timeout_s)
        while True:
            result = GenerationResult()
            chunker = ReplyChunker()
            turn.in_flight.add("LLM")
            try:
                async with asyncio.timeout(window.remaining_s()):
                    async for delta in self.llm.generate(
                            messages, call_id=self.call_id,
                            max_new_tokens=self.bot.max_new_tokens,
                            temperature=self.bot.temperature, result=result,
                            tools=self.tools):
                        turn.timer.mark("llm_first_token")
                        for sentence in chunker.feed(delta):
                            await out.put(self._strip_marker(sentence))
                rest = chunker.flush()
                if rest:
                    await out.put(self._strip_marker(rest))
                if result.timings is not None and turn.timer.llm_server_ttft_ms is None:
                    turn.timer.llm_server_ttft_ms = result.timings.time_to_first_token_ms
                return result
            except (grpc.aio.AioRpcError, TimeoutError) as err:
                code, details = describe(err)
                metrics.SERVICE_ERRORS.labels("llm", code).inc()
                log.warning("Call %s LLM failed (%s: %s), attempt %d", self.call_id, code,
                            details, window.attempt)
                # Once it said something, a second answer would repeat it: apologise.
                if result.deltas or not await window.retry_after(err):
                    break
            finally:
                turn.in_flight.discard("LLM")
        # The turn is lost: say so rather than stay silent.
        await out.put(self.bot.apology)
        return None

    def _strip_marker(self, text: str) -> str:
        """The sentence without the goodbye and transfer markers (never spoken)."""
        marker = self.bot.goodbye_marker
        text = text.replace(marker, "").strip() if marker else text
        return strip_transfer_marker(self.bot, text)

    async def _speak_all(self, turn: Turn, sentences: asyncio.Queue[str | None]) -> None:
        while (sentence := await sentences.get()) is not None:
            if sentence:
                await self.speak(turn, sentence)

    async def speak(self, turn: Turn, text: str) -> None:
        """TTS one sentence into the turn; retried while TTS restarts, within its deadline."""
        turn.spoken.append(text)
        window = RetryWindow(self.tts.timeout_s)
        while True:
            got_audio = False
            turn.in_flight.add("TTS")
            turn.timer.mark("tts_request")
            try:
                async with asyncio.timeout(window.remaining_s()):
                    async for pcm in self.tts.synthesize(
                            text, sample_rate=SAMPLE_RATE, voice=self.bot.voice,
                            call_id=self.call_id):
                        turn.timer.mark("tts_first_audio")
                        got_audio = True
                        turn.play(pcm)
                return
            except (grpc.aio.AioRpcError, TimeoutError) as err:
                code, details = describe(err)
                metrics.SERVICE_ERRORS.labels("tts", code).inc()
                log.warning("Call %s TTS failed (%s: %s), attempt %d", self.call_id, code,
                            details, window.attempt)
                # Part of it was heard: saying it again from the start would be worse.
                if got_audio or not await window.retry_after(err):
                    log.warning("Call %s sentence not spoken: %r", self.call_id, text)
                    return
            finally:
                turn.in_flight.discard("TTS")
