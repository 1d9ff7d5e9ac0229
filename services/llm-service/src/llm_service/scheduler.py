"""One worker thread runs every generation, one token per request per round.

Round-robin between the active generations means a short reply is not stuck
behind a long one: each active request gets one token step per round. At most
`max_active` generate at once (each holds a KV cache); up to `max_queue` more
wait for a slot, and the next one is refused (RESOURCE_EXHAUSTED). A cancelled
request is dropped before its next step, so cancelling stops it within one step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from llm_service.engine import Failed, GenerationJob, LanguageModel
from voice_common.devlogger import get_development_logger

log = logging.getLogger(__name__)
dlog = get_development_logger(__name__)


class QueueFullError(Exception):
    pass


class RoundRobinScheduler:
    def __init__(self, model: LanguageModel, max_active: int, max_queue: int) -> None:
        self.model = model
        self.max_active = max_active
        self.max_queue = max_queue
        self._waiting: deque[GenerationJob] = deque()
        self._active: list[GenerationJob] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llm-generate", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            for job in [*self._waiting, *self._active]:
                job.cancel("server stopping")
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: GenerationJob) -> None:
        with self._cond:
            if self._stopping:
                raise QueueFullError("the service is stopping")
            # Cancelled jobs still in the deque are dropped (and logged) by the worker.
            waiting = sum(not j.cancelled for j in self._waiting)
            if len(self._active) >= self.max_active and waiting >= self.max_queue:
                raise QueueFullError(
                    f"request queue is full: {len(self._active)} generating and "
                    f"{waiting} waiting (LLM_MAX_ACTIVE={self.max_active}, "
                    f"LLM_MAX_QUEUE={self.max_queue}); retry later"
                )
            self._waiting.append(job)
            self._cond.notify()

    def pending(self) -> tuple[int, int]:
        """(generating, waiting), for logs and tests."""
        with self._cond:
            return len(self._active), len(self._waiting)

    def _admit(self) -> list[GenerationJob] | None:
        """Wait for work; move waiting jobs into free slots; the round's jobs (None: stop)."""
        with self._cond:
            while not self._stopping and not self._active and not self._waiting:
                self._cond.wait()
            if self._stopping:
                return None
            while self._waiting and len(self._active) < self.max_active:
                job = self._waiting.popleft()
                if job.cancelled:
                    self._finish_cancelled(job)
                    continue
                self.model.start(job)
                self._active.append(job)
            return list(self._active)

    def _run(self) -> None:
        while (jobs := self._admit()) is not None:
            for job in jobs:
                done = None
                if job.cancelled:
                    self._finish_cancelled(job)
                    done = True
                else:
                    try:
                        finished = self.model.step(job)
                    except Exception as err:  # one bad generation must not stop the others
                        log.exception("generation failed (%s)", job.call_id or "-")
                        job.finished = True
                        job.past = None
                        job.emit(Failed(f"generation failed: {err}"))
                        done = True
                    else:
                        if finished is not None:
                            job.emit(finished)
                            log.info("generation done (%s): %d+%d tokens, %s, first token "
                                     "%.1f ms, %.1f tokens/s", job.call_id or "-",
                                     finished.prompt_tokens, finished.completion_tokens,
                                     finished.finish_reason, finished.time_to_first_token_ms,
                                     finished.tokens_per_second)
                            done = True
                if done:
                    with self._cond:
                        if job in self._active:
                            self._active.remove(job)

    def _finish_cancelled(self, job: GenerationJob) -> None:
        job.finish("cancelled")
        log.info("generation cancelled (%s) after %d tokens, %.0f ms: %s",
                 job.call_id or "-", job.completion_tokens,
                 (time.perf_counter() - job.arrived) * 1000, job.cancel_reason or "cancelled")
        dlog.debug_state({"call_id": job.call_id, "tokens": job.completion_tokens,
                          "reason": job.cancel_reason}, "cancelled-generation")
