"""Development and production logging, captured from a real handler."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from voice_common import get_development_logger
from voice_common.config import ServiceSettings
from voice_common.logs import call_id_var, configure_logging, resolve_level

DEV_LINE = re.compile(
    r"^(?P<color>\x1b\[[0-9;]*m)?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \| (?P<level>[A-Z]+ *) \| "
    r"(?P<name>.{18,}) \| (?P<func>\w+):(?P<line>\d+ *) \| (?P<msg>.*?)(\x1b\[0m)?$"
)


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def capture(development: bool, level: str = "DEBUG", color: bool = True) -> io.StringIO:
    stream = io.StringIO()
    configure_logging("test-svc", development=development, level=level, stream=stream, color=color)
    return stream


def connect_to_service() -> None:
    logging.getLogger("grpc_clients.asr").debug("message")


def test_development_format_matches_the_guide(restore_root_logging):
    stream = capture(True, color=False)
    connect_to_service()
    line = stream.getvalue().rstrip("\n")
    # 2024-01-15 10:30:45,123 | DEBUG    | grpc_clients.asr   | connect_to_service:42   | message
    match = DEV_LINE.match(line)
    assert match, line
    assert match["level"] == "DEBUG   "
    assert match["name"] == "grpc_clients.asr  "
    assert match["func"] == "connect_to_service"
    assert len(match["line"]) == 4 and match["line"].strip().isdigit()
    assert match["msg"] == "message"


@pytest.mark.parametrize(
    ("level", "ansi"),
    [("DEBUG", "\x1b[36m"), ("INFO", "\x1b[32m"), ("WARNING", "\x1b[33m"), ("ERROR", "\x1b[31m"),
     ("CRITICAL", "\x1b[1;31m")],
)
def test_development_colors(restore_root_logging, level, ansi):
    stream = capture(True)
    logging.getLogger("colors").log(getattr(logging, level), "hello")
    out = stream.getvalue()
    assert out.startswith(ansi), repr(out)
    assert out.rstrip("\n").endswith("\x1b[0m")


def test_production_writes_json_lines_with_call_fields(restore_root_logging):
    stream = capture(False, level="INFO")
    log = logging.getLogger("core.call")
    log.debug("not shown at INFO")
    token = call_id_var.set("call-42")
    try:
        log.info("answered %s", "B2B.1")
    finally:
        call_id_var.reset(token)
    log.warning("no call here")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "core.call"
    assert first["message"] == "answered B2B.1"
    assert first["service"] == "test-svc" and first["call_id"] == "call-42"
    assert re.match(r"\d{4}-\d\d-\d\d", first["timestamp"])
    assert "call_id" not in second
    assert "\x1b[" not in stream.getvalue()


def test_levels_per_service_override_global():
    assert resolve_level(True, None, None) == "DEBUG"
    assert resolve_level(False, None, None) == "INFO"
    assert resolve_level(True, "WARNING", None) == "WARNING"
    assert resolve_level(False, "WARNING", "DEBUG") == "DEBUG"


def test_settings_read_levels_from_environment(monkeypatch):
    class CoreSettings(ServiceSettings):
        model_config = {"env_prefix": "CORE_", "extra": "ignore"}

    monkeypatch.setenv("DEVELOPMENT_MODE", "1")
    monkeypatch.setenv("LOG_LEVEL", "info")
    monkeypatch.setenv("CORE_LOG_LEVEL", "error")
    settings = CoreSettings()
    assert settings.development_mode is True
    assert settings.effective_log_level() == "ERROR"
    monkeypatch.setenv("CORE_LOG_LEVEL", "")
    assert CoreSettings().effective_log_level() == "INFO"


def test_traceback_shows_locals_and_masks_secrets(restore_root_logging):
    stream = capture(True, color=False)

    def handle(request_size: int) -> None:
        api_key = "sk-very-secret-value"  # noqa: F841 - shown masked
        long_text = "x" * 5000  # noqa: F841 - shown truncated
        raise ValueError(f"bad size {request_size}")

    try:
        handle(17)
    except ValueError:
        logging.getLogger("tb").exception("failed")
    out = stream.getvalue()
    assert "ValueError: bad size 17" in out
    assert "request_size = 17" in out
    assert "api_key = '********'" in out
    assert "sk-very-secret-value" not in out
    assert "(5002 chars)" in out
    assert "x" * 300 not in out


def test_development_logger_helpers(restore_root_logging, monkeypatch):
    monkeypatch.setenv("DEVELOPMENT_MODE", "1")
    stream = capture(True, color=False)
    log = get_development_logger("grpc_clients.asr")

    class Session:
        def __init__(self) -> None:
            self.call_id = "c1"
            self.buffered = b"\x00" * 960
            self._private = "hidden"

    log.debug_state(Session(), "asr-session")
    log.debug_function_call("connect_to_service", args=("127.0.0.1", 50051),
                            kwargs={"audio": b"\x01" * 320})
    log.debug_performance("asr_final", 10.0, 10.0125)
    log.debug_data_flow("rtp->asr", "pcm16", 320)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    state, call, perf, flow = lines
    assert "State asr-session (Session): call_id='c1', buffered=<bytes len=960>" in state
    assert "_private" not in state
    assert "Call connect_to_service('127.0.0.1', 50051, audio=<bytes len=320>)" in call
    assert "Performance asr_final: 12.50 ms" in perf
    assert "Data flow rtp->asr: pcm16, 320 bytes" in flow
    # funcName is the caller of the helper, not the helper itself.
    assert "| test_development_logger_helpers:" in perf
    assert "\\x00" not in stream.getvalue()


def test_development_logger_is_silent_and_cheap_when_off(restore_root_logging, monkeypatch):
    monkeypatch.delenv("DEVELOPMENT_MODE", raising=False)
    stream = capture(True, color=False)
    log = get_development_logger("quiet")
    calls = []

    class Spy:
        def __repr__(self) -> str:
            calls.append(1)
            return "spy"

    log.debug_state(Spy(), "x")
    log.debug_function_call("f", args=(Spy(),))
    log.debug_performance("op", 0.0, 1.0)
    log.debug_data_flow("a", "b", 1)
    assert stream.getvalue() == ""
    assert calls == []  # nothing was even formatted


def test_enable_debug_output_is_the_one_switch(restore_root_logging, monkeypatch):
    # <SVC>_ENABLE_DEBUG: a service's debug output (results, prompts, timings) at DEBUG
    # in production mode at INFO, its own package only; loggers made before and after.
    from voice_common import devlogger

    monkeypatch.delenv("DEVELOPMENT_MODE", raising=False)
    monkeypatch.setattr(devlogger, "_DEBUG_PACKAGES", set())
    package = logging.getLogger("switch_test_service")
    monkeypatch.setattr(package, "level", logging.NOTSET)
    stream = capture(False, level="INFO")
    before = get_development_logger("switch_test_service.results")
    other = get_development_logger("another_service.results")
    before.debug_output("hidden %d", 1)
    assert stream.getvalue() == ""
    devlogger.enable_debug_output("switch_test_service")
    after = get_development_logger("switch_test_service.timing")
    before.debug_output("final %r", "hello")
    after.debug_performance("tts_first_audio", 1.0, 1.25)
    other.debug_output("not this one")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["logger"], r["message"]) for r in lines] == [
        ("switch_test_service.results", "final 'hello'"),
        ("switch_test_service.timing", "Performance tts_first_audio: 250.00 ms"),
    ]
    assert all(r["level"] == "DEBUG" for r in lines)
