"""The shared gRPC runtime, run for real as a subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from voice_testkit.procs import (
    base_env,
    free_port,
    health_status,
    python_module,
    running,
    wait_serving,
    wait_until,
)
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

ECHO = python_module("voice_testkit.echo_service")


def echo_env(port: int, **extra: str) -> dict[str, str]:
    return base_env(ECHO_PORT=str(port), **extra)


def test_serving_only_after_warmup(logdir):
    port = free_port()
    target = f"127.0.0.1:{port}"
    warmed = logdir / "warmed"  # the warm-up lasts until the test creates it
    with running(ECHO, echo_env(port, ECHO_WARMUP_UNTIL=str(warmed)),
                 logdir / "echo.log") as proc:
        # The port answers during warm-up, but NOT_SERVING.
        status = wait_until(
            lambda: (s := health_status(target)) in ("NOT_SERVING", "SERVING") and s, 30,
            message="first health answer")
        assert status == "NOT_SERVING", proc.output()
        assert health_status(target, "voiceai.asr.v1.Recognizer") == "NOT_SERVING"
        # process-compose.yaml's ready_log_line: no line says SERVING before it serves.
        assert "SERVING (warm-up" not in proc.output()
        warmed.touch()
        wait_serving(target, proc, timeout=30)
        assert health_status(target, "voiceai.asr.v1.Recognizer") == "SERVING"
        assert "SERVING (warm-up" in proc.output()


def test_rpcs_are_unavailable_until_warm_up_ends(logdir):
    # Regression: the LLM took requests while its model was loading and failed them for
    # good (INVALID_ARGUMENT); UNAVAILABLE is what a client retries.
    port = free_port()
    target = f"127.0.0.1:{port}"
    with running(ECHO, echo_env(port, ECHO_WARMUP_S="60"), logdir / "echo.log") as proc:
        wait_until(lambda: health_status(target) == "NOT_SERVING", 30,
                   message="health NOT_SERVING during warm-up")
        with grpc.insecure_channel(target) as channel:
            stub = asr_pb2_grpc.RecognizerStub(channel)
            config = asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(
                sample_rate_hz=8000))
            with pytest.raises(grpc.RpcError) as err:
                list(stub.StreamingRecognize(iter([config]), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
        assert "warming up" in err.value.details()
        assert health_status(target) == "NOT_SERVING", proc.output()


def _open_stream(target: str):
    channel = grpc.insecure_channel(target)
    stub = asr_pb2_grpc.RecognizerStub(channel)
    import queue

    requests: queue.Queue = queue.Queue()

    def gen():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    responses = stub.StreamingRecognize(gen())
    return channel, requests, responses


def test_sigterm_lets_open_stream_finish_within_grace(logdir):
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = echo_env(port, ECHO_GRACE_PERIOD_S="10")
    with running(ECHO, env, logdir / "echo.log") as proc:
        wait_serving(target, proc)
        channel, requests, responses = _open_stream(target)
        requests.put(asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(sample_rate_hz=8000)))
        requests.put(asr_pb2.RecognizeRequest(audio=b"\0" * 320))
        assert next(responses).partial.text == "320 bytes"

        proc.signal(signal.SIGTERM)
        # Draining: health says NOT_SERVING, but the open stream keeps working.
        wait_until(lambda: health_status(target) != "SERVING", 30, message="NOT_SERVING")
        requests.put(asr_pb2.RecognizeRequest(audio=b"\0" * 640))
        assert next(responses).partial.text == "640 bytes"
        requests.put(None)  # the client finishes its stream
        assert list(responses) == []
        assert proc.wait(15) == 0, proc.output()
        channel.close()
        assert "draining (SIGTERM)" in proc.output()


def test_sigterm_cancels_stream_after_grace(logdir):
    port = free_port()
    target = f"127.0.0.1:{port}"
    with running(ECHO, echo_env(port, ECHO_GRACE_PERIOD_S="0.5"), logdir / "echo.log") as proc:
        wait_serving(target, proc)
        channel, requests, responses = _open_stream(target)
        requests.put(asr_pb2.RecognizeRequest(audio=b"\0" * 2))
        assert next(responses).partial.text == "2 bytes"
        proc.signal(signal.SIGTERM)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            next(responses)  # the client never finishes: the server must cut it
        assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.ABORTED)
        assert time.monotonic() - started < 10
        requests.put(None)
        assert proc.wait(15) == 0, proc.output()
        channel.close()


def test_health_command_exit_codes(logdir):
    port = free_port()
    target = f"127.0.0.1:{port}"
    cmd = python_module("voice_common.healthcheck", target, "--timeout", "1")
    # Nothing listening: unreachable.
    gone = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 2, gone.stdout + gone.stderr
    warmed = logdir / "warmed"  # the warm-up lasts until the test creates it
    with running(ECHO, echo_env(port, ECHO_WARMUP_UNTIL=str(warmed)),
                 logdir / "echo.log") as proc:
        wait_until(lambda: health_status(target) == "NOT_SERVING", 30, message="NOT_SERVING")
        warming = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert warming.returncode == 1
        assert "NOT_SERVING" in warming.stdout
        warmed.touch()
        wait_serving(target, proc)
        ok = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0 and "SERVING" in ok.stdout
        per_service = subprocess.run(
            [*python_module("voice_common", target, "voiceai.asr.v1.Recognizer")],
            capture_output=True, text=True, timeout=30)
        assert per_service.returncode == 0
        unknown = subprocess.run(
            python_module("voice_common.healthcheck", target, "no.such.Service"),
            capture_output=True, text=True, timeout=30)
        assert unknown.returncode == 1 and "SERVICE_UNKNOWN" in unknown.stdout


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ECHO_PORT", "abc", "ECHO_PORT='abc': Input should be a valid integer"),
        ("ECHO_PORT", "70000", "ECHO_PORT='70000'"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL='loud'"),
        ("DEVELOPMENT_MODE", "maybe", "DEVELOPMENT_MODE='maybe'"),
        ("ECHO_GRACE_PERIOD_S", "-1", "ECHO_GRACE_PERIOD_S='-1'"),
        ("ECHO_MAX_CONNECTION_AGE_S", "0",
         "ECHO_MAX_CONNECTION_AGE_S='0': Input should be greater than or equal to 1"),
        ("ECHO_MAX_CONNECTION_AGE_GRACE_S", "-1", "ECHO_MAX_CONNECTION_AGE_GRACE_S='-1'"),
        ("ECHO_MAX_CONNECTION_AGE_GRACE_S", "forever",
         "ECHO_MAX_CONNECTION_AGE_GRACE_S='forever'"),
    ],
)
def test_bad_environment_value_exits_2_with_one_line(variable, value, expected):
    env = base_env(**{variable: value})
    result = subprocess.run(ECHO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("echo-service: configuration error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(logdir):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(ECHO, env=echo_env(port), capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert sys.executable  # the interpreter that ran it is the test's own


def test_nice_sets_the_service_priority(logdir):
    port = free_port()
    with running(ECHO, echo_env(port, ECHO_NICE="7"), logdir / "echo.log") as proc:
        wait_serving(f"127.0.0.1:{port}", proc)
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # field 19 of proc(5): nice; raised to 7, never lowered (voice_common.niceness)
        assert int(fields[16]) == max(os.nice(0), 7)
        assert "runs at nice" in proc.log_path.read_text()


def test_bad_nice_exits_2_with_one_line() -> None:
    result = subprocess.run(ECHO, env=base_env(ECHO_NICE="20"), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "echo-service: configuration error: ECHO_NICE='20': Input should be less than or "
        "equal to 19"]
