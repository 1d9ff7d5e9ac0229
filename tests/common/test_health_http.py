"""The runtime's HTTP health endpoint (<PREFIX>_HEALTH_HTTP_PORT) and the development fast
exit, run for real as subprocesses on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.common.test_runtime import ECHO, _open_stream, echo_env
from voice_testkit.procs import (
    base_env,
    free_port,
    health_status,
    python_module,
    running,
    wait_serving,
    wait_until,
)
from voiceai.asr.v1 import asr_pb2

ATEXIT_SERVICE = python_module("voice_common.launch", "--prefix", "ECHO",
                               "tests.common.atexit_service")


def http(url: str, method: str = "GET") -> tuple[int, str] | None:
    """(status, body) of one request; None when nothing accepts the connection."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def port_is_free(port: int) -> bool:
    """Nothing listens on or holds 127.0.0.1:`port` (a connection in TIME_WAIT does not count:
    a restarted server binds with SO_REUSEADDR, as aiohttp and gRPC do)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_http_health_follows_warm_up_and_only_serves_health(logdir):
    port, http_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}/health"
    warmed = logdir / "warmed"  # the warm-up lasts until the test creates it
    env = echo_env(port, ECHO_WARMUP_UNTIL=str(warmed), ECHO_HEALTH_HTTP_PORT=str(http_port))
    with running(ECHO, env, logdir / "echo.log") as proc:
        first = wait_until(lambda: http(url), 30, message="a first HTTP health answer")
        assert first == (503, "NOT_SERVING\n"), proc.output()
        warmed.touch()
        wait_serving(f"127.0.0.1:{port}", proc, timeout=30)
        assert http(url) == (200, "SERVING\n")
        assert http(f"http://127.0.0.1:{http_port}/")[0] == 404
        assert http(f"http://127.0.0.1:{http_port}/health/x")[0] == 404
        assert http(url, method="POST")[0] == 404
        assert f"echo-service health on {url}" in proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.output()
    assert port_is_free(http_port) and port_is_free(port)


def test_http_health_is_503_while_draining_and_the_port_is_released(logdir):
    port = free_port()
    target = f"127.0.0.1:{port}"
    # Port 0: the kernel picks one; the log names it.
    env = echo_env(port, ECHO_GRACE_PERIOD_S="10", ECHO_HEALTH_HTTP_PORT="0")
    with running(ECHO, env, logdir / "echo.log") as proc:
        wait_serving(target, proc)
        found = re.search(r"health on (http://127\.0\.0\.1:(\d+)/health)", proc.output())
        assert found, proc.output()
        url, http_port = found[1], int(found[2])
        assert http(url) == (200, "SERVING\n")
        channel, requests, responses = _open_stream(target)
        requests.put(asr_pb2.RecognizeRequest(audio=b"\0" * 320))
        assert next(responses).partial.text == "320 bytes"

        proc.signal(signal.SIGTERM)
        # Draining with the stream open: gRPC health and HTTP agree on NOT_SERVING.
        wait_until(lambda: health_status(target) != "SERVING", 30, message="NOT_SERVING")
        assert http(url) == (503, "NOT_SERVING\n")
        requests.put(asr_pb2.RecognizeRequest(audio=b"\0" * 640))
        assert next(responses).partial.text == "640 bytes"
        assert http(url) == (503, "NOT_SERVING\n")
        requests.put(None)
        assert list(responses) == []
        assert proc.wait(15) == 0, proc.output()
        channel.close()
    assert http(url) is None
    assert port_is_free(http_port) and port_is_free(port)


def test_health_port_in_use_is_a_clear_error_and_frees_the_grpc_port(logdir):
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        result = subprocess.run(ECHO, env=echo_env(port, ECHO_HEALTH_HTTP_PORT=str(taken)),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"cannot serve health on 127.0.0.1:{taken}" in result.stderr
    assert "Traceback" not in result.stderr
    assert port_is_free(port)


@pytest.mark.parametrize(("value", "expected"), [
    ("abc", "ECHO_HEALTH_HTTP_PORT='abc': Input should be a valid integer, unable to parse "
            "string as an integer"),
    ("70000", "ECHO_HEALTH_HTTP_PORT='70000': Input should be less than or equal to 65535"),
])
def test_bad_health_port_exits_2_with_one_line(value: str, expected: str) -> None:
    env = base_env(ECHO_HEALTH_HTTP_PORT=value)
    result = subprocess.run(ECHO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"echo-service: configuration error: {expected}"], result.stderr


def _stop_with_slow_teardown(logdir: Path, development: str, sleep_s: str, wait_for: str = "",
                             **extra: str) -> tuple[int, str, Path]:
    port = free_port()
    marker = logdir / "teardown-ran"
    env = echo_env(port, DEVELOPMENT_MODE=development, ATEXIT_SLEEP_S=sleep_s,
                   ATEXIT_MARKER=str(marker), **extra)
    with running(ATEXIT_SERVICE, env, logdir / "service.log") as proc:
        wait_serving(f"127.0.0.1:{port}", proc)
        wait_until(lambda: wait_for in proc.output(), 30, message=repr(wait_for))
        proc.signal(signal.SIGTERM)
        # Generous: the teardown alone would take 30 s in development.
        code = proc.wait(15)
        return code, proc.output(), marker


def test_development_exit_skips_the_interpreter_teardown(logdir):
    code, output, marker = _stop_with_slow_teardown(logdir, "1", "30")
    assert code == 0, output
    assert not marker.exists()
    # The log is complete: the last lines were flushed before the exit.
    assert "echo-service stopped" in output
    assert "exit 0 without interpreter teardown (DEVELOPMENT_MODE)" in output


def test_production_exit_keeps_the_interpreter_teardown(logdir):
    code, output, marker = _stop_with_slow_teardown(logdir, "0", "0")
    assert code == 0, output
    assert marker.read_text() == "teardown ran\n"
    assert "echo-service stopped" in output


def test_development_exit_leaves_no_child_process(logdir):
    code, output, _ = _stop_with_slow_teardown(logdir, "1", "0", "stubborn child ready",
                                            STUBBORN_CHILD="1")
    assert code == 0, output
    found = re.search(r"stubborn child pid (\d+)", output)
    assert found, output
    child = int(found[1])
    assert "still runs 5 s after close; killing it" in output

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, 10, message=f"child {child} gone")
