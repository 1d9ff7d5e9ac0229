# Over 400 lines: the thread and process modes behind one interface, kept side by side.
"""Where engine calls run: threads in the service process, or a pool of worker processes.

pocketsphinx's Python binding holds the GIL while it decodes, so threads run its
streams one at a time on one core; Vosk releases the GIL and runs streams in
parallel on threads. `ASR_WORKERS` chooses (`worker_count`): 0 runs every stream
on threads in the service process, N > 0 in N worker processes, unset picks by the
engine (`Engine.holds_gil`).

Both modes give the servicer one small interface (`Recognizers`, `RecognizerStream`):
`new_stream(options)`, then `open`, `accept`, `finish` and `close_soon` per stream.

Process mode: each worker is a one-process `ProcessPoolExecutor`, started with
`spawn` (never `fork`: the service runs grpc.aio threads), which loads the engine
once in its initializer. A stream is pinned to the worker with the fewest open
streams when it opens; a one-process executor runs calls in submission order, so a
stream's calls stay ordered. A worker that dies (segfault, OOM kill) breaks only its
own executor: its streams fail with `WorkerUnavailableError` (the servicer answers
UNAVAILABLE) and a fresh worker takes its place for new streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol, TypeVar

from asr_service.engines import (
    Engine,
    EngineStream,
    RecognitionEvent,
    StreamOptions,
    create_engine,
)
from asr_service.settings import AsrSettings
from voice_common.logs import call_id_var, configure_logging

log = logging.getLogger("asr_service.workers")

T = TypeVar("T")
Timed = tuple[list[RecognitionEvent], float]

# How often a worker checks that the service process is still alive: nothing else
# would tell it (with spawn, a worker holds both ends of its call-queue pipe).
PARENT_CHECK_INTERVAL_S = 0.5
# Shutdown waits this long for a worker to finish its last call before killing it.
WORKER_STOP_TIMEOUT_S = 5.0


class WorkerUnavailableError(RuntimeError):
    """No worker can run the stream: its worker exited (or none has started yet)."""


def worker_count(settings: AsrSettings, engine: Engine) -> int:
    """How many worker processes to run (0: threads in the service process)."""
    if settings.workers is not None:
        return settings.workers
    # Extra processes only pay off when threads cannot decode in parallel; each one
    # loads its own copy of the model, so never more than there can be streams.
    if not engine.holds_gil:
        return 0
    return min(os.cpu_count() or 1, settings.max_concurrent_streams)


def timed_call(work: Callable[[], T]) -> tuple[T, float]:
    """Run one engine call; its result and the milliseconds it took (the servicer's
    stream summary logs them, stream_summary.py: a line per call was one per chunk)."""
    started = time.perf_counter()
    result = work()
    return result, (time.perf_counter() - started) * 1000.0


class RecognizerStream(Protocol):
    """One client stream's recognizer, wherever it runs."""

    async def open(self) -> None: ...

    async def accept(self, pcm: bytes) -> Timed: ...

    async def finish(self) -> Timed: ...

    def close_soon(self) -> None:
        """Release the recognizer without waiting (safe from a cancelled coroutine)."""
        ...


class Recognizers(Protocol):
    """Runs the engine for every stream of the service."""

    def describe(self) -> str: ...

    async def start(self) -> None:
        """Load the engine (health turns SERVING only after this returns)."""
        ...

    def new_stream(self, options: StreamOptions) -> RecognizerStream: ...

    async def close(self) -> None: ...


def create_recognizers(engine: Engine, settings: AsrSettings) -> Recognizers:
    count = worker_count(settings, engine)
    chosen_by = ("ASR_WORKERS" if settings.workers is not None
                 else f"ASR_WORKERS unset: auto for {engine.name}")
    if count == 0:
        return ThreadRecognizers(engine, settings, chosen_by)
    return ProcessRecognizers(engine, settings, count, chosen_by)


# --- threads in the service process ---------------------------------------------------


class ThreadStream:
    """A recognizer in the service process, only ever touched by one thread at a time.

    A per-stream lock serialises its calls, so closing a cancelled stream waits for
    its last chunk (and for an open still in progress).
    """

    def __init__(self, engine: Engine, options: StreamOptions, pool: ThreadPoolExecutor) -> None:
        self.engine = engine
        self.options = options
        self.pool = pool
        self._lock = threading.Lock()
        self._stream: EngineStream | None = None
        self._closed = False

    def _open_locked(self) -> None:
        with self._lock:
            if not self._closed:
                self._stream = self.engine.open_stream(self.options)

    def _timed_locked(self, work: Callable[[EngineStream], list[RecognitionEvent]]) -> Timed:
        # run_in_executor does not carry the stream's context: the engine's own log lines
        # (end of turn) name the call as the process workers' do.
        call_id_var.set(self.options.call_id or None)
        with self._lock:
            stream = self._stream
            if stream is None:
                raise RuntimeError("recognizer is closed")
            return timed_call(lambda: work(stream))

    def _close_locked(self) -> None:
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:
                log.exception("closing a %s recognizer failed", self.engine.name)

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, self._open_locked)

    async def accept(self, pcm: bytes) -> Timed:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, self._timed_locked, lambda stream: stream.accept(pcm))

    async def finish(self) -> Timed:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, self._timed_locked, lambda stream: stream.finish())

    def close_soon(self) -> None:
        try:
            self.pool.submit(self._close_locked)
        except RuntimeError:  # pool already shut down at process exit
            self._close_locked()


class ThreadRecognizers:
    """Every stream on a thread of its own (one per allowed stream) in this process."""

    def __init__(self, engine: Engine, settings: AsrSettings, chosen_by: str) -> None:
        self.engine = engine
        self.chosen_by = chosen_by
        self.pool = ThreadPoolExecutor(max_workers=settings.max_concurrent_streams,
                                       thread_name_prefix="asr-stream")

    def describe(self) -> str:
        return f"threads in the service process ({self.chosen_by})"

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, self.engine.load)

    def new_stream(self, options: StreamOptions) -> ThreadStream:
        return ThreadStream(self.engine, options, self.pool)

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()


# --- worker processes: the worker side ------------------------------------------------
# These run in the worker process; the executor calls them by name (they pickle).

_engine: Engine | None = None
_streams: dict[str, tuple[EngineStream, StreamOptions]] = {}


def _exit_when_parent_dies(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_INTERVAL_S)
    # The service is gone (even SIGKILLed): nobody will send work or shut us down.
    os._exit(0)


def init_worker(settings: AsrSettings, parent_pid: int) -> None:
    """Worker initializer: logging like the service, then the engine, loaded once."""
    global _engine
    # The service owns the worker's life: a Ctrl-C or SIGTERM to the service's process
    # group must not kill the worker while the service drains its streams.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging("asr-service", development=settings.development_mode,
                      level=settings.effective_log_level())
    threading.Thread(target=_exit_when_parent_dies, args=(parent_pid,),
                     name="parent-watch", daemon=True).start()
    engine = create_engine(settings)
    engine.load()
    _engine = engine


def worker_ready() -> int:
    """Runs after the initializer: the engine is loaded. The worker's pid."""
    return os.getpid()


def _stream_entry(stream_id: str) -> tuple[EngineStream, StreamOptions]:
    entry = _streams.get(stream_id)
    if entry is None:
        raise RuntimeError("recognizer is closed")
    return entry


def worker_open(stream_id: str, options: StreamOptions) -> None:
    if _engine is None:
        raise RuntimeError("the worker has no engine")
    call_id_var.set(options.call_id or None)
    _streams[stream_id] = (_engine.open_stream(options), options)


def worker_accept(stream_id: str, pcm: bytes) -> Timed:
    stream, options = _stream_entry(stream_id)
    call_id_var.set(options.call_id or None)
    return timed_call(lambda: stream.accept(pcm))


def worker_finish(stream_id: str) -> Timed:
    stream, options = _stream_entry(stream_id)
    call_id_var.set(options.call_id or None)
    return timed_call(stream.finish)


def worker_close(stream_id: str) -> None:
    """Close a stream; a no-op for one that never opened (its open failed or was cancelled)."""
    entry = _streams.pop(stream_id, None)
    if entry is not None:
        entry[0].close()


# --- worker processes: the service side -----------------------------------------------


@dataclass(eq=False)
class Worker:
    """One worker process (a one-process executor) and the streams pinned to it."""

    number: int
    executor: ProcessPoolExecutor
    ready: asyncio.Future[int]
    pid: int | None = None
    open_streams: int = 0
    exited: bool = False

    def label(self) -> str:
        return f"{self.number} (pid {self.pid})" if self.pid else str(self.number)


class ProcessStream:
    """A recognizer in a worker process; its calls go to the worker it is pinned to."""

    def __init__(self, pool: ProcessRecognizers, options: StreamOptions) -> None:
        self.pool = pool
        self.options = options
        self.stream_id = pool.next_stream_id()
        self.worker: Worker | None = None

    async def open(self) -> None:
        self.worker = self.pool.pin()
        try:
            await self.pool.call(self.worker, worker_open, self.stream_id, self.options)
        except WorkerUnavailableError:
            # Nothing was recognised yet, so a fresh worker can take the stream unseen.
            self.pool.unpin(self.worker)
            self.worker = self.pool.pin()
            await self.pool.call(self.worker, worker_open, self.stream_id, self.options)

    async def accept(self, pcm: bytes) -> Timed:
        return await self.pool.call(self._pinned(), worker_accept, self.stream_id, pcm)

    async def finish(self) -> Timed:
        return await self.pool.call(self._pinned(), worker_finish, self.stream_id)

    def _pinned(self) -> Worker:
        if self.worker is None:
            raise RuntimeError("recognizer is closed")
        return self.worker

    def close_soon(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        self.pool.unpin(worker)
        if worker.exited:
            return
        try:
            future = worker.executor.submit(worker_close, self.stream_id)
        except (BrokenProcessPool, RuntimeError):  # the worker died, or the pool shut down
            return
        future.add_done_callback(_log_close_failure)


def _log_close_failure(future: Future[None]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None and not isinstance(error, BrokenProcessPool):
        log.error("closing a recognizer in a worker failed: %s", error)


class ProcessRecognizers:
    """N worker processes, each with the engine loaded; every stream pinned to one."""

    def __init__(self, engine: Engine, settings: AsrSettings, count: int,
                 chosen_by: str) -> None:
        self.engine = engine
        self.settings = settings
        self.count = count
        self.chosen_by = chosen_by
        self.workers: list[Worker] = []
        self._stream_ids = itertools.count(1)
        self._closing = False

    def describe(self) -> str:
        return f"{self.count} worker processes ({self.chosen_by})"

    def next_stream_id(self) -> str:
        return str(next(self._stream_ids))

    def _spawn(self, number: int) -> Worker:
        executor = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker, initargs=(self.settings, os.getpid()))
        # The first call starts the process; it returns once the engine is loaded.
        ready = asyncio.wrap_future(executor.submit(worker_ready))
        worker = Worker(number, executor, ready)
        ready.add_done_callback(lambda done: self._on_ready(worker, done))
        return worker

    def _on_ready(self, worker: Worker, done: asyncio.Future[int]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            worker.pid = done.result()
            log.info("recognizer worker %s loaded %s", worker.label(), self.engine.name)
        elif not self._closing:
            log.error("recognizer worker %d failed to start: %s (its log is above)",
                      worker.number, error)

    async def start(self) -> None:
        # All workers load their engines in parallel; SERVING waits for every one.
        self.workers = [self._spawn(number) for number in range(1, self.count + 1)]
        results = await asyncio.gather(*(w.ready for w in self.workers), return_exceptions=True)
        failed = [w.number for w, r in zip(self.workers, results, strict=True)
                  if isinstance(r, BaseException)]
        if failed:
            raise RuntimeError(f"recognizer worker(s) {failed} could not load the "
                               f"{self.engine.name} engine (see the log above)")

    def new_stream(self, options: StreamOptions) -> ProcessStream:
        return ProcessStream(self, options)

    def pin(self) -> Worker:
        """The worker with the fewest open streams, counting the new one."""
        if not self.workers:  # an RPC that came before warm-up began
            raise WorkerUnavailableError("the recognizer workers are still starting; retry "
                                         "once the service is SERVING")
        worker = min(self.workers, key=lambda w: w.open_streams)
        worker.open_streams += 1
        return worker

    def unpin(self, worker: Worker) -> None:
        worker.open_streams -= 1

    async def call(self, worker: Worker, function: Callable[..., T], *args: object) -> T:
        try:
            if worker.exited:
                raise BrokenProcessPool("replaced")
            return await asyncio.wrap_future(worker.executor.submit(function, *args))
        except BrokenProcessPool as err:
            self._replace(worker, err)
            raise WorkerUnavailableError(f"the recognizer worker {worker.label()} exited; "
                                    "open a new stream") from None

    def _replace(self, worker: Worker, error: BaseException) -> None:
        """A worker died: drop its executor and start a fresh worker in its place."""
        if worker.exited:
            return
        worker.exited = True
        worker.executor.shutdown(wait=False, cancel_futures=True)
        if self._closing:
            return
        log.error("recognizer worker %s exited unexpectedly (%s); its %d open stream(s) end "
                  "with UNAVAILABLE; starting a new worker", worker.label(), error,
                  worker.open_streams)
        index = self.workers.index(worker)
        self.workers[index] = self._spawn(worker.number)

    async def close(self) -> None:
        """Stop every worker; a worker still busy after the timeout is killed."""
        self._closing = True

        def stop(worker: Worker) -> None:
            worker.executor.shutdown(wait=True, cancel_futures=True)

        async def stop_or_kill(worker: Worker) -> None:
            try:
                await asyncio.wait_for(asyncio.to_thread(stop, worker), WORKER_STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("recognizer worker %s did not stop in %.0f s; killing it",
                            worker.label(), WORKER_STOP_TIMEOUT_S)
                if worker.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)

        await asyncio.gather(*(stop_or_kill(worker) for worker in self.workers))
        _stop_resource_tracker()


def _stop_resource_tracker() -> None:
    """`spawn` started multiprocessing's resource tracker, a child that leaves only when it
    reads the end of its pipe: after the service's exit, so it outlived the service in its
    process group (dev-stop found and killed it). Stop and reap it with the workers; a
    later spawn would start a new one."""
    from multiprocessing import resource_tracker

    with contextlib.suppress(OSError, ChildProcessError, AttributeError):
        # Private (and so not in typeshed): there is no public way.
        resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]
