"""What a new user sees when something is off: one clear line that names the cause, no
traceback, and plain log files (colour only on a terminal)."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from opensips_ai_core.config import BotConfigError, load_bot_config
from voice_common.logs import configure_logging
from voice_testkit.procs import ROOT, free_port

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_dev_test_help_names_only_paths_that_exist() -> None:
    result = subprocess.run([str(ROOT / "scripts" / "dev-test.sh"), "--help"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0
    paths = re.findall(r"\btests/[\w/.-]+", result.stdout)
    assert paths, result.stdout
    assert [p for p in paths if not (ROOT / p).exists()] == []
    assert "--fast" in result.stdout


def test_a_bad_bot_variable_is_blamed_not_the_file() -> None:
    with pytest.raises(BotConfigError) as err:
        load_bot_config(ROOT / "core" / "bot.toml", environ={"BOT_TEMPERATURE": "hot"})
    message = str(err.value)
    assert message.startswith("BOT_TEMPERATURE='hot' (environment): ")
    assert "bot.toml" not in message


def test_dev_call_with_the_stack_stopped_says_so_in_one_line() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    result = subprocess.run([str(ROOT / "scripts" / "dev-call.sh"), "--tts", nobody,
                             "--asr", nobody, "--sip", nobody, "--timeout", "5", "hello"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is the stack running?" in lines[0] and "UNAVAILABLE" in lines[0]
    assert "AioRpcError" not in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_logs_are_plain_in_a_file_and_coloured_on_a_terminal(root_logging, monkeypatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    to_file = io.StringIO()  # as a log file or a pipe: not a terminal
    configure_logging("svc", development=True, level="DEBUG", stream=to_file)
    logging.getLogger("t").warning("plain")
    assert "plain" in to_file.getvalue() and not ANSI.search(to_file.getvalue())

    leader, follower = os.openpty()
    with open(follower, "w", closefd=True) as terminal:
        configure_logging("svc", development=True, level="DEBUG", stream=terminal)
        logging.getLogger("t").warning("coloured")
        terminal.flush()
        written = os.read(leader, 4096).decode()
    os.close(leader)
    assert "coloured" in written and ANSI.search(written)

    monkeypatch.setenv("NO_COLOR", "1")
    leader, follower = os.openpty()
    with open(follower, "w", closefd=True) as terminal:
        configure_logging("svc", development=True, level="DEBUG", stream=terminal)
        logging.getLogger("t").warning("asked plain")
        terminal.flush()
        written = os.read(leader, 4096).decode()
    os.close(leader)
    assert "asked plain" in written and not ANSI.search(written)
