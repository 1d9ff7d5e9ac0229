"""voice_common.launch: outside development a service that does not import fails as
Python does; one that fails soon after start waits the crash backoff before it exits (a
clean exit does not); under hot reload a save keeps the process and SIGTERM exits 0 at
once; the process starts at its start-up nice level and serves at its own; and hot
reload's filter ignores what is not source. (The warm parent itself:
test_warm_parent.py.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from watchfiles import Change

from voice_common.hotreload import SourceFilter
from voice_common.launch import (
    CRASH_WINDOW_S,
    DEFAULT_CRASH_BACKOFF_S,
    crash_backoff_s,
    crash_delay,
    env_prefix,
    reload_enabled,
)
from voice_common.niceness import start_level
from voice_testkit.procs import (
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
    wait_until,
)


def test_prefix_of_each_service() -> None:
    # The core's prefix (CORE) is not derivable from opensips_ai_core: its command passes
    # --prefix CORE (voice_common knows no service by name).
    assert [env_prefix(m) for m in ("asr_service", "llm_service", "tts_service",
                                    "voice_testkit.echo_service")] == [
        "ASR", "LLM", "TTS", "ECHO"]


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


def test_a_working_module_runs_its_main_with_arguments(tmp_path: Path, logdir: Path) -> None:
    _module(tmp_path, "import sys\n\ndef main() -> int:\n    print('args', sys.argv[1:])\n"
                      "    return 5\n")
    env = base_env(PYTHONPATH=str(tmp_path), DEVELOPMENT_MODE="1", BROKEN_HOT_RELOAD="1")
    with running(python_module("voice_common.launch", "broken_svc", "--x", "1"), env,
                 logdir / "l.log") as proc:
        assert proc.wait(30) == 5
        assert "args ['--x', '1']" in proc.output()


# -- crash backoff: the stack restarts at once (backoff_seconds: 0), the launcher throttles --

def test_crash_delay_only_for_a_failure_soon_after_start() -> None:
    assert crash_delay(1, 0.2, 1.5) == 1.5
    assert crash_delay(2, CRASH_WINDOW_S - 0.1, 1.5) == 1.5
    assert crash_delay(1, CRASH_WINDOW_S + 0.1, 1.5) == 0.0  # ran a while: restart at once
    assert crash_delay(0, 0.2, 1.5) == 0.0  # hot reload, SIGTERM


def test_a_bad_crash_backoff_value_falls_back_to_the_default(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SVC_CRASH_BACKOFF_S", "soon")
    assert crash_backoff_s("SVC") == DEFAULT_CRASH_BACKOFF_S
    assert "SVC_CRASH_BACKOFF_S='soon': expected seconds >= 0" in capsys.readouterr().err
    monkeypatch.setenv("SVC_CRASH_BACKOFF_S", "0.25")
    assert crash_backoff_s("SVC") == 0.25


def test_hot_reload_needs_development_mode_and_a_clear_value(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "1")
    monkeypatch.setenv("SVC_HOT_RELOAD", "on")
    assert reload_enabled("SVC")
    monkeypatch.setenv("SVC_HOT_RELOAD", "0")
    assert not reload_enabled("SVC")
    monkeypatch.setenv("SVC_HOT_RELOAD", "maybe")
    assert not reload_enabled("SVC")
    assert ("SVC_HOT_RELOAD='maybe': expected 1/true/yes/on or 0/false/no/off; hot reload off"
            in capsys.readouterr().err)
    monkeypatch.setenv("SVC_HOT_RELOAD", "1")
    monkeypatch.setenv("DEVELOPMENT_MODE", "0")
    assert not reload_enabled("SVC")


def _run_timed(args: list[str], env: dict[str, str], log: Path,
               timeout: float = 60) -> tuple[int, float, str]:
    """Exit code, seconds from spawn to exit (an upper bound of the launcher's run), output."""
    began = time.monotonic()
    with running(args, env, log) as proc:
        code = proc.wait(timeout)
        return code, time.monotonic() - began, proc.output()


def test_a_crash_right_after_start_waits_the_crash_backoff(tmp_path: Path,
                                                          logdir: Path) -> None:
    # main() notes when it ran: from then to the exit the launcher waited the backoff.
    ran_at = tmp_path / "ran_at"
    _module(tmp_path, f"import time\n\ndef main() -> int:\n"
                      f"    open({str(ran_at)!r}, 'w').write(repr(time.time()))\n"
                      f"    return 3\n")
    env = base_env(PYTHONPATH=str(tmp_path), BROKEN_CRASH_BACKOFF_S="2")
    code, _, out = _run_timed(python_module("voice_common.launch", "broken_svc"), env,
                              logdir / "l.log")
    exited_by = time.time()
    assert code == 3
    assert exited_by - float(ran_at.read_text()) >= 2.0  # a lower bound: it waited
    assert "broken_svc exited with 3" in out and "waiting 2 s before exiting" in out


def test_an_exception_right_after_start_is_shown_then_delayed(tmp_path: Path,
                                                             logdir: Path) -> None:
    _module(tmp_path, "def main() -> int:\n    raise RuntimeError('port taken')\n")
    env = base_env(PYTHONPATH=str(tmp_path), BROKEN_CRASH_BACKOFF_S="1.5")
    code, took, out = _run_timed(python_module("voice_common.launch", "broken_svc"), env,
                                 logdir / "l.log")
    assert code == 1 and took >= 1.5
    assert "RuntimeError: port taken" in out
    # The traceback comes first, so the developer reads it while the launcher waits.
    assert out.index("RuntimeError: port taken") < out.index("waiting 1.5 s")


def test_bad_settings_still_exit_2_after_the_backoff(logdir: Path) -> None:
    env = base_env(ECHO_PORT="not-a-port", ECHO_CRASH_BACKOFF_S="1.5")
    code, took, out = _run_timed(
        python_module("voice_common.launch", "--prefix", "ECHO", "voice_testkit.echo_service"),
        env, logdir / "l.log")
    assert code == 2 and took >= 1.5
    assert "configuration error" in out and "ECHO_PORT" in out


def test_a_clean_exit_returns_at_once(tmp_path: Path, logdir: Path) -> None:
    _module(tmp_path, "def main() -> int:\n    return 0\n")
    env = base_env(PYTHONPATH=str(tmp_path), BROKEN_CRASH_BACKOFF_S="120")
    with running(python_module("voice_common.launch", "broken_svc"), env,
                 logdir / "l.log") as proc:
        assert proc.wait(30) == 0  # far below the 120 s a crash would wait
        assert "CRASH_BACKOFF" not in proc.output()


def test_a_hot_reload_keeps_running_and_a_sigterm_exits_0_without_the_backoff(
        tmp_path: Path, logdir: Path) -> None:
    watched = tmp_path / "src"
    watched.mkdir()
    port = free_port()
    env = base_env(ECHO_PORT=str(port), ECHO_CRASH_BACKOFF_S="120", DEVELOPMENT_MODE="1",
                   ECHO_HOT_RELOAD="1", ECHO_WATCH_PATHS=str(watched),
                   HOT_RELOAD_QUIET_MS="100", VOICE_CACHE_DIR=str(tmp_path / "cache"))
    args = python_module("voice_common.launch", "--prefix", "ECHO",
                         "voice_testkit.echo_service")
    with running(args, env, logdir / "reload.log") as proc:
        wait_serving(f"127.0.0.1:{port}", proc)
        time.sleep(0.5)  # the child's watcher arms just after it starts
        (watched / "handler.py").write_text("VALUE = 2\n")
        wait_until(lambda: proc.output().count("SERVING (warm-up") >= 2, 60,
                   message="a second child SERVING")
        assert proc.popen.poll() is None  # the supervised process is still the same
        assert f"Hot-reload: {watched / 'handler.py'} changed" in proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "CRASH_BACKOFF" not in proc.output()


# -- priority: the start at <PREFIX>_START_NICE (default <PREFIX>_NICE), serving at NICE --

def test_the_start_nice_defaults_to_the_nice_and_never_exceeds_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert start_level("SVC", {}) is None  # neither set: the priority is left alone
    assert start_level("SVC", {"SVC_NICE": "10"}) == 10
    assert start_level("SVC", {"SVC_NICE": "10", "SVC_START_NICE": "0"}) == 0
    assert capsys.readouterr().err == ""
    for bad in ("soon", "-1", "11"):
        assert start_level("SVC", {"SVC_NICE": "10", "SVC_START_NICE": bad}) == 10
        assert f"SVC_START_NICE={bad!r}: expected 0 to SVC_NICE (10); starting at " \
            "SVC_NICE" in capsys.readouterr().err
    # A bad <PREFIX>_NICE is the service's to refuse (exit 2, one line): left alone here.
    assert start_level("SVC", {"SVC_NICE": "20"}) is None


def _nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_the_warm_parent_starts_at_the_start_nice_and_its_child_serves_at_the_nice(
        tmp_path: Path, logdir: Path) -> None:
    watched = tmp_path / "src"
    watched.mkdir()
    port = free_port()
    env = base_env(ECHO_PORT=str(port), DEVELOPMENT_MODE="1", ECHO_HOT_RELOAD="1",
                   ECHO_WATCH_PATHS=str(watched), VOICE_CACHE_DIR=str(tmp_path / "cache"),
                   ECHO_NICE="7", ECHO_START_NICE="2")
    args = python_module("voice_common.launch", "--prefix", "ECHO",
                         "voice_testkit.echo_service")
    with running(args, env, logdir / "nice.log") as proc:
        wait_serving(f"127.0.0.1:{port}", proc)
        (child,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        # Levels only ever rise (an unprivileged process cannot lower them again).
        assert _nice_of(proc.pid) == max(os.nice(0), 2)
        assert _nice_of(int(child)) == max(os.nice(0), 7)
