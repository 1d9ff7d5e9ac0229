"""Load process-compose.yaml into typed objects; refuse every key the runner does not support.

The models use pydantic with `extra="forbid"`, so an unknown or unsupported key is
an error naming where it is and what is accepted there, instead of being ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """The stack file cannot be run: the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExecProbe(_Strict):
    command: str
    working_dir: str | None = None


class HttpProbe(_Strict):
    host: str = "127.0.0.1"
    path: str = "/"
    scheme: Literal["http", "https"] = "http"
    port: str | None = None
    num_port: int | None = Field(None, ge=1, le=65535)
    status_code: int | None = None

    def port_number(self) -> int:
        if self.num_port is not None:
            return self.num_port
        if self.port is not None and self.port.isdigit():
            return int(self.port)
        raise ValueError(f"http_get needs a numeric port or num_port (got port={self.port!r})")


class Probe(_Strict):
    exec: ExecProbe | None = None
    http_get: HttpProbe | None = None
    initial_delay_seconds: int = Field(0, ge=0)
    period_seconds: int = Field(10, ge=1)
    timeout_seconds: int = Field(1, ge=1)
    success_threshold: int = Field(1, ge=1)
    failure_threshold: int = Field(3, ge=1)

    @field_validator("http_get")
    @classmethod
    def _one_kind(cls, value: HttpProbe | None, info) -> HttpProbe | None:
        if value is not None and info.data.get("exec") is not None:
            raise ValueError("a probe has either exec or http_get, not both")
        if value is not None:
            value.port_number()
        return value


class RestartPolicy(_Strict):
    # exit_on_failure (stop the whole stack) is process-compose's; the others restart or not.
    restart: Literal["always", "on_failure", "exit_on_failure", "no"] = "no"
    backoff_seconds: int = Field(1, ge=0)
    max_restarts: int = Field(0, ge=0)  # 0: unlimited, as in process-compose


class Shutdown(_Strict):
    signal: int = Field(15, ge=1, le=64)
    timeout_seconds: int = Field(10, ge=0)


class Dependency(_Strict):
    condition: Literal[
        "process_started", "process_healthy", "process_completed",
        "process_completed_successfully",
    ]


class LogConfiguration(_Strict):
    """What process-compose needs to write plain lines to log_location, as this runner does.

    The runner appends the process's raw output: only the values that mean exactly
    that are accepted (rotation, timestamps and JSON are process-compose's own)."""

    disable_json: Literal[True] = True
    no_metadata: Literal[True] = True
    no_color: bool = True  # the process's own colors pass through either way
    flush_each_line: Literal[True] = True


class Process(_Strict):
    name: str = ""
    description: str | None = None
    command: str
    working_dir: str | None = None
    environment: list[str] = Field(default_factory=list)
    log_location: str | None = None
    log_configuration: LogConfiguration = LogConfiguration()
    disabled: bool = False
    depends_on: dict[str, Dependency] = Field(default_factory=dict)
    readiness_probe: Probe | None = None
    # process-compose's: Ready at the first output line that contains it (per run).
    ready_log_line: str | None = Field(None, min_length=1)
    liveness_probe: Probe | None = None
    availability: RestartPolicy = RestartPolicy()
    shutdown: Shutdown = Shutdown()

    @field_validator("environment")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        for item in value:
            if "=" not in item:
                raise ValueError(f"environment entry {item!r} is not NAME=VALUE")
        return value


class Project(_Strict):
    version: str | None = None
    name: str | None = None
    is_strict: bool = True
    ordered_shutdown: bool = True
    environment: list[str] = Field(default_factory=list)
    processes: dict[str, Process]


_ESCAPED = "\x00PC_ENV_ESCAPED\x00"
_SPECIAL = set("*#$@!?-0123456789")


def _shell_name(rest: str) -> tuple[str, int]:
    """Go's os.getShellName: the variable name after a `$` and how many bytes it used."""
    if rest[0] == "{":
        if len(rest) > 2 and rest[1] in _SPECIAL and rest[2] == "}":
            return rest[1], 3
        close = rest.find("}", 1)
        if close == 1:
            return "", 2  # "${}": bad syntax, eaten
        if close == -1:
            return "", 1  # "${" without "}": bad syntax, eaten
        return rest[1:close], close + 1
    if rest[0] in _SPECIAL:
        return rest[0], 1
    end = 0
    while end < len(rest) and (rest[end].isascii() and (rest[end].isalnum() or rest[end] == "_")):
        end += 1
    return rest[:end], end


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """process-compose's expansion of the whole file before parsing it (src/loader): `$$`
    is a literal `$`; then Go's os.Expand: `$NAME` and `${...}` become the variable's
    value from process-compose's own environment, or "" (`${A:-b}` looks up a variable
    named "A:-b": no shell defaults); `$1`, `$!`, `$?`... are names too (so ""); a `$`
    before anything else stays."""
    text = text.replace("$$", _ESCAPED)
    out: list[str] = []
    i = 0
    j = 0
    while j < len(text):
        if text[j] == "$" and j + 1 < len(text):
            out.append(text[i:j])
            name, used = _shell_name(text[j + 1:])
            if name:
                out.append(env.get(name, ""))
            elif used == 0:
                out.append("$")
            j += used
            i = j + 1
        j += 1
    out.append(text[i:])
    return "".join(out).replace(_ESCAPED, "$")


def _format(err: ValidationError) -> str:
    lines = []
    for item in err.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            key = item["loc"][-1]
            parent = ".".join(str(part) for part in item["loc"][:-1]) or "top level"
            lines.append(f"unsupported key {key!r} at {parent}: the devstack runner does not "
                         f"implement it (use process-compose itself, or remove the key)")
        else:
            lines.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def parse(text: str, source: str = "<stack>", env: Mapping[str, str] | None = None) -> Project:
    expanded = expand_env(text, os.environ if env is None else env)
    try:
        raw = yaml.safe_load(expanded)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'processes'")
    try:
        project = Project.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format(err)}") from None
    for name, process in project.processes.items():
        object.__setattr__(process, "name", name)
        if process.readiness_probe is not None and process.ready_log_line is not None:
            # process-compose's own words (src/loader/validators.go).
            raise ConfigError(f"{source}: 'ready_log_line' and readiness probe defined in "
                              f"'{name}' are incompatible")
        for dep, spec in process.depends_on.items():
            if dep not in project.processes:
                raise ConfigError(f"{source}: processes.{name}.depends_on: no process {dep!r}")
            target = project.processes[dep]
            if spec.condition == "process_healthy" and target.readiness_probe is None:
                raise ConfigError(f"{source}: processes.{name}.depends_on.{dep}: "
                                  f"process_healthy needs a readiness_probe on {dep!r}")
    start_order(project)  # refuses cycles early
    return project


def health_probe(spec: Process) -> tuple[str, Probe | None]:
    """The probe that tells whether the process answers now: its readiness probe, else
    its liveness probe (a process made ready by `ready_log_line` has no readiness probe)."""
    if spec.readiness_probe is not None:
        return "readiness", spec.readiness_probe
    return "liveness", spec.liveness_probe


def load(path: Path, env: Mapping[str, str] | None = None) -> Project:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    return parse(text, str(path), env)


def start_order(project: Project) -> list[str]:
    """Names in an order where every process comes after what it depends on."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in visiting:
            raise ConfigError(f"dependency cycle: {' -> '.join((*chain, name))}")
        visiting.add(name)
        for dep in project.processes[name].depends_on:
            visit(dep, (*chain, name))
        visiting.discard(name)
        order.append(name)

    for name in project.processes:
        visit(name, ())
    return order


def process_env(project: Project, process: Process, base: Mapping[str, str]) -> dict[str, str]:
    """The environment a process (and its probes) run with: ours, then the project's, its own."""
    env = dict(base)
    for item in (*project.environment, *process.environment):
        key, _, value = item.partition("=")
        env[key] = value
    return env


def working_dir(process: Process, stack_file: Path) -> Path:
    # Relative to the stack file's directory (the repository root for the real stack).
    base = stack_file.resolve().parent
    return (base / process.working_dir).resolve() if process.working_dir else base


def log_path(process: Process, stack_file: Path, runtime_dir: Path) -> Path:
    if process.log_location:
        path = Path(process.log_location)
        return path if path.is_absolute() else stack_file.resolve().parent / path
    return runtime_dir / "logs" / f"{process.name}.log"
