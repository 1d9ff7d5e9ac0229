"""The runner refuses what it does not implement, clearly, before starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack import config
from voice_testkit.procs import ROOT

MINIMAL = """
processes:
  one:
    command: sleep 1
{extra}
"""


def parse(extra: str = "", **env: str) -> config.Project:
    return config.parse(MINIMAL.format(extra=extra), "t.yaml", env)


@pytest.mark.parametrize(("extra", "key", "where"), [
    ("    restart_policy: always", "restart_policy", "processes.one"),
    ("    is_daemon: true", "is_daemon", "processes.one"),
    ("    readiness_probe:\n      exec:\n        cmd: x", "cmd", "processes.one.readiness_probe.exec"),
    ("    shutdown:\n      command: kill", "command", "processes.one.shutdown"),
    ("    availability:\n      exit_on_end: true", "exit_on_end", "processes.one.availability"),
    ("log_level: debug", "log_level", "top level"),
    ("    log_configuration:\n      rotation:\n        max_size_mb: 1", "rotation",
     "processes.one.log_configuration"),
])
def test_unsupported_keys_are_refused_naming_key_and_place(extra, key, where) -> None:
    with pytest.raises(config.ConfigError) as err:
        parse(extra)
    message = str(err.value)
    assert f"unsupported key {key!r} at {where}" in message
    assert message.startswith("t.yaml: ")


def test_bad_values_are_refused() -> None:
    with pytest.raises(config.ConfigError, match=r"availability\.restart"):
        parse("    availability:\n      restart: sometimes")
    with pytest.raises(config.ConfigError, match=r"log_configuration\.disable_json"):
        parse("    log_configuration:\n      disable_json: false")
    with pytest.raises(config.ConfigError, match="not NAME=VALUE"):
        parse("    environment:\n      - JUSTANAME")


def test_dependencies_are_checked() -> None:
    with pytest.raises(config.ConfigError, match="no process 'ghost'"):
        parse("    depends_on:\n      ghost:\n        condition: process_started")
    with pytest.raises(config.ConfigError, match="process_healthy needs a readiness_probe"):
        config.parse("processes:\n  a:\n    command: 'true'\n  b:\n    command: 'true'\n"
                     "    depends_on:\n      a:\n        condition: process_healthy\n", "t", {})
    with pytest.raises(config.ConfigError, match="dependency cycle: a -> b -> a"):
        config.parse("processes:\n  a:\n    command: 'true'\n    depends_on:\n      b:\n"
                     "        condition: process_started\n  b:\n    command: 'true'\n"
                     "    depends_on:\n      a:\n        condition: process_started\n", "t", {})


def test_environment_expansion_follows_process_compose() -> None:
    """process-compose v1.64.1 (src/loader/loader.go) replaces `$$` by a literal `$`, then
    runs Go's os.Expand over the whole file with its own environment: no shell defaults
    (`${A:-b}` names a variable "A:-b"), `$1`/`$!` are variables too."""
    project = parse("    environment:\n      - A=${HOME_X}\n      - B=${MISSING:-fallback}\n"
                    "      - C=$$literal\n      - D=$HOME_X/x\n      - E=$$$HOME_X\n"
                    "      - F=5$\n      - G=$1$!x\n      - H=$ sign", HOME_X="/h")
    assert project.processes["one"].environment == [
        "A=/h", "B=", "C=$literal", "D=/h/x", "E=$/h", "F=5$", "G=x", "H=$ sign"]


def test_command_variables_come_from_the_runner_environment_not_the_process(
        tmp_path: Path) -> None:
    """As process-compose does, `$VAR` in `command:` is expanded from the runner's own
    environment before bash runs it: a variable set only in the process's `environment:`
    comes out empty; `$$VAR` leaves it to bash, which sees the process's environment."""
    out = tmp_path / "out"
    stack = tmp_path / "stack.yaml"
    stack.write_text(f"""
processes:
  one:
    command: echo "outer=$OUTER_X inner=$INNER_X escaped=$$INNER_X" > {out}
    environment:
      - INNER_X=from-process
""")
    runtime = tmp_path / "rt"
    env = {"PYTHONPATH": str(ROOT / "scripts"), "PATH": "/usr/bin:/bin", "OUTER_X": "from-runner"}
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "up", "-f", str(stack), "--runtime-dir",
         str(runtime), "--backoff-floor", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_text() == "outer=from-runner inner= escaped=from-process\n"


def test_ready_log_line_is_accepted_but_not_with_a_readiness_probe() -> None:
    project = parse('    ready_log_line: "one SERVING"')
    assert project.processes["one"].ready_log_line == "one SERVING"
    assert config.health_probe(project.processes["one"]) == ("liveness", None)
    # process-compose refuses both at once (src/loader/validators.go), in these words.
    with pytest.raises(config.ConfigError, match="'ready_log_line' and readiness probe "
                                                 "defined in 'one' are incompatible"):
        parse('    ready_log_line: "one SERVING"\n    readiness_probe:\n      exec:\n'
              '        command: "true"')
    with pytest.raises(config.ConfigError, match="ready_log_line"):
        parse('    ready_log_line: ""')


def test_up_refuses_an_unknown_key_and_starts_nothing(tmp_path: Path) -> None:
    stack = tmp_path / "bad.yaml"
    stack.write_text(MINIMAL.format(extra="    watch:\n      paths: [src]"))
    runtime = tmp_path / "rt"
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "up", "--detach", "-f", str(stack),
         "--runtime-dir", str(runtime)],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT / "scripts"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "unsupported key 'watch' at processes.one" in result.stderr
    assert not (runtime / "devstack.json").exists()
