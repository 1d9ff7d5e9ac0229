"""Configuration from environment variables: typed, defaulted, in one class per service.

Each gRPC service subclasses `ServiceSettings` with its own `env_prefix` (``ASR_``,
``LLM_``, ...); the core, which serves no gRPC, subclasses `ProcessSettings` (``CORE_``).
A bad value exits the process with one line naming the variable and the problem, and
exit code 2::

    asr-service: configuration error: ASR_PORT='abc': Input should be a valid integer
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

CONFIG_ERROR_EXIT = 2


def _level(value: Any) -> Any:
    """Accept any case; an empty value means "not set"."""
    if isinstance(value, str):
        return value.strip().upper() or None
    return value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None, BeforeValidator(_level)
]


def _existing_path(value: Path | None) -> Path | None:
    if value is not None and not value.exists():
        raise ValueError(f"path does not exist: {value}")
    return value


ExistingPath = Annotated[Path, AfterValidator(_existing_path)]


def _empty_is_none(value: Any) -> Any:
    """`VAR=` (set but empty) means "not set", as for the log levels."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


OptionalPort = Annotated[Annotated[int, Field(ge=0, le=65535)] | None,
                         BeforeValidator(_empty_is_none)]

# gRPC takes these ages as an int of milliseconds: a week is far within it.
WEEK_S = 7 * 24 * 3600
OptionalSeconds = Annotated[Annotated[float, Field(ge=0, le=WEEK_S)] | None,
                            BeforeValidator(_empty_is_none)]


class ProcessSettings(BaseSettings):
    """What every process of the project reads from its environment (the core too)."""

    model_config = SettingsConfigDict(env_prefix="SVC_", extra="ignore", frozen=True)

    # Shared, unprefixed variables (names as docs/architecture.md lists them).
    development_mode: bool = Field(False, validation_alias="DEVELOPMENT_MODE")
    log_level_global: LogLevel = Field(None, validation_alias="LOG_LEVEL")

    log_level: LogLevel = None
    # `<PREFIX>_HOT_RELOAD` is not a setting: voice_common.launch reads it, before the
    # service (and these settings) load.
    grace_period_s: float = Field(5.0, ge=0, le=300)
    # `<PREFIX>_NICE`: run at this nice level (0-19, raised to it at start), so a
    # machine's real-time work (the core's RTP clock) wins the CPU over batch compute.
    # voice_common.launch starts the process at `<PREFIX>_START_NICE` (0 to this; read
    # there, not a setting), else at this level.
    nice: int = Field(0, ge=0, le=19)

    @classmethod
    def service_name(cls) -> str:
        return cls.model_config.get("title") or cls.__name__

    @classmethod
    def env_name(cls, field: str) -> str:
        info = cls.model_fields[field]
        alias = info.validation_alias
        if isinstance(alias, str):
            return alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    def effective_log_level(self) -> str:
        from voice_common.logs import resolve_level

        return resolve_level(self.development_mode, self.log_level_global, self.log_level)


class ServiceSettings(ProcessSettings):
    """A gRPC service process (voice_common.runtime): where it listens, besides the above."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    # `<PREFIX>_HEALTH_HTTP_PORT`: also answer HTTP GET /health on `host` (200 SERVING,
    # 503 NOT_SERVING): a probe that costs the supervisor no Python start (0: any free port).
    health_http_port: OptionalPort = None
    # `<PREFIX>_ENABLE_DEBUG`: the service's debug output (results, prompts, timings) at
    # DEBUG whatever DEVELOPMENT_MODE and LOG_LEVEL say (voice_common.devlogger).
    enable_debug: bool = False
    # `<PREFIX>_MAX_CONNECTION_AGE_S`: a client connection older than this is asked to go
    # (HTTP/2 GOAWAY; gRPC adds +-10% jitter) and the client reconnects, looking its DNS
    # name up again: replicas added under steady load get their share of new RPCs.
    max_connection_age_s: float = Field(300.0, ge=1, le=WEEK_S)
    # `<PREFIX>_MAX_CONNECTION_AGE_GRACE_S`: how long the RPCs still open on such a
    # connection may go on before it is closed under them. Unset: until the last ends. A
    # call's ASR stream lasts the whole call, so a bound shorter than the longest call
    # would break that stream mid-call (the core reopens it, as after a restart).
    max_connection_age_grace_s: OptionalSeconds = None


S = TypeVar("S", bound=ProcessSettings)


def format_validation_error(cls: type[ProcessSettings], err: ValidationError) -> str:
    problems = []
    for item in err.errors(include_url=False):
        msg = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a check across variables names them in its message
            problems.append(msg)
            continue
        field = str(item["loc"][0])
        env = cls.env_name(field) if field in cls.model_fields else field.upper()
        # Show what the user wrote, not what a validator made of it.
        raw = os.environ.get(env, item.get("input"))
        shown = f"={raw!r}" if isinstance(raw, str | int | float) else ""
        problems.append(f"{env}{shown}: {msg}")
    return "; ".join(problems)


def load_settings(cls: type[S], program: str | None = None) -> S:
    """Read `cls` from the environment; on a bad value print one line and exit 2."""
    program = program or cls.service_name()
    try:
        return cls()
    except ValidationError as err:
        print(
            f"{program}: configuration error: {format_validation_error(cls, err)}",
            file=sys.stderr,
        )
        raise SystemExit(CONFIG_ERROR_EXIT) from None
