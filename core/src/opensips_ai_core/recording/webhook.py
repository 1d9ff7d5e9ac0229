"""The post-call webhook: the transcript and the call's metadata POSTed as JSON.

Delivered in the background after the call ended, never holding it up. A webhook
that is down (connection refused), slow (no answer within the timeout) or failing
(5xx, 429) is tried again with exponential backoff and jitter (tenacity), up to
`attempts` tries; any other answer (2xx delivered, 4xx refused) is final.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)


class WebhookError(Exception):
    """The webhook did not take the delivery (the message says why, in one line)."""


class _RetryableError(WebhookError):
    pass


async def post_json(url: str, payload: dict[str, Any], *, attempts: int, timeout_s: float,
                    backoff_s: float, max_backoff_s: float = 30.0) -> int:
    """POST `payload` to `url`; returns the attempt that succeeded (1 for the first).
    Raises `WebhookError` when it is refused or every attempt failed."""
    body = json.dumps(payload).encode()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=max_backoff_s) + wait_random(0, backoff_s),
        retry=retry_if_exception_type(_RetryableError), reraise=True)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # An attempt that failed with a retryable error is swallowed by `with attempt`
        # and tried again; the last one's error is raised (reraise).
        try:
            async for attempt in retrying:
                with attempt:
                    await _post_once(session, url, body)
        except WebhookError as err:
            tried = retrying.statistics.get("attempt_number", 1)
            raise WebhookError(f"{err} (attempt {tried} of {attempts})") from None
    return int(retrying.statistics.get("attempt_number", 1))


async def _post_once(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    try:
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as response:
            await response.read()
            status = response.status
    except TimeoutError:
        raise _RetryableError("no answer in time") from None
    except aiohttp.ClientError as err:
        raise _RetryableError(f"{type(err).__name__}: {err}") from None
    if status >= 500 or status == 429:
        raise _RetryableError(f"answered {status}")
    if status >= 300:
        raise WebhookError(f"answered {status}")
