"""gRPC channels to the AI services that ride out a service restart.

`wait_for_ready` makes a call wait (up to its deadline) while the service is
restarting instead of failing at once; short reconnect backoffs bring the
channel back within a fraction of a second of the service listening again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc

from opensips_ai_core.grpc_clients import status_fix

# Every channel of the core opens here: the services' own status, never grpcio's INTERNAL.
status_fix.install()

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.ABORTED})

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.enable_retries", 1),
]


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def is_retryable(err: BaseException) -> bool:
    return isinstance(err, grpc.aio.AioRpcError) and err.code() in RETRYABLE


log = logging.getLogger(__name__)
Response = TypeVar("Response")
# First wait after an UNAVAILABLE answer; doubled up to the cap.
RETRY_BACKOFF_S = 0.1
RETRY_BACKOFF_MAX_S = 1.0


async def stream_until_deadline(
    start: Callable[[float], grpc.aio.UnaryStreamCall], timeout_s: float, what: str,
) -> AsyncIterator[Response]:
    """The responses of the server-streaming call `start(timeout)` opens. A service that
    answers UNAVAILABLE before its first response (warming up after a restart, voices
    still loading) is asked again with backoff until `timeout_s` has passed in all:
    `wait_for_ready` waits only for a connection, not for a service that is not SERVING.
    Closing the generator cancels the call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    backoff = RETRY_BACKOFF_S
    while True:
        call = start(max(0.0, deadline - loop.time()))
        received = False
        try:
            async for response in call:
                received = True
                yield response
            return
        except grpc.aio.AioRpcError as err:
            remaining = deadline - loop.time()
            if received or err.code() != grpc.StatusCode.UNAVAILABLE or remaining <= backoff:
                raise
            log.info("%s unavailable (%s); asking again in %.1f s", what, err.details(),
                     backoff)
        finally:
            if not call.done():
                call.cancel()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
