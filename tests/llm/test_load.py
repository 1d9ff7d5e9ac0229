"""Cancellation, fairness and the bounded queue, on a server that always writes long replies.

LLM_IGNORE_EOS=1 makes every generation run to max_new_tokens (512 here), which the
demo model's short answers would otherwise never reach.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import grpc
import pytest

from tests.llm.conftest import collect, request, start_server
from voice_testkit.procs import wait_until
from voiceai.llm.v1 import llm_pb2


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_build):
    # LLM_MODEL names the built directory: the path any local model takes.
    yield from start_server(
        tmp_path_factory, demo_build, "load", LLM_MODEL=str(demo_build.model_dir),
        LLM_IGNORE_EOS="1", LLM_MAX_ACTIVE="2",
        LLM_MAX_QUEUE="1", LLM_ENABLE_DEBUG="1", DEVELOPMENT_MODE="1", LLM_THREADS="1",
    )


LONG = 512


@dataclass
class Stream:
    """A Generate call read on its own thread, so the test can watch it progress."""

    call: grpc.Future
    first_delta: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    deltas: list[str] = field(default_factory=list)
    done: llm_pb2.GenerationTimings | None = None
    error: grpc.RpcError | None = None

    @classmethod
    def open(cls, stub, req: llm_pb2.GenerateRequest) -> Stream:
        stream = cls(stub.Generate(req, timeout=120))
        threading.Thread(target=stream._read, daemon=True).start()
        return stream

    def _read(self) -> None:
        try:
            for response in self.call:
                if response.HasField("delta"):
                    self.deltas.append(response.delta)
                    self.first_delta.set()
                else:
                    self.done = response.done
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.finished.set()


def _wait(event: threading.Event, what: str, timeout: float = 60) -> None:
    assert event.wait(timeout), f"timed out waiting for {what}"


def test_cancel_mid_generation_stops_within_a_step_and_is_logged(server):
    stream = Stream.open(server.stub, request("what is my balance", call_id="cancel-me",
                                              max_new_tokens=LONG))
    _wait(stream.first_delta, "the first delta")
    assert stream.done is None  # still generating: deltas stream before the end
    stream.call.cancel()
    _wait(stream.finished, "the cancelled stream to close")
    assert stream.error is not None and stream.error.code() == grpc.StatusCode.CANCELLED
    line = wait_until(
        lambda: re.search(r"generation cancelled \(cancel-me\) after (\d+) tokens",
                          server.proc.output()), 30, message="the cancellation log line")
    assert int(line.group(1)) < LONG
    # The slot is free again: the next request is served at once.
    _deltas, done = collect(server.stub, request("hello", max_new_tokens=4), timeout=10)
    assert done.completion_tokens == 4 and done.finish_reason == "length"


def test_short_generation_is_not_starved_by_a_long_one(server):
    long = Stream.open(server.stub, request("when are you open", call_id="long",
                                            max_new_tokens=LONG))
    _wait(long.first_delta, "the long generation to start")
    short = Stream.open(server.stub, request("goodbye", call_id="short", max_new_tokens=8))
    _wait(short.finished, "the short generation")
    # Interleaved token by token: the short one ends while the long one is still going.
    assert short.error is None and short.done is not None
    assert short.done.completion_tokens == 8
    assert not long.finished.is_set()
    _wait(long.finished, "the long generation")
    assert long.error is None and long.done is not None
    assert long.done.completion_tokens == LONG and long.done.finish_reason == "length"


def test_full_queue_answers_resource_exhausted(server):
    active = [Stream.open(server.stub, request("hello", call_id=f"busy-{i}", max_new_tokens=LONG))
              for i in range(2)]
    for stream in active:
        _wait(stream.first_delta, "both slots to be busy")
    # Two generate (LLM_MAX_ACTIVE=2), one may wait (LLM_MAX_QUEUE=1): of two more,
    # whichever the server sees second is refused.
    extra = [Stream.open(server.stub, request("hello", call_id=f"extra-{i}", max_new_tokens=4))
             for i in range(2)]
    for stream in extra:
        _wait(stream.finished, "the extra requests")
    refused = [s for s in extra if s.error is not None]
    served = [s for s in extra if s.error is None]
    assert len(refused) == 1 and len(served) == 1
    assert refused[0].error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "LLM_MAX_QUEUE=1" in refused[0].error.details()
    assert served[0].done is not None and served[0].done.queue_ms > 0
    for stream in active:
        stream.call.cancel()
        _wait(stream.finished, "cancelled busy streams")


def test_debug_logs_prompts_and_token_timings(server):
    collect(server.stub, request("what are your opening hours", call_id="debug-me"))
    output = server.proc.output()
    assert re.search(r"prompt \(debug-me, \d+ tokens\): .*what are your opening hours", output)
    assert re.search(r"Performance token 1 \(debug-me\): [\d.]+ ms", output)
