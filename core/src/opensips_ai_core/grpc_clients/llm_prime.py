"""Priming the LLM service with the bot's request, so its first caller does not pay its
cold costs.

Much of what the LLM service spends on a turn the first time is keyed on the bot's
prompt and tools, which its own warm-up cannot know: the sentence vectors of the
knowledge lines, of the refusal line and of the small-talk and tool phrasings, and
the model's KV cache of the prompt's start (about a second on SmolLM2, against 15 ms
for the same answer later). So whenever the LLM channel becomes ready (at the core's
start, and again each time the service comes back after a restart or hot reload:
the channel then leaves READY and, health-checked, comes back to it once the service
serves again), the core sends one prime: a request shaped like a call's first turn
(the system prompt with the knowledge, the greeting, a short caller's turn, the bot's
tools) marked `prime`. The service runs every gate and the model over the prompt for
one token, then answers `done` only (llm_service/prime.py).

A prime is no call: no metrics, no transcript, never waited for by a call, one INFO
line when it is answered, a DEBUG or WARNING line when it fails (the service then
answers its first turn late, nothing else). With several replicas behind one channel
a prime reaches one of them; one restarted while another serves is primed by its
first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc

from opensips_ai_core.config import BotConfig
from opensips_ai_core.grpc_clients.llm import LlmClient, build_request
from opensips_ai_core.pipeline.history import History
from opensips_ai_core.pipeline.tools import request_tools
from voice_common import get_development_logger
from voiceai.llm.v1 import llm_pb2, llm_pb2_grpc

log = get_development_logger("core.llm_prime")

CALL_ID = "prime"  # what the LLM service's logs name it
# The caller's first words in the prime: a greeting, short and in any bot's domain.
PRIME_TURN = "Hello."
FINISH_REASON = "primed"  # what the service answers a prime with (llm.proto)
# Failures that mean the service went away: its return brings a new prime.
GONE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


def prime_request(bot: BotConfig) -> llm_pb2.GenerateRequest:
    """The prime for `bot`: its first turn's request as a call sends it (the history
    with the greeting, the caller's turn, the tools), marked `prime`, one token."""
    history = History(bot.llm_system_prompt(), bot.max_history_turns)
    if bot.greeting:
        history.add_assistant(bot.greeting)
    request = build_request(history.for_llm(extra_user=PRIME_TURN), tools=request_tools(bot),
                            call_id=CALL_ID, max_new_tokens=1, temperature=bot.temperature)
    request.prime = True
    return request


def prime_blocking(stub: llm_pb2_grpc.LanguageModelStub, bot: BotConfig,
                   timeout_s: float = 300.0) -> llm_pb2.GenerationTimings | None:
    """The core's prime for `bot` over a blocking stub, waited for (benchmarks that
    start their own LLM service prime it as the core would); its `done`, if any."""
    done = None
    for response in stub.Generate(prime_request(bot), wait_for_ready=True, timeout=timeout_s):
        if response.HasField("done"):
            done = response.done
    return done


class LlmPrimer:
    """Primes the LLM service each time the core's channel to it becomes ready."""

    def __init__(self, client: LlmClient, bot: BotConfig) -> None:
        self.client = client
        self.request = prime_request(bot)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llm-prime")

    async def stop(self) -> None:
        """Cancel the watch and any prime in flight (its RPC is cancelled with it)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        channel = self.client.channel
        again = False
        while True:
            await channel.channel_ready()
            await self.prime(again)
            again = True
            await _left_ready(channel)

    async def prime(self, again: bool = False) -> bool:
        """One prime; whether the service answered it."""
        started = time.perf_counter()
        try:
            done = await self.client.prime(self.request)
        except grpc.aio.AioRpcError as err:
            # The service went away meanwhile: the channel left READY, and its return
            # brings the next prime; anything else is worth a look.
            channel = self.client.channel.get_state(try_to_connect=False)
            gone = err.code() in GONE or channel is not grpc.ChannelConnectivity.READY
            log.log(logging.DEBUG if gone else logging.WARNING, "LLM prime failed (%s: %s): %s",
                    err.code().name, err.details(),
                    "a new one follows when the service is back" if gone
                    else "the first call's first turn may answer late")
            return False
        except Exception as err:  # never the core's end: its calls go on unprimed
            log.warning("LLM prime failed (%r): the first call's first turn may answer late",
                        err)
            return False
        took_ms = (time.perf_counter() - started) * 1000
        when = " (the LLM channel is ready again)" if again else ""
        if done is not None and done.finish_reason == FINISH_REASON:
            log.info("LLM primed with the bot's prompt in %.0f ms%s", took_ms, when)
        else:  # a service that predates primes answered it as a turn: warmed all the same
            log.info("LLM primed with the bot's prompt in %.0f ms%s, answered as a turn "
                     "(the service predates primes)", took_ms, when)
        return True


async def _left_ready(channel: grpc.aio.Channel) -> None:
    """Until the channel is no longer READY (the service stopped, restarts, or the
    connection went idle)."""
    state = channel.get_state(try_to_connect=False)
    while state is grpc.ChannelConnectivity.READY:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=False)
