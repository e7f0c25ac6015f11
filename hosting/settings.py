"""Configuration: one TOML file plus ``SWITCHBOARD_SECTION__KEY`` environment overrides.

Everything is validated at start-up so that a bad value ends the process with one line that
names the key, instead of failing on the first message hours later.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hosting.ids import Scope
from hosting.models import DeliveryPolicy, LinkingPolicy, Multitask, QueueLimits
from hosting.targets import parse_target

DEFAULT_CONFIG_PATH = "./switchboard.toml"


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the key."""


def require_secret(value: SecretStr, key: str, hint: str = "") -> str:
    """The secret's value, or a ConfigError naming ``key`` when it is empty."""
    raw = value.get_secret_value()
    if not raw:
        raise ConfigError(f"{key}: missing" + (f" ({hint})" if hint else ""))
    return raw


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemporalSettings(_Section):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = "switchboard"
    tls: bool = False
    api_key: SecretStr | None = None
    tls_client_cert_path: Path | None = None
    tls_client_key_path: Path | None = None
    ui_url: str | None = Field(
        default=None,
        description="Temporal Web UI base URL, used to link runs from pages and the CLI",
    )


class GatewaySettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    tenant: str = "default"
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    log_format: Literal["json", "console"] = "json"
    submit_timeout_s: float = Field(
        default=2.5, gt=0, description="answer 503 when Temporal has not accepted a message by then"
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token GET /metrics requires; unset leaves it open"
    )
    intake: Literal["update", "signal"] = Field(
        default="update",
        description="update: the session answers (duplicate, busy) before the ack; signal: the "
        "ack only waits for Temporal to persist the message (faster under load, no busy answer)",
    )


def decode_b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc


class WorkerSettings(_Section):
    metrics_address: str = Field(
        default="127.0.0.1:9464",
        description="host:port of the worker's Prometheus /metrics (Temporal SDK metrics plus "
        "delivery outcomes); empty turns it off",
    )
    max_concurrent_activities: int = Field(default=100, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=100, ge=1)
    max_cached_workflows: int = Field(
        default=1000,
        ge=0,
        description="sticky workflow cache: open workflows kept in memory between tasks; "
        "bounds the worker's memory, 0 replays every task from history",
    )


class SecuritySettings(_Section):
    signing_key: SecretStr = SecretStr("")
    identity_key: SecretStr = Field(
        default=SecretStr(""),
        description="keys the pseudonyms of user and conversation ids in workflow ids and "
        "search attributes; unset: derived from signing_key (set it before rotating that)",
    )
    codec_keys: list[SecretStr] = Field(default_factory=list)
    codec_support_tokens: list[SecretStr] = Field(
        default_factory=list, description="bearer tokens that decode with content redacted"
    )
    codec_admin_tokens: list[SecretStr] = Field(
        default_factory=list, description="bearer tokens that decode everything"
    )
    codec_open_role: Literal["support", "admin"] | None = Field(
        default=None, description="role granted without a token (local development only)"
    )
    codec_cors_origins: list[str] = Field(
        default_factory=list, description="Web UI origins allowed to call the codec server"
    )
    # The Web UI's signed-in users (TEMPORAL_CODEC_PASS_ACCESS_TOKEN): their OIDC access
    # tokens, verified against the issuer's JWKS, map to a codec role through a claim.
    codec_oidc_issuer: str | None = Field(
        default=None, description="OIDC issuer whose JWT access tokens the codec server accepts"
    )
    codec_oidc_audience: str | None = Field(
        default=None, description="the aud those tokens must carry (required with the issuer)"
    )
    codec_oidc_roles_claim: str = Field(
        default="groups", description="top-level claim holding the user's roles or groups"
    )
    codec_oidc_roles: dict[str, Literal["support", "admin"]] = Field(
        default_factory=dict, description="claim value -> codec role; unmapped users get 403"
    )

    @model_validator(mode="after")
    def _codec_oidc_complete(self) -> SecuritySettings:
        issuer = self.codec_oidc_issuer
        if not issuer:  # unset, or empty from an environment variable: off
            return self
        parts = urlsplit(issuer)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise ValueError("codec_oidc_issuer must be an https URL (http only on loopback)")
        if not self.codec_oidc_audience:
            raise ValueError("codec_oidc_audience: required with codec_oidc_issuer")
        if not self.codec_oidc_roles:
            raise ValueError("codec_oidc_roles: empty, so no signed-in user could decode")
        return self

    @field_validator("signing_key", "identity_key")
    @classmethod
    def _key_is_base64(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        raw = value.get_secret_value()
        if raw and len(decode_b64(raw, str(info.field_name))) < 32:
            raise ValueError(f"{info.field_name} must decode to at least 32 bytes")
        return value

    @field_validator("codec_keys")
    @classmethod
    def _codec_keys_parse(cls, value: list[SecretStr]) -> list[SecretStr]:
        seen: set[str] = set()
        for item in value:
            key_id, key = parse_codec_key(item.get_secret_value())
            if key_id in seen:
                raise ValueError(f"codec key id {key_id!r} appears twice")
            seen.add(key_id)
            del key
        return value

    def signing_key_bytes(self) -> bytes:
        return base64.b64decode(self.signing_key.get_secret_value())

    def identity_key_bytes(self) -> bytes:
        """The explicit identity key, or one derived from the signing key (HKDF), so existing
        configurations keep their sessions; rotating the signing key then moves every
        conversation to a new session, which an explicit identity key prevents."""
        raw = self.identity_key.get_secret_value()
        if raw:
            return base64.b64decode(raw)
        return _derived_identity_key(self.signing_key_bytes())

    def codec_key_pairs(self) -> list[tuple[str, bytes]]:
        return [parse_codec_key(k.get_secret_value()) for k in self.codec_keys]


@functools.lru_cache(maxsize=8)
def _derived_identity_key(signing_key: bytes) -> bytes:
    # Derived once per signing key, not on every inbound message.
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"switchboard identity key"
    ).derive(signing_key)


def parse_codec_key(entry: str) -> tuple[str, bytes]:
    """Parse ``key-id:base64-32-bytes``."""
    key_id, sep, b64 = entry.partition(":")
    if not sep or not key_id or not key_id.replace("-", "").replace("_", "").isalnum():
        raise ValueError("codec key must look like 'key-id:base64-32-bytes'")
    key = decode_b64(b64, f"codec key {key_id!r}")
    if len(key) != 32:
        raise ValueError(f"codec key {key_id!r} must decode to exactly 32 bytes")
    return key_id, key


class AgentSettings(_Section):
    kind: Literal["echo", "openai", "python", "agent_framework"] = "echo"
    delay_ms: int = Field(default=0, ge=0, le=3_600_000)
    base_url: str = "http://127.0.0.1:11434/v1"
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = None
    system_prompt: str = "You are a helpful assistant."
    callable: str | None = Field(
        default=None,
        description="module:callable for kind = python; module:attribute naming an agent (or a "
        "zero-argument factory of one) for kind = agent_framework",
    )
    timeout_s: float = Field(default=300.0, gt=0)
    heartbeat_timeout_s: float = Field(
        default=10.0, ge=2, description="a worker that died mid-call is noticed after this long"
    )
    max_duration_s: float = Field(default=3600.0, gt=0)
    transcript_turns: int = Field(default=20, ge=0, le=500)
    stream_delay_ms: int = Field(
        default=0, ge=0, le=60_000, description="echo agent: pause between its streamed words"
    )
    stream_every_ms: int = Field(
        default=250,
        ge=0,
        le=60_000,
        description="how often a run records the answer so far, for live replies (each record "
        "is one history event); 0 records only the final answer",
    )
    progress_every_ms: int = Field(
        default=1000,
        ge=0,
        le=60_000,
        description="how often chat platforms are shown a reply being produced (typing, drafts, "
        "per conversation; about one update a second is what Telegram and Teams allow); 0: never",
    )
    tools: list[str] = Field(
        default_factory=list,
        description="module:function tools for kind = openai (typed, documented functions)",
    )
    approval_required: list[str] = Field(
        default_factory=list, description="tool names that run only after the person approves"
    )
    approval_timeout_s: float = Field(
        default=86400.0, gt=0, description="an approval not given by then counts as denied"
    )
    max_steps: int = Field(default=8, ge=1, le=100, description="model calls per turn")
    tool_timeouts_s: dict[str, float] = Field(
        default_factory=dict, description="per tool name; default agent.timeout_s"
    )
    tools_not_idempotent: list[str] = Field(
        default_factory=list, description="tool names never retried (a retry could repeat them)"
    )
    state_max_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="agent_framework: the largest conversation state a session keeps between "
        "turns (it travels in every run's input); beyond it the state is dropped and the next "
        "turn starts from the transcript",
    )

    @model_validator(mode="after")
    def _tools_need_openai(self) -> AgentSettings:
        if self.tools and self.kind != "openai":
            raise ValueError("agent.tools: tools need agent.kind = 'openai'")
        names = {t.rpartition(":")[2] for t in self.tools}
        for key in ("approval_required", "tools_not_idempotent", "tool_timeouts_s"):
            unknown = sorted(set(getattr(self, key)) - names)
            if unknown:
                raise ValueError(f"agent.{key}: not in agent.tools: {', '.join(unknown)}")
        if any(t <= 0 for t in self.tool_timeouts_s.values()):
            raise ValueError("agent.tool_timeouts_s: timeouts must be > 0")
        return self


class DeliverySettings(DeliveryPolicy):
    """``[delivery]``: the retry policy every run carries (declared once, in the payload model)
    plus the deployment-wide limits that never travel with a run."""

    allow_non_originating: bool = False
    max_fanout: int = Field(default=8, ge=1, le=64)
    first_attempt_local: bool = Field(
        default=True,
        description="push the first attempt inside the run's workflow task (false: every "
        "attempt is an activity of its own)",
    )


class SessionSettings(QueueLimits):
    """``[sessions]``: the per-session queue bound every run's submission carries."""


class LimitSettings(_Section):
    """``[limits]``: per-identity and per-process ceilings on what one caller can make the
    gateway do. Counted per gateway process (several replicas each allow this much)."""

    messages_per_minute: float = Field(
        default=30.0, gt=0, description="inbound messages per identity, refilled continuously"
    )
    message_burst: int = Field(
        default=10, ge=1, description="messages an idle identity may send at once"
    )
    streams_per_identity: int = Field(
        default=4, ge=1, description="open event streams and long polls of one identity"
    )
    streams_per_process: int = Field(
        default=1000, ge=1, description="open event streams and long polls of the whole gateway"
    )
    tracked_identities: int = Field(
        default=100_000, ge=100, description="identities whose buckets are remembered (LRU)"
    )


class RunSettings(_Section):
    continuation_s: float = Field(
        default=86400.0, gt=0, description="how long a finished run stays retrievable"
    )


class LinkingSettings(LinkingPolicy):
    """``[linking]``: exactly the policy every run carries."""


class AuthorizationSettings(_Section):
    default: Literal["allow", "deny"] = "allow"


class ChannelSettings(_Section):
    """Options every channel has besides its credentials; each adapter's module extends it."""

    enabled: bool = True
    response_target: str = "originating"
    echo_input: bool = False
    accept_in_group: Literal["mention_only", "all", "commands_only"] = "mention_only"
    conversation_scope: Scope | None = None
    multitask: Multitask = "enqueue"
    allow_native_ids: list[str] = Field(default_factory=list)
    allow_claims: dict[str, list[str]] = Field(default_factory=dict)
    require_link: bool = False

    @field_validator("response_target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        parse_target(value)
        return value


class ChannelsSettings(_Section):
    """The ``[channels.*]`` sections. The core knows no platform: a deployment's channel
    catalogue (``channels/catalog.py``) subclasses this with one optional field per adapter."""

    def configured(self) -> dict[str, ChannelSettings]:
        out: dict[str, ChannelSettings] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, ChannelSettings) and value.enabled:
                out[name] = value
        return out


class MessagesSettings(_Section):
    """``[messages]``: bearer keys of application backends that send proactive messages
    (``/v1/messages``), by the caller's name; the routes are mounted only when one is set."""

    api_keys: dict[str, SecretStr] = Field(default_factory=dict)


class TelemetrySettings(_Section):
    """``[telemetry]``: OpenTelemetry traces, off until a collector is named (the ``otel``
    extra must be installed then)."""

    otlp_endpoint: str = Field(
        default="",
        description="OTLP/gRPC collector, e.g. http://otel-collector:4317; empty: no traces",
    )
    sample_ratio: float = Field(
        default=1.0, ge=0.0, le=1.0, description="share of inbound messages that are traced"
    )


class SchedulesSettings(_Section):
    """``[schedules]``: scheduled check-ins (``/v1/schedules``, callers from ``[messages]``).
    Every firing runs the agent, which costs money, so each person has a bound."""

    max_per_identity: int = Field(
        default=20, ge=1, le=1000, description="schedules one person may have; beyond, 422"
    )
    agent_tool: bool = Field(
        default=False,
        description="give the openai agent the schedule_check_in, list_check_ins and "
        "cancel_check_in tools, acting for the person it talks to",
    )


class Settings(BaseSettings):
    """The whole configuration. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    runs: RunSettings = Field(default_factory=RunSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    linking: LinkingSettings = Field(default_factory=LinkingSettings)
    authorization: AuthorizationSettings = Field(default_factory=AuthorizationSettings)
    channels: ChannelsSettings = Field(default_factory=ChannelsSettings)
    messages: MessagesSettings = Field(default_factory=MessagesSettings)
    schedules: SchedulesSettings = Field(default_factory=SchedulesSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values win over the environment, which wins over the file (if one is named).
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @model_validator(mode="after")
    def _non_originating_needs_consent(self) -> Settings:
        for name, channel in self.channels.configured().items():
            if (
                parse_target(channel.response_target).non_originating
                and not self.delivery.allow_non_originating
            ):
                raise ValueError(
                    f"channels.{name}.response_target {channel.response_target!r} delivers "
                    "beyond the originating conversation: set delivery.allow_non_originating"
                )
        return self

    def require_keys(self) -> None:
        """Refuse to run without real keys: tokens and payloads would be unprotected."""
        if not self.security.signing_key.get_secret_value():
            raise ConfigError("security.signing_key: missing (base64 of at least 32 bytes)")
        if not self.security.codec_keys:
            raise ConfigError("security.codec_keys: missing (list of 'key-id:base64-32-bytes')")


AnySettings = TypeVar("AnySettings", bound=Settings)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {msg}{more}"


def _build(model: type[AnySettings], values: dict[str, Any]) -> AnySettings:
    try:
        return model(**values)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None


def load_settings(
    path: str | None = None, *, model: type[AnySettings], **overrides: Any
) -> AnySettings:
    """Read the TOML file and the environment; raise :class:`ConfigError` naming the bad key.

    ``model`` is the deployment's settings class (the channel catalogue's, which knows the
    ``[channels.*]`` sections); the core's own knows none."""
    chosen = path or os.environ.get("SWITCHBOARD_CONFIG", DEFAULT_CONFIG_PATH)
    explicit = path is not None or "SWITCHBOARD_CONFIG" in os.environ
    if explicit and not Path(chosen).is_file():
        raise ConfigError(f"config file {chosen!r} does not exist (SWITCHBOARD_CONFIG)")
    if not Path(chosen).is_file():
        return _build(model, overrides)
    try:
        tomllib.loads(Path(chosen).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {chosen!r} is not valid TOML: {exc}") from None
    # A subclass that names the file: the path travels with the class, not through a global.
    from_file = type(
        model.__name__,
        (model,),
        {"model_config": SettingsConfigDict(toml_file=chosen), "__module__": model.__module__},
    )
    return _build(from_file, overrides)


def settings_from_dict(values: dict[str, Any], *, model: type[AnySettings]) -> AnySettings:
    """Build settings from a plain mapping (tests, embedding); no file is read."""
    return _build(model, values)
