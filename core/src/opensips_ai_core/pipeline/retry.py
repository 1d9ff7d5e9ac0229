"""Retrying a service call within its deadline, with backoff: the core's one owner of
request retries.

The gRPC clients make one attempt each (`grpc_clients/channel.py`); only here is it
known whether the caller already heard part of an answer (an LLM delta, TTS audio),
after which trying again would repeat it. A failure that a retry may cure (UNAVAILABLE:
a service restarting, warming up or lost; DEADLINE_EXCEEDED; ABORTED) is tried again
100 ms, 200 ms, ... (at most 1 s) later until the deadline: a restart delays the reply
instead of losing it. Two attempts milliseconds apart both met a TTS still loading its
voices and the reply was lost; the spacing rides that out.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from opensips_ai_core.grpc_clients.channel import is_retryable

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 1.0


class RetryWindow:
    """Attempts of one request, all of them within `deadline_s` of the first."""

    def __init__(self, deadline_s: float, *, first_delay_s: float = FIRST_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S) -> None:
        self.deadline = time.monotonic() + deadline_s
        self.delay = first_delay_s
        self.max_delay = max_delay_s
        self.attempt = 1

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def retry_after(self, err: BaseException) -> bool:
        """Whether to try again after `err`: it is retryable and, after the backoff,
        time is left. Sleeps the backoff."""
        if not is_retryable(err):
            return False
        delay = min(self.delay, self.max_delay)
        if self.remaining_s() <= delay:
            return False
        await asyncio.sleep(delay)
        self.delay *= 2
        self.attempt += 1
        return True


def describe(err: grpc.aio.AioRpcError | TimeoutError) -> tuple[str, str]:
    """(status name, details) of a failed attempt, for metrics and logs."""
    if isinstance(err, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED.name, "no answer within the deadline"
    return err.code().name, err.details() or ""
