"""The core's configuration: process settings from the environment, the bot from a file.

`CoreSettings` (env, prefix CORE_) says where to listen and which services to use.
`BotConfig` (TOML or YAML, CORE_BOT_CONFIG) says who the bot is: persona, greeting,
system prompt, limits. Any bot field can be overridden with `BOT_<FIELD>` in the
environment (e.g. BOT_GREETING, BOT_MAX_CALL_DURATION_S). A bad file or value stops
the start with one clear line and exit code 2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from opensips_ai_core.grpc_clients.channel import TargetError, grpc_target
from voice_common.config import CONFIG_ERROR_EXIT, ExistingPath, ProcessSettings

DEFAULT_BOT_CONFIG = Path(__file__).resolve().parents[2] / "bot.toml"
# A drain lets calls go on this long by default outside development (deploy/k8s sizes
# terminationGracePeriodSeconds for it).
PRODUCTION_DRAIN_TIMEOUT_S = 900.0


class CoreSettings(ProcessSettings):
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
    # Each service: host:port, a comma-separated list of IP:port (replicas), or a gRPC
    # target such as dns:///asr.example:50051; stored as the gRPC target.
    asr_target: str = "127.0.0.1:50051"
    llm_target: str = "127.0.0.1:50052"
    tts_target: str = "127.0.0.1:50053"
    # Deadlines of one LLM generation / one TTS sentence, waiting for a restart included;
    # past them the turn is apologised for instead.
    llm_timeout_s: float = Field(20.0, gt=0, le=600)
    tts_timeout_s: float = Field(20.0, gt=0, le=600)
    # The audio of sentences the bot says again (greeting, prompts, knowledge lines),
    # kept for 10 minutes within this many MiB (8 kHz: about 65 s of speech per MiB);
    # 0: every sentence is synthesised by the TTS service.
    tts_cache_mb: float = Field(16.0, ge=0, le=4096)
    bot_config: ExistingPath | None = None
    max_calls: int = Field(100, ge=1, le=10000)
    # Streams the ASR service takes at once (its ASR_MAX_CONCURRENT_STREAMS): every call
    # holds one, so calls beyond it are refused with 503 instead of answered unheard.
    asr_max_streams: int = Field(16, ge=1, le=1024)
    # Drain (SIGTERM or POST /drain): new calls refused, active ones go on this long, then
    # each is ended politely (closing line within CORE_GRACE_PERIOD_S, then BYE).
    # Unset: PRODUCTION_DRAIN_TIMEOUT_S, or 0 with DEVELOPMENT_MODE=1, so that a hot
    # reload (a stop like any other) stays as short as CORE_GRACE_PERIOD_S.
    drain_timeout_s: float | None = Field(None, ge=0, le=86400)
    # OpenSIPS B2B backend (CORE_SIGNALLING=opensips).
    opensips_mi_host: str = Field("127.0.0.1", validation_alias="OPENSIPS_MI_HOST")
    opensips_mi_port: int = Field(8080, ge=1, le=65535, validation_alias="OPENSIPS_MI_PORT")
    event_host: str = "127.0.0.1"
    event_port: int = Field(50060, ge=0, le=65535)
    event_expire_s: int = Field(3600, ge=10, le=86400)
    # The script's gate closes this long after the core's last renewal (every second):
    # how soon a core that died has its callers answered 503 by OpenSIPS (gate.py).
    opensips_gate_lease_s: int = Field(10, ge=3, le=3600)
    # The HTTP call API (POST/GET/DELETE /calls/...): a bearer token. Without one the
    # API is served only on a loopback CORE_HTTP_HOST (`call_api_allowed`).
    api_token: str | None = Field(None, min_length=16, repr=False)
    # Digest credentials for outbound calls of the direct SIP backend (401/407).
    sip_auth_user: str | None = None
    sip_auth_password: str | None = Field(None, repr=False)
    # OpenSIPS backend, outbound calls: OpenSIPS' own SIP socket ("udp:IP:PORT") for the
    # Contact of ua_session_client_start, where the script sets no advertised_contact.
    opensips_outbound_socket: str | None = Field(None, pattern=r"^(udp|tcp):[^\s:]+:\d+$")
    # Recordings and transcripts of the calls whose bot asks (record_audio,
    # save_transcript), named by call id; and the post-call webhook of every call whose
    # bot names none of its own (recording/archive.py).
    recordings_dir: Path = Path("recordings")
    webhook_url: str | None = Field(None, pattern=r"^https?://\S+$")
    webhook_attempts: int = Field(5, ge=1, le=20)
    webhook_timeout_s: float = Field(10.0, gt=0, le=300)
    webhook_backoff_s: float = Field(1.0, gt=0, le=60)  # the first retry's delay

    @field_validator("asr_target", "llm_target", "tts_target")
    @classmethod
    def _grpc_target(cls, value: str) -> str:
        try:
            return grpc_target(value)
        except TargetError as err:
            raise ValueError(str(err)) from None

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
    def drain_timeout(self) -> float:
        """How long active calls may go on once the core drains (seconds)."""
        if self.drain_timeout_s is not None:
            return self.drain_timeout_s
        return 0.0 if self.development_mode else PRODUCTION_DRAIN_TIMEOUT_S

    @property
    def call_api_allowed(self) -> bool:
        """The call API places calls: open only on loopback, elsewhere behind a token."""
        host = self.http_host.strip("[]")
        loopback = host == "localhost"
        with contextlib.suppress(ValueError):
            loopback = ipaddress.ip_address(host).is_loopback
        return loopback or bool(self.api_token)

    @property
    def rtp_bind_address(self) -> str:
        return self.rtp_host or self.sip_host

    @property
    def sdp_address(self) -> str:
        return self.public_ip or self.rtp_bind_address


BUILTIN_TOOLS = ("transfer", "hang_up")


def _http_base_url(value: str) -> str:
    """`value` if it is an http(s) URL with a host (and a valid port), else ValueError."""
    problem = ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as err:
        problem = str(err)
    else:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "expected http://HOST[:PORT][/PATH]"
        elif parts.query or parts.fragment or any(c.isspace() for c in value):
            problem = "no query, fragment or spaces allowed"
    if problem:
        raise ValueError(f"{value!r} is not a base URL: {problem}")
    return value


def tool_url(base_url: str, url: str) -> str:
    """Where a tool is POSTed: `url` itself, or a path ("/get_balance") after `base_url`."""
    return url if url.startswith(("http://", "https://")) else base_url.rstrip("/") + url


class ToolConfig(BaseModel):
    """A tool the LLM may call: the core POSTs the arguments (JSON) to `url` and feeds
    the JSON reply back to the LLM (pipeline/tools.py). `url` is absolute, or a path
    ("/get_balance") after the bot's `tools_base_url`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field("", max_length=1000)
    # JSON schema of the arguments (an object); the call's arguments are checked against it.
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    url: str = Field(pattern=r"^(https?://\S+|/\S*)$")
    timeout_s: float = Field(5.0, gt=0, le=60)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_TOOLS:
            raise ValueError(f"tool name {value!r} is built in ({', '.join(BUILTIN_TOOLS)})")
        return value

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as err:
            raise ValueError(f"parameters is not a valid JSON schema: {err.message}") from None
        return value


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
    # Spoken to the calls still going when a drain's time is up, before the BYE.
    drain_goodbye: str = "Sorry, I have to end this call now. Please call again. Goodbye!"
    goodbye_phrases: tuple[str, ...] = ("goodbye", "bye bye")
    goodbye_marker: str = "[hangup]"
    # The caller's own goodbye ends the call too, once the bot's reply has played: a
    # real model does not always answer a farewell with one of `goodbye_phrases`.
    caller_goodbye_ends_call: bool = True
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
    # Blind transfer (REFER): named SIP targets (a table; a plain string is the target
    # "default"). A reply carrying `transfer_marker` ("[transfer]", or "[transfer:NAME]")
    # or one of `transfer_phrases` transfers the caller after it played: to the target
    # named in the marker, else the first target whose name the reply mentions, else the
    # first target. Without targets nothing is transferred.
    transfer_to: dict[str, str] = Field(default_factory=dict)
    transfer_marker: str = "[transfer]"
    transfer_phrases: tuple[str, ...] = ()
    transfer_failed: str = "I'm sorry, I couldn't put you through. How else can I help?"
    transfer_timeout_s: float = Field(30.0, gt=0, le=300)
    # Outbound calls: before its greeting the bot waits for the callee's first words,
    # or this long of silence after the answer.
    outbound_greeting_wait_s: float = Field(1.5, ge=0, le=30)
    # What is kept of each call (in CORE_RECORDINGS_DIR, named by call id): a stereo WAV
    # (caller left, bot right) and a JSON transcript; and an http(s) URL the transcript
    # is POSTed to once the call ended ("": CORE_WEBHOOK_URL, if set).
    record_audio: bool = False
    save_transcript: bool = False
    post_call_webhook: str = Field("", pattern=r"^(https?://\S+)?$")
    # Tools the LLM may call ([[bot.tools]] tables), besides the built-in `transfer`
    # (offered when there are transfer targets) and `hang_up`. While one runs the bot
    # says `tool_filler`; when one fails (timeout, HTTP error, a reply that is not JSON
    # or too big, arguments against the schema) it says `tool_failed` and goes on.
    tools: tuple[ToolConfig, ...] = ()
    # Where tools whose `url` is a path live ("http://127.0.0.1:8090": the dev stack's
    # mock bank): BOT_TOOLS_BASE_URL points all of them elsewhere at once.
    tools_base_url: str = ""
    tool_filler: str = "One moment, please."
    tool_failed: str = "Sorry, I could not do that right now. How else can I help?"

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: tuple[ToolConfig, ...]) -> tuple[ToolConfig, ...]:
        names = [tool.name for tool in value]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique: {names}")
        if len(names) > 14:  # the LLM contract allows 16, the two built-ins included
            raise ValueError(f"at most 14 tools, not {len(names)}")
        return value

    @field_validator("tools_base_url")
    @classmethod
    def _tools_base_url(cls, value: str) -> str:
        return _http_base_url(value) if value else value

    @model_validator(mode="after")
    def _tool_paths_have_a_base(self) -> BotConfig:
        relative = [t.name for t in self.tools if not t.url.startswith(("http://", "https://"))]
        if relative and not self.tools_base_url:
            raise ValueError(f"tools {relative} have a path as url: set tools_base_url "
                             "(or BOT_TOOLS_BASE_URL)")
        return self

    @field_validator("transfer_to", mode="before")
    @classmethod
    def _transfer_targets(cls, value: Any) -> Any:
        return {"default": value} if isinstance(value, str) else value

    @field_validator("transfer_phrases", mode="before")
    @classmethod
    def _phrase_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # BOT_TRANSFER_PHRASES="a,b"
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("transfer_to")
    @classmethod
    def _sip_targets(cls, value: dict[str, str]) -> dict[str, str]:
        for name, uri in value.items():
            if not uri.lower().startswith(("sip:", "sips:", "tel:")) or any(
                    c in uri for c in "<>\r\n \"'"):
                raise ValueError(f"transfer target {name!r}: {uri!r} is not a SIP URI")
        return value

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
    overrides = _env_overrides(environ)
    data.update(overrides)
    try:
        return BotConfig.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False):
            where = ".".join(str(p) for p in item["loc"])
            field = str(item["loc"][0]) if item["loc"] else ""
            if field in overrides:  # the variable is to blame, not the file
                key = f"BOT_{field.upper()}"
                problems.append(f"{key}={environ[key]!r} (environment): {item['msg']}")
            else:
                at = f"{where}: " if where else ""
                problems.append(f"{path or 'defaults'}: {at}{item['msg']}")
        raise BotConfigError("; ".join(problems)) from None


def load_bot_config_or_exit(path: Path | None) -> BotConfig:
    try:
        return load_bot_config(path)
    except BotConfigError as err:
        print(f"opensips-ai-core: bot configuration error: {err}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT) from None
