"""voice_common.launch: a service that does not import waits for a fix instead of dying,
in development only; and hot reload's filter ignores what is not source."""

from __future__ import annotations

import os
from pathlib import Path

from watchfiles import Change

from tests.support.procs import base_env, python_module, running, wait_until
from voice_common.hotreload import SourceFilter
from voice_common.launch import env_prefix


def test_prefix_of_each_service() -> None:
    assert [env_prefix(m) for m in ("asr_service", "llm_service", "tts_service",
                                    "opensips_ai_core", "tests.devenv.fixture_service")] == [
        "ASR", "LLM", "TTS", "CORE", "FIXTURE"]


def test_source_filter_ignores_caches_swap_and_runtime_files(tmp_path: Path) -> None:
    keep = SourceFilter()
    base = str(tmp_path)
    ignored = ["a.swp", "a.py~", ".#a.py", "4913", "x.pyc", "__pycache__/x.py",
               ".git/config", ".dev/logs/a.py", "notes.txt", "a.py.tmp"]
    kept = ["a.py", "svc/b.py", "c.proto", "bot.toml", "opensips.cfg"]
    assert [p for p in ignored if keep(Change.modified, os.path.join(base, p))] == []
    assert [p for p in kept if keep(Change.modified, os.path.join(base, p))] == kept


def _module(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken_svc.py"
    path.write_text(text)
    return path


def test_outside_development_an_import_error_is_fatal(tmp_path: Path, logdir: Path) -> None:
    _module(tmp_path, "def main(:\n")
    env = base_env(PYTHONPATH=str(tmp_path), DEVELOPMENT_MODE="0", BROKEN_HOT_RELOAD="1")
    with running(python_module("voice_common.launch", "broken_svc"), env,
                 logdir / "l.log") as proc:
        assert proc.wait(30) == 1
        assert "SyntaxError" in proc.output()


def test_a_syntax_error_waits_for_the_fix_then_exits_0(tmp_path: Path, logdir: Path) -> None:
    path = _module(tmp_path, "import sys\n\ndef main() -> int:\n    return 7\n\nif (:\n")
    env = base_env(PYTHONPATH=str(tmp_path), DEVELOPMENT_MODE="1", BROKEN_HOT_RELOAD="1",
                   HOT_RELOAD_QUIET_MS="100")
    with running(python_module("voice_common.launch", "broken_svc"), env,
                 logdir / "l.log") as proc:
        wait_until(lambda: "waiting for a change" in proc.output(), 30,
                   message="the launcher to wait")
        out = proc.output()
        assert f"broken_svc cannot start: SyntaxError at {path}:6" in out
        assert proc.popen.poll() is None  # still there, not crash-looping
        path.write_text("def main() -> int:\n    return 7\n")
        assert proc.wait(30) == 0
        assert f"Hot-reload: {path} changed" in proc.output()


def test_a_working_module_runs_its_main_with_arguments(tmp_path: Path, logdir: Path) -> None:
    _module(tmp_path, "import sys\n\ndef main() -> int:\n    print('args', sys.argv[1:])\n"
                      "    return 5\n")
    env = base_env(PYTHONPATH=str(tmp_path), DEVELOPMENT_MODE="1", BROKEN_HOT_RELOAD="1")
    with running(python_module("voice_common.launch", "broken_svc", "--x", "1"), env,
                 logdir / "l.log") as proc:
        assert proc.wait(30) == 5
        assert "args ['--x', '1']" in proc.output()
