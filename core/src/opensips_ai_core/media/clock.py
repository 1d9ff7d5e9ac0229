"""The media clock: one thread that sends every call's RTP frames on time.

The pacers used to run as tasks on the core's event loop, so every call's packets
waited behind whatever the loop was doing (gRPC messages, decoding, SIP): with ten
calls, bursts of that work delayed all of them at once by 5-100 ms. This thread
only wakes at the next frame time, takes the GIL for the few microseconds a frame
costs, and sleeps again; the core shortens the interpreter's switch interval so it
gets the GIL promptly (app.py).

Written here rather than taken from a library: what is needed is a deadline heap and
a condition variable, and no maintained package does RTP pacing outside an event loop.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)


class Clocked(Protocol):
    def on_clock(self, now: float) -> float | None:
        """Do what is due at `now`; return the next deadline (time.monotonic), None to stop."""


class MediaClock:
    """Calls each registered object at the deadlines it asks for, from one daemon thread."""

    _shared: MediaClock | None = None
    _shared_lock = threading.Lock()
    # SCHED_FIFO priority of the clock thread (1-99; 0 keeps the normal scheduler): low,
    # it only has to beat ordinary processes. CORE_MEDIA_CLOCK_RT_PRIORITY sets it.
    realtime_priority = 10

    def __init__(self, name: str = "rtp-clock") -> None:
        self.name = name
        self._heap: list[tuple[float, int, Clocked]] = []
        self._order = itertools.count()
        self._members: set[int] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls) -> MediaClock:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = MediaClock()
            return cls._shared

    def add(self, member: Clocked, first_deadline: float) -> None:
        with self._cond:
            self._members.add(id(member))
            heapq.heappush(self._heap, (first_deadline, next(self._order), member))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, member: Clocked) -> None:
        """No call to `member` starts after this returns (one in progress may finish)."""
        with self._cond:
            self._members.discard(id(member))
            self._heap = [entry for entry in self._heap if entry[2] is not member]
            heapq.heapify(self._heap)

    def _raise_priority(self) -> None:
        """Real-time scheduling for this thread where allowed (CAP_SYS_NICE), as media
        servers do for their timing threads: it sleeps nearly always, and when a frame is
        due it must not queue behind the recognizer's or the synthesizer's processes."""
        policy = getattr(os, "SCHED_FIFO", None)
        priority = self.realtime_priority
        if policy is None or not priority:
            return
        try:
            os.sched_setscheduler(0, policy, os.sched_param(priority))
        except (OSError, AttributeError) as err:
            log.info("media clock at normal priority (SCHED_FIFO refused: %s)", err)
        else:
            log.info("media clock thread runs with SCHED_FIFO priority %d", priority)

    def __len__(self) -> int:
        with self._cond:
            return len(self._members)

    def _run(self) -> None:
        self._raise_priority()
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, member = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    # Woken early by add(): look at the heap again.
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            try:
                following = member.on_clock(time.monotonic())
            except Exception:
                log.exception("media clock: %r failed; it is no longer clocked", member)
                following = None
            with self._cond:
                if following is not None and id(member) in self._members:
                    heapq.heappush(self._heap, (following, next(self._order), member))
                else:
                    self._members.discard(id(member))
