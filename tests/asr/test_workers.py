"""Worker processes (ASR_WORKERS): parallel streams, a dying worker, no orphans, thread mode."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from asr_service.engines.pocketsphinx_engine import PocketsphinxEngine
from asr_service.engines.vosk_engine import VoskEngine
from asr_service.settings import AsrSettings
from asr_service.workers import worker_count
from tests.asr.conftest import asr_service, requires_espeak
from voice_testkit.asr_client import chunks, final_text, transcribe
from voice_testkit.procs import ROOT, Proc, base_env, python_module, wait_until
from voice_testkit.speech import speech_pcm
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

pytestmark = [requires_espeak, pytest.mark.timeout(120)]

SENTENCE = "hello world, please call my office tomorrow"
KEY_WORDS = {"hello", "world", "tomorrow"}
# A phrase list keeps the recognition steady: these tests are about where streams run.
PHRASES = ["hello world", "please", "call my office", "tomorrow", "goodbye", "table"]
# A long utterance, so a stream is still running when its worker is killed.
LONG_SENTENCE = ("hello world, please call my office tomorrow morning, and tell them "
                 "that the meeting about the new table is moved to friday afternoon")


def english(text: str, directory: Path, name: str) -> bytes:
    return speech_pcm(text, "en-us", directory, 16000, name, words_per_minute=150)


def recognized_words(target: str, pcm: bytes) -> set[str]:
    return words_of(final_text(transcribe(target, pcm, 16000, phrases=PHRASES)))


def words_of(text: str) -> set[str]:
    return set(text.lower().split())


def child_pids(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name (which may hold spaces): state, ppid, ...
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            children.append(int(entry.name))
    return children


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def worker_pids(service_pid: int) -> list[int]:
    """The service's worker processes (multiprocessing also runs a resource tracker)."""
    return [c for c in child_pids(service_pid) if "multiprocessing.spawn" in cmdline(c)]


def is_alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def logged_worker_pids(proc: Proc) -> dict[int, int]:
    """Worker number -> pid, from the service's "recognizer worker N (pid P) loaded" lines."""
    found = re.findall(r"recognizer worker (\d+) \(pid (\d+)\) loaded", proc.output())
    return {int(number): int(pid) for number, pid in found}


class LiveStream:
    """A stream paced at real time in a thread; its responses and its end land in a queue."""

    def __init__(self, target: str, pcm: bytes) -> None:
        self.events: queue.Queue[asr_pb2.RecognizeResponse | BaseException | None] = (
            queue.Queue())
        self.responses: list[asr_pb2.RecognizeResponse] = []
        self.error: grpc.RpcError | None = None
        self._channel = grpc.insecure_channel(target)
        self._thread = threading.Thread(target=self._run, args=(pcm,), daemon=True)
        self._thread.start()

    def _requests(self, pcm: bytes) -> Iterator[asr_pb2.RecognizeRequest]:
        yield asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(
            sample_rate_hz=16000, interim_results=True, phrases=PHRASES, call_id="worker-test"))
        for chunk in chunks(pcm, 16000):
            yield asr_pb2.RecognizeRequest(audio=chunk)
            time.sleep(len(chunk) / 2 / 16000)

    def _run(self, pcm: bytes) -> None:
        stub = asr_pb2_grpc.RecognizerStub(self._channel)
        try:
            for response in stub.StreamingRecognize(self._requests(pcm), timeout=60):
                self.events.put(response)
            self.events.put(None)
        except grpc.RpcError as err:
            self.events.put(err)

    def wait_first_response(self) -> None:
        item = self.events.get(timeout=30)
        assert isinstance(item, asr_pb2.RecognizeResponse), item
        self.responses.append(item)

    def result(self) -> None:
        """Wait for the end; responses in `responses`, an RPC error in `error`."""
        while True:
            item = self.events.get(timeout=60)
            if item is None:
                break
            if isinstance(item, grpc.RpcError):
                self.error = item
                break
            self.responses.append(item)
        self._thread.join(5)
        self._channel.close()


def test_auto_picks_processes_for_pocketsphinx_and_threads_for_vosk(tmp_path: Path) -> None:
    auto = AsrSettings(workers=None)
    assert worker_count(auto, PocketsphinxEngine()) == (os.cpu_count() or 1)
    # Never more processes than there may be streams.
    assert worker_count(AsrSettings(max_concurrent_streams=1), PocketsphinxEngine()) == 1
    assert worker_count(auto, VoskEngine(tmp_path)) == 0
    assert worker_count(AsrSettings(workers=3), VoskEngine(tmp_path)) == 3
    assert worker_count(AsrSettings(workers=0), PocketsphinxEngine()) == 0
    assert AsrSettings(workers="").workers is None  # ASR_WORKERS= means unset


def test_four_streams_on_two_workers(tmp_path: Path) -> None:
    pcm = english(SENTENCE, tmp_path, "sentence")
    with asr_service(tmp_path / "asr.log", ASR_ENGINE="pocketsphinx",
                     ASR_WORKERS="2") as (target, proc):
        assert len(worker_pids(proc.pid)) == 2
        with ThreadPoolExecutor(4) as pool:
            heard = list(pool.map(lambda _: recognized_words(target, pcm), range(4)))
        for words in heard:
            assert words >= KEY_WORDS, heard
        # Still the same two workers: none died or was replaced.
        assert sorted(worker_pids(proc.pid)) == sorted(logged_worker_pids(proc).values())
        assert "streams run in 2 worker processes" in proc.output()


def test_killed_worker_ends_only_its_streams(tmp_path: Path) -> None:
    pcm = english(LONG_SENTENCE, tmp_path, "long")
    short = english(SENTENCE, tmp_path, "sentence")
    with asr_service(tmp_path / "asr.log", ASR_ENGINE="pocketsphinx",
                     ASR_WORKERS="2") as (target, proc):
        pids = logged_worker_pids(proc)
        assert sorted(pids) == [1, 2]
        # The first stream pins to worker 1 (both idle), the second to worker 2.
        doomed = LiveStream(target, pcm)
        doomed.wait_first_response()
        survivor = LiveStream(target, pcm)
        survivor.wait_first_response()
        os.kill(pids[1], signal.SIGKILL)
        doomed.result()
        survivor.result()

        assert doomed.error is not None, final_text(doomed.responses)
        assert doomed.error.code() == grpc.StatusCode.UNAVAILABLE
        assert "recognizer worker 1" in doomed.error.details()
        assert "exited; open a new stream" in doomed.error.details()
        assert survivor.error is None, survivor.error
        assert words_of(final_text(survivor.responses)) >= KEY_WORDS

        # A fresh worker replaced the dead one, and new streams work (on either worker).
        wait_until(lambda: len(worker_pids(proc.pid)) == 2, 30, message="a new worker")
        assert pids[1] not in worker_pids(proc.pid)
        with ThreadPoolExecutor(2) as pool:
            heard = list(pool.map(lambda _: recognized_words(target, short), range(2)))
        for words in heard:
            assert words >= KEY_WORDS, heard
        assert "exited unexpectedly" in proc.output()


def test_idle_worker_killed_new_streams_still_open(tmp_path: Path) -> None:
    short = english(SENTENCE, tmp_path, "sentence")
    with asr_service(tmp_path / "asr.log", ASR_ENGINE="pocketsphinx",
                     ASR_WORKERS="2") as (target, proc):
        pids = logged_worker_pids(proc)
        os.kill(pids[2], signal.SIGKILL)
        wait_until(lambda: not is_alive(pids[2]), 30, message="the worker's exit")
        # One of these is pinned to the dead worker: its open moves to a fresh one unseen.
        with ThreadPoolExecutor(2) as pool:
            heard = list(pool.map(lambda _: recognized_words(target, short), range(2)))
        for words in heard:
            assert words >= KEY_WORDS, heard


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    with asr_service(tmp_path / "asr.log", ASR_ENGINE="pocketsphinx",
                     ASR_WORKERS="2") as (_target, proc):
        children = child_pids(proc.pid)
        assert len(worker_pids(proc.pid)) == 2
        # Only the service itself: it must take its workers down.
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        # The workers are joined before the exit; multiprocessing's resource tracker
        # leaves when it reads the end of its pipe, a moment after (slower on a busy CI).
        wait_until(lambda: not [pid for pid in children if is_alive(pid)], 30,
                   message="the service's children to exit")


def test_workers_exit_when_the_service_is_killed(tmp_path: Path) -> None:
    with asr_service(tmp_path / "asr.log", ASR_ENGINE="pocketsphinx",
                     ASR_WORKERS="2") as (_target, proc):
        children = child_pids(proc.pid)
        assert len(worker_pids(proc.pid)) == 2
        proc.popen.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The workers notice the lost parent within a second or so.
        wait_until(lambda: not any(is_alive(pid) for pid in children), 15,
                   message="the workers to exit after the service was killed")


def test_thread_mode_runs_streams_in_the_service_process(tmp_path: Path) -> None:
    pcm = english(SENTENCE, tmp_path, "sentence")
    with asr_service(tmp_path / "asr.log", ASR_ENGINE="pocketsphinx",
                     ASR_WORKERS="0") as (target, proc):
        with ThreadPoolExecutor(4) as pool:
            heard = list(pool.map(lambda _: recognized_words(target, pcm), range(4)))
        for words in heard:
            assert words >= KEY_WORDS, heard
        assert child_pids(proc.pid) == []
        assert "streams run in threads in the service process" in proc.output()


@pytest.mark.parametrize("value", ["-1", "65", "many"])
def test_bad_worker_count_exits_2_with_one_line(value: str) -> None:
    result = subprocess.run(python_module("asr_service"),
                            env=base_env(ASR_PORT="0", ASR_WORKERS=value),
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("asr-service: configuration error:")
    assert f"ASR_WORKERS='{value}'" in lines[0]
