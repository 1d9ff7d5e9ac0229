"""The voiceai.llm.v1.LanguageModel gRPC servicer: validate, queue, stream the deltas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

from llm_service import prime
from llm_service.demo_tools import demo_step
from llm_service.engine import (
    Delta,
    Event,
    Failed,
    Finished,
    GenerationJob,
    LanguageModel,
    Message,
    Prompt,
    ToolSpec,
)
from llm_service.fact_answer import FINISH_REASON as FACT_FINISH_REASON
from llm_service.models import uses_demo
from llm_service.off_topic import FINISH_REASON as OFF_TOPIC_FINISH_REASON
from llm_service.off_topic import REPEAT_FINISH_REASON
from llm_service.scheduler import QueueFullError, RoundRobinScheduler
from llm_service.settings import LlmSettings
from llm_service.tool_calls import ParsedToolCall, ToolCallExtractor
from llm_service.validation import (
    InvalidRequestError,
    validate_messages,
    validate_params,
    validate_tools,
)
from voice_common.devlogger import get_development_logger
from voiceai.llm.v1 import llm_pb2, llm_pb2_grpc

SERVICE_FULL_NAME = "voiceai.llm.v1.LanguageModel"

log = logging.getLogger(__name__)
dlog = get_development_logger(__name__)


class LanguageModelServicer(llm_pb2_grpc.LanguageModelServicer):
    def __init__(self, settings: LlmSettings, model: LanguageModel,
                 scheduler: RoundRobinScheduler) -> None:
        self.settings = settings
        self.model = model
        self.scheduler = scheduler
        self.template_renders_tools: bool | None = None  # found on the first tools request

    async def Generate(  # noqa: N802 - the contract's name
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        arrived = time.perf_counter()
        try:
            messages = validate_messages(request)
            params = validate_params(request.params, self.settings.max_new_tokens)
            tools = validate_tools(request)
        except InvalidRequestError as err:
            log.warning("refused request (%s): %s", request.call_id or "-", err)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            return
        # Rendering and tokenizing a 16000-character prompt is CPU work: off the loop.
        try:
            prompt = await asyncio.to_thread(self.model.render_prompt, messages, tools)
        except Exception as err:  # e.g. a chat template that refuses a system message
            log.warning("prompt rendering failed (%s): %s", request.call_id or "-", err)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the model's chat template refused the messages: {err}")
            return
        if tools and self.template_renders_tools is None and not uses_demo(self.settings.model):
            await self._check_template_renders_tools(messages, tools, prompt.text)
        if request.prime:
            async for response in self._prime(request.call_id or prime.CALL_ID, messages,
                                              tools, prompt, arrived=arrived, context=context):
                yield response
            return
        if tools and self.template_renders_tools is False and self.model.router is not None:
            routed = await asyncio.to_thread(self.model.router.route, messages, tools)
            if routed is not None:
                log.info("tool call by meaning (%s): %s, similarity %.2f (at least %.2f)",
                         request.call_id or "-", routed.call.name, routed.score,
                         self.model.router.min_score)
                for response in _responses(routed.text, [routed.call]):
                    yield response
                total_ms = (time.perf_counter() - arrived) * 1000
                yield llm_pb2.GenerateResponse(done=llm_pb2.GenerationTimings(
                    time_to_first_token_ms=total_ms, total_ms=total_ms,
                    finish_reason="tool_calls"))
                return
        if self.model.answers is not None:
            found = await asyncio.to_thread(self.model.answers.answer, messages)
            if found is not None:
                # Retrieval, not the model: the bot's own line, no token generated.
                log.info("fact answer (%s): similarity %.2f (at least %.2f), next line %.2f: %r",
                         request.call_id or "-", found.score, self.model.answers.min_score,
                         found.runner_up, found.text[:60])
                for response in _bot_line(found.text, arrived, FACT_FINISH_REASON):
                    yield response
                return
        if self.model.off_topic is not None:
            again = await asyncio.to_thread(self.model.off_topic.repeat, messages)
            if again is not None:
                # "Pardon?": the bot's own last line again, not a paraphrase of it.
                log.info("repeat (%s): the bot's last line again", request.call_id or "-")
                for response in _bot_line(again, arrived, REPEAT_FINISH_REASON):
                    yield response
                return
            refusal = await asyncio.to_thread(self.model.off_topic.check, messages, tools)
            if refusal is not None:
                # Neither knowledge nor small talk: the bot's own "cannot help" line, not
                # whatever a small model would make up.
                log.info("off-topic (%s): small talk %.2f (at least %.2f), best fact %.2f: "
                         "the refusal line", request.call_id or "-", refusal.small_talk,
                         self.model.off_topic.min_score, refusal.fact)
                for response in _bot_line(refusal.text, arrived, OFF_TOPIC_FINISH_REASON):
                    yield response
                return
        if not await self._fits_context(prompt, context):
            return
        dlog.debug_output("prompt (%s, %d tokens): %r", request.call_id or "-",
                          len(prompt.ids), prompt.text)
        dlog.debug_function_call("generate", kwargs={"call_id": request.call_id,
                                                     "params": params})

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:  # called on the worker thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is gone (shutdown): nobody is listening
                job.cancel("event loop closed")

        job = GenerationJob(prompt=prompt, params=params, emit=emit,
                            call_id=request.call_id, arrived=arrived)
        try:
            self.scheduler.submit(job)
        except QueueFullError as err:
            log.warning("refused request (%s): %s", request.call_id or "-", err)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
            return
        offered = [tool.name for tool in tools]
        extractor = ToolCallExtractor(offered) if offered else None
        # The demo's tool step needs its whole reply (demo_tools.py); others stream.
        demo_reply: list[str] | None = [] if offered and uses_demo(self.settings.model) else None
        try:
            while True:
                event = await events.get()
                if isinstance(event, Delta):
                    if demo_reply is not None:
                        demo_reply.append(event.text)
                        continue
                    if extractor is None:
                        yield llm_pb2.GenerateResponse(delta=event.text)
                        continue
                    text, calls = extractor.feed(event.text)
                    for response in _responses(text, calls):
                        yield response
                elif isinstance(event, Finished):
                    reason = event.finish_reason
                    if demo_reply is not None:
                        text, calls = _demo_outcome(messages, offered, "".join(demo_reply))
                    elif extractor is not None:
                        text, calls = extractor.flush(), extractor.calls
                    else:
                        text, calls = "", []
                    for response in _responses(text, calls if demo_reply is not None else []):
                        yield response
                    if calls:
                        reason = "tool_calls"
                    yield llm_pb2.GenerateResponse(done=llm_pb2.GenerationTimings(
                        time_to_first_token_ms=event.time_to_first_token_ms,
                        tokens_per_second=event.tokens_per_second,
                        prompt_tokens=event.prompt_tokens,
                        completion_tokens=event.completion_tokens,
                        total_ms=event.total_ms,
                        queue_ms=event.queue_ms,
                        finish_reason=reason,
                    ))
                    return
                elif isinstance(event, Failed):
                    await context.abort(grpc.StatusCode.INTERNAL, event.message)
                    return
        finally:
            # Client cancelled, deadline passed or the server is stopping: the
            # worker drops the job before its next token step and logs it.
            if not job.finished:
                job.cancel("client cancelled" if context.cancelled() else "stream closed")

    async def _fits_context(self, prompt: Prompt, context: grpc.aio.ServicerContext) -> bool:
        """Whether the prompt fits the model's context; if not, the RPC is aborted."""
        limit = self.model.max_positions
        if limit and len(prompt.ids) >= limit:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the prompt is {len(prompt.ids)} tokens; the model's context is {limit}")
            return False
        return True

    async def _prime(self, call_id: str, messages: list[Message], tools: tuple[ToolSpec, ...],
                     prompt: Prompt, *, arrived: float, context: grpc.aio.ServicerContext,
                     ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        """A prime (prime.py): every gate, then the prompt through the model for one
        token; no text is sent, only `done` (finish_reason "primed")."""
        await asyncio.to_thread(prime.run_gates, self.model, messages, tools,
                                self.template_renders_tools is False)
        gates_ms = (time.perf_counter() - arrived) * 1000  # the prompt's rendering included
        if not await self._fits_context(prompt, context):
            return
        dlog.debug_output("prompt (%s, %d tokens): %r", call_id, len(prompt.ids), prompt.text)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Event] = loop.create_future()

        def emit(event: Event) -> None:  # called on the worker thread; the token is dropped
            if isinstance(event, Delta):
                return
            try:
                loop.call_soon_threadsafe(_settle, done, event)
            except RuntimeError:  # the loop is gone (shutdown)
                job.cancel("event loop closed")

        job = GenerationJob(prompt=prompt, params=prime.PREFILL, emit=emit, call_id=call_id,
                            arrived=arrived)
        try:
            self.scheduler.submit(job)
        except QueueFullError as err:
            log.warning("refused prime (%s): %s", call_id, err)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
            return
        try:
            event = await done
        finally:
            if not job.finished:
                job.cancel("client cancelled" if context.cancelled() else "stream closed")
        if isinstance(event, Failed):
            await context.abort(grpc.StatusCode.INTERNAL, event.message)
            return
        assert isinstance(event, Finished)
        log.info("primed (%s): the prompt and every gate in %.0f ms, then its %d tokens "
                 "through the model in %.0f ms", call_id, gates_ms, event.prompt_tokens,
                 event.total_ms - gates_ms)
        yield llm_pb2.GenerateResponse(done=llm_pb2.GenerationTimings(
            time_to_first_token_ms=event.time_to_first_token_ms,
            prompt_tokens=event.prompt_tokens, total_ms=event.total_ms,
            queue_ms=event.queue_ms, finish_reason=prime.FINISH_REASON))

    async def _check_template_renders_tools(self, messages: list[Message],
                                            tools: tuple[ToolSpec, ...], prompt: str) -> None:
        """Once: does the chat template render `tools=` at all? SmolLM2's does not: its
        model is never told about the tools, answers in plain text and calls none. Said
        once in the log, where an operator looking for the missing tool calls reads it."""
        try:
            plain = await asyncio.to_thread(self.model.render_prompt, messages, ())
        except Exception:  # the check is only advice: the request goes on without it
            return
        self.template_renders_tools = plain.text != prompt
        if not self.template_renders_tools:
            log.warning("the model's chat template ignores tools: %s are not in its prompt, "
                        "so it cannot call them and answers in plain text%s",
                        ", ".join(tool.name for tool in tools),
                        "" if self.model.router is None else
                        " (those without required arguments are called by meaning: "
                        "LLM_TOOL_ROUTE_MIN_SCORE)")


def _settle(future: asyncio.Future[Event], event: Event) -> None:
    if not future.done():
        future.set_result(event)


def _bot_line(text: str, arrived: float, finish_reason: str
              ) -> list[llm_pb2.GenerateResponse]:
    """A reply that is one of the bot's own lines, whole, with no token generated: its
    time to first token is taken before it is sent."""
    took_ms = (time.perf_counter() - arrived) * 1000
    return [llm_pb2.GenerateResponse(delta=text),
            llm_pb2.GenerateResponse(done=llm_pb2.GenerationTimings(
                time_to_first_token_ms=took_ms, total_ms=took_ms, finish_reason=finish_reason))]


def _responses(text: str, calls: list[ParsedToolCall]) -> list[llm_pb2.GenerateResponse]:
    out = [llm_pb2.GenerateResponse(delta=text)] if text else []
    out += [llm_pb2.GenerateResponse(tool_call=llm_pb2.ToolCall(
        id=call.id, name=call.name, arguments_json=call.arguments_json)) for call in calls]
    return out


def _demo_outcome(messages: list[Message], offered: list[str], reply: str
                  ) -> tuple[str, list[ParsedToolCall]]:
    step = demo_step(messages, offered, reply)
    if step is None:
        return reply, []
    if step.call is not None:
        log.info("demo tool call %s %s", step.call.name, step.call.arguments_json)
        return step.text, [step.call]
    return step.text, []
