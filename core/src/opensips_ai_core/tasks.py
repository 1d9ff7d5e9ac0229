"""Background tasks owned by one object (a backend, a call): kept, logged, cancelled together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    """Holds strong references (asyncio keeps only weak ones), logs failures, stops all."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, what: str) -> None:
        self._log = logger
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s task failed", self._what, exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self, *, keep: asyncio.Task[Any] | None = None) -> None:
        """Cancel every task (but `keep`, e.g. the caller's own) and wait for them to end."""
        pending = [t for t in self._tasks if t is not keep]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
