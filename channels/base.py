"""The channel SPI: what every platform adapter provides.

An adapter turns a verified inbound HTTP request into one :class:`ChannelRequest` (or a
handshake answer, or a refusal) and pushes replies, returning a :class:`ChannelAck` whose
``mode`` is a closed enum. Adapters never raise for platform failures: the delivery activity
decides what to retry from the ack alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from pydantic import Field

from hosting.models import ChannelRequest, Frozen, PushRequest, ReplyAddress, SubmitResult
from hosting.settings import ChannelSettings

if TYPE_CHECKING:
    import aiohttp

    from hosting.ids import Scope
    from hosting.settings import Settings


class FailureMode(StrEnum):
    DELIVERED = "delivered"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"


class ChannelAck(Frozen):
    mode: FailureMode
    retry_after_s: float | None = None
    detail: str | None = None
    platform_message_ids: list[str] = []
    parts_delivered: int = 0  # of a split message, how many went out in this call

    @property
    def ok(self) -> bool:
        return self.mode is FailureMode.DELIVERED


@dataclass(frozen=True)
class InboundHttp:
    """The raw inbound request as the gateway received it; signatures cover ``body``."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    received_at: float
    tenant: str = "default"
    cookies: Mapping[str, str] = field(default_factory=dict)
    remote: str = ""  # the peer's address as the gateway saw it (a proxy's, behind one)


@dataclass(frozen=True)
class HttpAnswer:
    """An answer the gateway sends as it is."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    request: ChannelRequest


@dataclass(frozen=True)
class Answered:
    """Handled inside the gateway (handshakes, ignored events): nothing reaches Temporal."""

    answer: HttpAnswer


@dataclass(frozen=True)
class Refused:
    """Verification or parsing failed; ``reason`` is safe to show the caller."""

    status: int
    reason: str


InboundOutcome = Accepted | Answered | Refused


@runtime_checkable
class Channel(Protocol):
    """A platform adapter, shared by the gateway (inbound) and the worker (push)."""

    name: str
    pull: bool
    """True for channels whose callers fetch replies (web page, HTTP API): nothing is pushed."""
    verified_claims: frozenset[str]
    """Claim names the adapter verifies and puts on requests (what ``allow_claims`` can use)."""
    public: bool
    """Anyone on the platform can reach it (False where callers hold a credential we issued)."""

    @property
    def settings(self) -> ChannelSettings:
        """The channel's configuration section (read-only, so adapters may narrow it)."""
        ...

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        """Verify and parse one inbound request. Must not raise."""
        ...

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        """The answer the platform expects once the message is durably accepted."""
        ...

    def scope(self, request: ChannelRequest) -> Scope:
        """Conversation scope that decides the session a message belongs to."""
        ...

    def direct_scope(self) -> Scope:
        """The scope of a direct conversation (where pull callers' runs wait)."""
        ...

    def refuse(self, request: ChannelRequest) -> HttpAnswer:
        """The answer to a verified caller the policy does not admit (nothing is started)."""
        ...

    def too_many(self, request: ChannelRequest, retry_after_s: float) -> HttpAnswer:
        """The answer to a caller over its rate or queue limit (nothing is started)."""
        ...

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        """Send one reply. Must not raise: every failure is an ack."""
        ...


class BaseChannel:
    """Defaults most adapters share."""

    name: str = ""
    pull: bool = False
    verified_claims: frozenset[str] = frozenset()
    public: bool = True

    def __init__(self, *, settings: ChannelSettings) -> None:
        self.settings = settings

    @classmethod
    def from_config(cls, section: ChannelSettings, settings: Settings) -> Self:
        """The adapter for its ``[channels.<name>]`` section; adapters that need more of the
        deployment's configuration (keys, public URL) override this."""
        return cls(settings=section)

    def direct_scope(self) -> Scope:
        return self.settings.conversation_scope or "per_user"

    def scope(self, request: ChannelRequest) -> Scope:
        if self.settings.conversation_scope is not None or request.is_direct:
            return self.direct_scope()
        return "per_user_per_conversation"

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        return HttpAnswer(status=200)

    def refuse(self, request: ChannelRequest) -> HttpAnswer:
        # A 2xx: platforms would otherwise redeliver a message we will never accept.
        return HttpAnswer(status=200)

    def too_many(self, request: ChannelRequest, retry_after_s: float) -> HttpAnswer:
        # A 429 with Retry-After: the sender (or the platform's redelivery) tries again later,
        # so a message over the limit is delayed, not lost.
        return HttpAnswer(
            status=429,
            body=json.dumps({"error": "too many messages, retry later"}).encode(),
            headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))},
        )


class Surface(StrEnum):
    """An HTTP surface a pull channel brings besides ``POST /channels/{name}``; ``routes/``
    mounts the routes of each surface a configured channel declares."""

    CHAT_PAGE = "chat_page"  # a page that posts messages and follows its own runs
    RESPONSES_API = "responses_api"  # OpenAI-Responses-compatible ``/v1/responses``


@runtime_checkable
class ServesSurface(Protocol):
    name: str
    surface: Surface


@runtime_checkable
class AuthenticatesCallers(Protocol):
    """Pull channels whose callers come back for their runs (``/v1/runs/{token}``)."""

    name: str

    def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], *, for_write: bool
    ) -> str | None:
        """The caller's user id on this channel, or None. ``for_write``: the request changes
        something, so cookie-authenticated callers must also prove same-origin intent."""
        ...

    def direct_scope(self) -> Scope:
        """The conversation scope of this channel's (direct) conversations."""
        ...


@runtime_checkable
class RegistersWithPlatform(Protocol):
    """Platforms that are set up through their own API (a webhook URL, commands);
    ``switchboard channels register <name>``."""

    name: str

    async def register(self, http: aiohttp.ClientSession, url: str) -> tuple[bool, str]:
        """Register ``url`` (the channel's public inbound URL) and whatever else the platform
        needs; (done, the platform's answer in a few words)."""
        ...


@runtime_checkable
class BuildsAppPackage(Protocol):
    """Platforms installed from an uploaded app package; ``switchboard channels package``."""

    name: str

    def app_package(self, gateway_url: str) -> bytes:
        """The package file's bytes (for example a zipped manifest with icons)."""
        ...


@runtime_checkable
class SignsSamples(Protocol):
    """Channels that can sign a sample inbound message (``switchboard send`` smoke test)."""

    name: str

    def sample_request(self, text: str, user: str) -> tuple[dict[str, str], bytes]:
        """Headers and body of one signed message from ``user``."""
        ...


@runtime_checkable
class RunsDevReceiver(Protocol):
    """Push channels that can stand in for "your server" during ``switchboard dev``."""

    def dev_receiver(self) -> tuple[int, aiohttp.web.Application] | None:
        """(local port, app) of a receiver that prints reply metadata, or None."""
        ...


@runtime_checkable
class DescribesItself(Protocol):
    """Channels that add lines to the dev supervisor's banner (how to reach them)."""

    def dev_hints(self, gateway_url: str) -> list[str]: ...


@runtime_checkable
class ChecksCredentials(Protocol):
    """Platforms with a cheap, read-only call that proves the credentials work;
    ``switchboard doctor``."""

    name: str

    async def check_credentials(
        self, http: aiohttp.ClientSession, url: str, timeout_s: float
    ) -> tuple[bool, str, list[str]]:
        """Ask the platform without changing anything there. ``url`` is where the platform
        should send inbound requests (``gateway.public_url`` + ``/channels/<name>``). Returns
        (the credentials work, the platform's answer in a few words, warnings). Must not raise,
        and never puts a credential (or a URL that carries one) into the answer."""
        ...


class ProgressState(StrEnum):
    WORKING = "working"  # the agent runs; no text yet
    STREAMING = "streaming"  # text so far exists
    DONE = "done"  # the agent stopped: the final reply follows as a push (or none, on failure)


PROGRESS_TIMEOUT_S = 5.0  # a progress call that takes longer is worth nothing


class LiveReplySettings(ChannelSettings):
    """The section of a platform that shows replies live: its own interval between frames."""

    progress_every_ms: int | None = Field(
        default=None,
        ge=0,
        le=60_000,
        description="this platform's interval between live-reply frames; default "
        "[agent] progress_every_ms, 0 turns them off here",
    )

    @property
    def progress_every_s(self) -> float | None:
        """As seconds; None: the deployment's ``[agent] progress_every_ms``."""
        return None if self.progress_every_ms is None else self.progress_every_ms / 1000


@dataclass
class LiveReply:
    """One reply shown live on the platform, kept by the worker across its progress frames:
    the platform's id of the message that shows the reply as it grows (a Slack stream's ts, a
    Teams stream id, a Discord interaction's original message), once there is one; how many
    frames the platform took; the text it shows. The agent activity returns ``message`` with
    its answer, so the final push (on any worker) completes that message instead of posting
    the reply a second time."""

    message: str | None = None
    frames: int = 0
    shown: str = ""


@runtime_checkable
class ShowsProgress(Protocol):
    """Push platforms that can show a reply being produced (typing, a draft, a status line)
    while the agent runs. Progress is a courtesy, sent from the worker without a history
    event: the final reply is always the durable push, whatever happened to progress."""

    name: str
    progress_renew_s: float
    """How often a working indicator is sent again while nothing new is shown (platforms hide
    it after a while)."""
    progress_every_s: float | None
    """This platform's interval between frames per conversation (its section's
    ``progress_every_ms``); None: the deployment's ``[agent] progress_every_ms``."""

    def streams_text(self, address: ReplyAddress) -> bool:
        """Whether progress shows the text so far at this address; if not, only the working
        indicator is sent (and renewed), however much text arrives."""
        ...

    async def progress(
        self,
        http: aiohttp.ClientSession,
        address: ReplyAddress,
        text_so_far: str | None,
        state: ProgressState,
        live: LiveReply,
    ) -> bool:
        """Show one frame of progress within ``PROGRESS_TIMEOUT_S``; ``DONE`` carries the final
        text, or None when the agent failed. ``live`` is this reply's state, which the adapter
        updates (it is the same object for every frame of one reply). Returns whether the
        platform took it (the caller backs off if not). Must not raise, and never logs the
        text."""
        ...


def answers_request(push: PushRequest, message_key: str) -> bool:
    """Whether ``push`` is the reply to the request with ``message_key`` (its run's id ends in
    it). An address is kept beyond its request (the session's home, later proactive
    messages), so what it says about that request (a press to tidy up) is for this reply only."""
    return push.run_id.rsplit("/", 1)[-1] == message_key


def json_answer(status: int, body: object) -> HttpAnswer:
    return HttpAnswer(status=status, body=json.dumps(body).encode())
