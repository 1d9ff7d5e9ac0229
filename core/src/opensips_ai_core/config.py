"""The core's configuration: process settings from the environment, the bot from a file.

`CoreSettings` (env, prefix CORE_) says where to listen and which services to use.
`BotConfig` (TOML or YAML, CORE_BOT_CONFIG) says who the bot is: persona, greeting,
system prompt, limits. Any bot field can be overridden with `BOT_<FIELD>` in the
environment (e.g. BOT_GREETING, BOT_MAX_CALL_DURATION_S). A bad file or value stops
the start with one clear line and exit code 2.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from voice_common.config import CONFIG_ERROR_EXIT, ExistingPath, ServiceSettings

DEFAULT_BOT_CONFIG = Path(__file__).resolve().parents[2] / "bot.toml"


class CoreSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CORE_", extra="ignore", frozen=True,
                                      title="opensips-ai-core")

    signalling: Literal["sip", "opensips"] = "sip"
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(5080, ge=0, le=65535)
    public_ip: str | None = None  # the address put in SDP; default: the RTP bind address
    rtp_host: str | None = None   # where RTP sockets bind; default: sip_host
    rtp_port_min: int = Field(35000, ge=1024, le=65534)
    rtp_port_max: int = Field(35999, ge=1025, le=65535)
    # SCHED_FIFO priority of the RTP clock thread where the process may have it (root or
    # CAP_SYS_NICE); 0 keeps the normal scheduler.
    media_clock_rt_priority: int = Field(10, ge=0, le=99)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8088, ge=0, le=65535)
    asr_target: str = "127.0.0.1:50051"
    llm_target: str = "127.0.0.1:50052"
    tts_target: str = "127.0.0.1:50053"
    # Deadlines of one LLM generation / one TTS sentence, waiting for a restart included;
    # past them the turn is apologised for instead.
    llm_timeout_s: float = Field(20.0, gt=0, le=600)
    tts_timeout_s: float = Field(20.0, gt=0, le=600)
    bot_config: ExistingPath | None = None
    max_calls: int = Field(100, ge=1, le=10000)
    # OpenSIPS B2B backend (CORE_SIGNALLING=opensips).
    opensips_mi_host: str = Field("127.0.0.1", validation_alias="OPENSIPS_MI_HOST")
    opensips_mi_port: int = Field(8080, ge=1, le=65535, validation_alias="OPENSIPS_MI_PORT")
    event_host: str = "127.0.0.1"
    event_port: int = Field(50060, ge=0, le=65535)
    event_expire_s: int = Field(3600, ge=10, le=86400)

    @model_validator(mode="after")
    def _sdp_address_is_routable(self) -> CoreSettings:
        if self.sdp_address in ("0.0.0.0", "::"):
            raise ValueError("CORE_PUBLIC_IP must be set when RTP binds to a wildcard address "
                             "(the SDP answer needs an address callers can reach)")
        if self.rtp_port_min > self.rtp_port_max:
            raise ValueError(f"CORE_RTP_PORT_MIN ({self.rtp_port_min}) is above "
                             f"CORE_RTP_PORT_MAX ({self.rtp_port_max})")
        return self

    @property
    def rtp_bind_address(self) -> str:
        return self.rtp_host or self.sip_host

    @property
    def sdp_address(self) -> str:
        return self.public_ip or self.rtp_bind_address


class BotConfig(BaseModel):
    """Who the bot is and how a call may go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    persona: str = "Ava, the front desk assistant of Example Bank"
    greeting: str = "Hello, this is Example Bank. How can I help you?"
    system_prompt: str = (
        "You are Ava, the telephone front desk assistant of Example Bank. "
        "Answer in one or two short spoken sentences."
    )
    # The facts the bot may state (hours, cards, policies, what it cannot do), one per
    # line: rendered into the system prompt under a heading (llm_system_prompt).
    knowledge: str = ""
    apology: str = "Sorry, I am having trouble right now. Please say that again."
    silence_prompt: str = "Are you still there?"
    timeout_goodbye: str = "Thank you for calling. Goodbye!"
    goodbye_phrases: tuple[str, ...] = ("goodbye", "bye bye")
    goodbye_marker: str = "[hangup]"
    max_call_duration_s: float = Field(600.0, gt=0)
    silence_timeout_s: float = Field(30.0, gt=0)
    barge_in_min_words: int = Field(1, ge=0, le=20)
    # Start the reply at the recognizer's PAUSE, play it if the final transcript agrees.
    prepare_on_pause: bool = True
    max_history_turns: int = Field(10, ge=0, le=100)
    max_new_tokens: int = Field(64, ge=1, le=512)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    voice: str = ""
    asr_language: str = "en-US"
    asr_phrases: tuple[str, ...] = ()
    dtmf_flush_s: float = Field(1.5, gt=0)

    def llm_system_prompt(self) -> str:
        """The system message the LLM gets: the instructions, then the knowledge, if any."""
        facts = self.knowledge.strip()
        if not facts:
            return self.system_prompt
        return f"{self.system_prompt.strip()}\n\nFacts:\n{facts}"


class BotConfigError(ValueError):
    pass


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_text()
    except OSError as err:
        raise BotConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        is_yaml = path.suffix in (".yaml", ".yml")
        data = (yaml.safe_load(raw) or {}) if is_yaml else tomllib.loads(raw)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        detail = str(err).splitlines()[0]
        kind = "YAML" if is_yaml else "TOML"
        raise BotConfigError(f"{path}: not valid {kind}: {detail}") from None
    if not isinstance(data, dict):
        raise BotConfigError(f"{path}: expected a table of settings at the top level")
    return data.get("bot", data) if isinstance(data.get("bot"), dict) else data


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in BotConfig.model_fields:
        key = f"BOT_{name.upper()}"
        if key in environ:
            value: Any = environ[key]
            if name in ("goodbye_phrases", "asr_phrases"):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            out[name] = value
    return out


def load_bot_config(path: Path | None, environ: dict[str, str] | None = None) -> BotConfig:
    """Read the bot config file (if any), apply BOT_* overrides, validate."""
    environ = dict(os.environ) if environ is None else environ
    data = _read_file(path) if path is not None else {}
    data.update(_env_overrides(environ))
    try:
        return BotConfig.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False):
            where = ".".join(str(p) for p in item["loc"])
            problems.append(f"{where}: {item['msg']}")
        source = str(path) if path is not None else "BOT_* environment"
        raise BotConfigError(f"{source}: {'; '.join(problems)}") from None


def load_bot_config_or_exit(path: Path | None) -> BotConfig:
    try:
        return load_bot_config(path)
    except BotConfigError as err:
        print(f"opensips-ai-core: bot configuration error: {err}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT) from None
