"""Discord HTTP interactions in, interaction followups (or a bot DM) out.

Inbound ``POST /channels/discord`` is the application's Interactions Endpoint URL. Every
request is signed: ``X-Signature-Ed25519`` is the hex Ed25519 signature of
``X-Signature-Timestamp + body`` under the application's public key. Discord probes the URL
with deliberately bad signatures and drops it unless they get a 401, so every verification
failure is a 401; a timestamp older than five minutes is refused too, against replays.

Slash commands carry the text: ``/ask text:...`` is the user's message, ``/link [code]`` and
``/unlink`` become the chat commands ``/link CODE`` and ``/unlink``. The interaction id is the
message key. The gateway answers within Discord's three seconds with a deferred response
(``{"type": 5}``, "thinking..."); replies are followup messages,
``POST /webhooks/{application_id}/{token}``: the first followup after a deferral takes the
place of the "thinking" message, the rest (a reply split at 2,000 characters) follow it.
The interaction token lives 15 minutes; later pushes (or pushes to an address without a token)
go to the user's DM through the bot token instead.

An approval prompt (``phase == "approval"``) carries message components: one action row with
Approve and Deny buttons, ``custom_id`` ``approve:CODE`` / ``deny:CODE``. A press is a
component interaction (type 3, signed like every interaction) and becomes the presser's
``/approve CODE`` (or ``/deny CODE``); it is answered with an update of the pressed message
(type 7) that removes its components, and the reply follows on the press's own token.

Live replies: while the agent writes, ``PATCH /webhooks/{application_id}/{token}/messages/
@original`` shows the text so far in place of "thinking...". The reply's push then sets the
final text there once (the first part; later parts are followups), rather than posting a
followup that would show the answer a second time.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, SecretStr, field_validator

from channels.base import (
    PROGRESS_TIMEOUT_S,
    Accepted,
    Answered,
    BaseChannel,
    ChannelAck,
    FailureMode,
    HttpAnswer,
    InboundHttp,
    InboundOutcome,
    LiveReply,
    LiveReplySettings,
    ProgressState,
    Refused,
    json_answer,
)
from channels.chunking import split_text, utf16_len
from channels.http_push import HttpResult, classify_status, parse_retry_after
from channels.inbound_body import BodyError, PlatformBody, parse_body
from hosting.models import ChannelRequest, PushRequest, ReplyAddress, SubmitResult
from hosting.settings import ConfigError, require_secret

SIGNATURE_HEADER = "X-Signature-Ed25519"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
TOLERANCE_S = 300
MAX_TEXT = 2000  # ``content`` limit; measured in UTF-16 units, which never undercounts
TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 60  # a push this close to expiry goes to the DM rather than race the clock
SNOWFLAKE = r"^[0-9]{1,20}$"

# Interaction and callback types (Discord's numbering).
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE = 1, 2, 3, 4
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, AUTOCOMPLETE_RESULT = 1, 4, 5, 8
DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE = 6, 7
ACTION_ROW, BUTTON = 1, 2
SUCCESS_STYLE, DANGER_STYLE = 3, 4
# The approval prompt's instruction (workflows/agent_loop.py), and what its buttons carry.
APPROVAL_CODE = re.compile(r"/approve\s+([A-Za-z0-9]{4,16})\s+or\s+/deny\s+\1\b")
BUTTON_ID = re.compile(r"^(approve|deny):([A-Za-z0-9]{4,16})$")
VIA = "via"  # ReplyAddress.extra key: "component" for a button press
EPHEMERAL = 1 << 6
THREAD_TYPES = {10, 11, 12}  # announcement, public and private threads
STRING_OPTION = 3
# JSON error codes that mean the interaction token can no longer be used.
EXPIRED_TOKEN_CODES = {50027, 10015}  # Invalid Webhook Token, Unknown Webhook
UNKNOWN_MESSAGE = 10008  # the original is gone (deleted): the reply is a followup instead
# 403s that are about the recipient, not our credentials: retrying or re-keying cannot help.
REJECTED_403_CODES = {50007, 50001, 50013}  # cannot DM user, missing access / permissions

COMMANDS: list[dict[str, Any]] = [
    {
        "name": "ask",
        "type": 1,
        "description": "Ask the assistant",
        "options": [
            {
                "name": "text",
                "type": STRING_OPTION,
                "description": "Your message",
                "required": True,
                "max_length": 6000,
            }
        ],
    },
    {
        "name": "link",
        "type": 1,
        "description": "Link this Discord account to your other channels",
        "options": [
            {
                "name": "code",
                "type": STRING_OPTION,
                "description": "The code shown on the other channel (leave out to get one)",
                "required": False,
                "max_length": 64,
            }
        ],
    },
    {"name": "unlink", "type": 1, "description": "Unlink this Discord account"},
]

Route = Literal["followup", "dm"]


class DcUser(PlatformBody):
    id: str = Field(pattern=SNOWFLAKE)
    bot: bool = False


class DcMember(PlatformBody):
    user: DcUser


class DcOption(PlatformBody):
    name: str = Field(max_length=32)
    type: int
    value: str | int | float | bool | None = None


class DcCommand(PlatformBody):
    name: str = Field(default="", max_length=32)  # components and modals send other data
    type: int = 1
    options: list[DcOption] = Field(default_factory=list, max_length=25)
    custom_id: str | None = Field(default=None, max_length=100)  # a component's
    component_type: int | None = None


class DcChannel(PlatformBody):
    id: str = Field(pattern=SNOWFLAKE)
    type: int
    parent_id: str | None = Field(default=None, pattern=SNOWFLAKE)


class Interaction(PlatformBody):
    id: str = Field(pattern=SNOWFLAKE)
    type: int
    token: str = Field(default="", max_length=1000)
    guild_id: str | None = Field(default=None, pattern=SNOWFLAKE)
    channel_id: str | None = Field(default=None, pattern=SNOWFLAKE)
    channel: DcChannel | None = None
    member: DcMember | None = None
    user: DcUser | None = None
    data: DcCommand | None = None


def _option(command: DcCommand, name: str) -> str:
    for option in command.options:
        if option.name == name and isinstance(option.value, str):
            return option.value.strip()
    return ""


def command_text(command: DcCommand) -> str | None:
    """The chat text a slash command stands for; None for commands we do not know."""
    if command.name == "ask":
        return _option(command, "text") or None
    if command.name == "link":
        code = _option(command, "code")
        return f"/link {code}" if code else "/link"
    if command.name == "unlink":
        return "/unlink"
    return None


def approval_components(text: str) -> list[dict[str, Any]] | None:
    """One action row with Approve/Deny buttons for an approval prompt, or None if it names
    no code."""
    match = APPROVAL_CODE.search(text)
    if match is None:
        return None
    code = match.group(1)
    buttons = [
        {
            "type": BUTTON,
            "style": SUCCESS_STYLE,
            "label": "Approve",
            "custom_id": f"approve:{code}",
        },
        {"type": BUTTON, "style": DANGER_STYLE, "label": "Deny", "custom_id": f"deny:{code}"},
    ]
    return [{"type": ACTION_ROW, "components": buttons}]


def ephemeral(content: str) -> HttpAnswer:
    """An immediate answer only the invoking user sees."""
    return json_answer(
        200, {"type": CHANNEL_MESSAGE, "data": {"content": content, "flags": EPHEMERAL}}
    )


class DiscordChannelSettings(LiveReplySettings):
    """``[channels.discord]``: the application's public key and id, and its bot token."""

    public_key: str = ""
    application_id: str = ""
    bot_token: SecretStr = SecretStr("")
    api_base_url: str = "https://discord.com/api/v10"
    stream_replies: bool = Field(
        default=True, description="show the text so far in place of 'thinking...' (@original)"
    )

    @field_validator("public_key")
    @classmethod
    def _ed25519_hex(cls, value: str) -> str:
        value = value.strip().lower()
        if value:
            try:
                Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
            except ValueError:
                raise ValueError("must be the application's hex Ed25519 public key") from None
        return value

    @field_validator("application_id")
    @classmethod
    def _snowflake(cls, value: str) -> str:
        value = value.strip()
        if value and not (value.isascii() and value.isdigit()):
            raise ValueError("must be the application's numeric id")
        return value


class DiscordChannel(BaseChannel):
    name = "discord"
    progress_renew_s = 600.0  # "thinking..." stays until replaced: nothing to renew

    def __init__(self, *, settings: DiscordChannelSettings) -> None:
        super().__init__(settings=settings)
        self.settings: DiscordChannelSettings = settings
        if not settings.public_key:
            raise ConfigError("channels.discord.public_key: missing (General Information page)")
        if not settings.application_id:
            raise ConfigError("channels.discord.application_id: missing")
        require_secret(settings.bot_token, "channels.discord.bot_token", "the Bot page's token")
        self._key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(settings.public_key))
        self.progress_every_s = settings.progress_every_s

    # -- inbound ---------------------------------------------------------------------------

    def _verified(self, http: InboundHttp) -> bool:
        stamp = http.headers.get(TIMESTAMP_HEADER, "")
        try:
            signature = bytes.fromhex(http.headers.get(SIGNATURE_HEADER, ""))
            fresh = abs(http.received_at - int(stamp)) <= TOLERANCE_S
        except ValueError:
            return False
        if len(signature) != 64:
            return False
        try:
            self._key.verify(signature, stamp.encode() + http.body)
        except InvalidSignature:
            return False
        return fresh

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        if not self._verified(http):
            return Refused(401, "invalid request signature")
        try:
            interaction = parse_body(Interaction, http.body)
        except BodyError as exc:
            return Refused(400, str(exc))
        if interaction.type == PING:
            return Answered(json_answer(200, {"type": PONG}))
        if interaction.type == AUTOCOMPLETE:
            return Answered(
                json_answer(200, {"type": AUTOCOMPLETE_RESULT, "data": {"choices": []}})
            )
        if interaction.type == MESSAGE_COMPONENT and interaction.data is not None:
            return self._command(http, interaction, interaction.data)
        if interaction.type != APPLICATION_COMMAND or interaction.data is None:
            return Answered(ephemeral("This app only answers its slash commands."))
        return self._command(http, interaction, interaction.data)

    def _command(
        self, http: InboundHttp, interaction: Interaction, command: DcCommand
    ) -> InboundOutcome:
        author = interaction.member.user if interaction.member else interaction.user
        if author is None or interaction.channel_id is None or not interaction.token:
            return Refused(400, "interaction has no user, channel or token")
        pressed = interaction.type == MESSAGE_COMPONENT
        if pressed:
            button = BUTTON_ID.match(command.custom_id or "")
            text = f"/{button.group(1)} {button.group(2)}" if button else None
            if text is None:
                return Answered(ephemeral("This button is no longer in use."))
        else:
            text = command_text(command)
            if text is None:
                return Answered(ephemeral("Unknown command; try /ask."))
        direct = interaction.guild_id is None
        conversation, thread = interaction.channel_id, None
        channel = interaction.channel
        if channel and channel.type in THREAD_TYPES and channel.parent_id:
            conversation, thread = channel.parent_id, interaction.channel_id
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=interaction.id,
                user_id=author.id,
                conversation_id=conversation,
                thread_id=thread,
                is_direct=direct,
                text=text,
                reply_to=ReplyAddress(
                    channel=self.name,
                    user_id=author.id,
                    conversation_id=conversation,
                    thread_id=thread,
                    extra={
                        "interaction_token": interaction.token,
                        "received_at": f"{http.received_at:.3f}",
                        **({VIA: "component"} if pressed else {}),
                    },
                ),
            )
        )

    def acknowledge(self, request: ChannelRequest, result: SubmitResult) -> HttpAnswer:
        if not result.accepted:  # no run will follow up: say so now, or "thinking" never ends
            return ephemeral("Busy with your previous message; try again in a moment.")
        if request.reply_to.extra.get(VIA) == "component":
            # A press is durable now: the pressed message loses its buttons, in this very
            # answer (within Discord's 3 s); the reply is a followup on the press's token.
            return json_answer(200, {"type": UPDATE_MESSAGE, "data": {"components": []}})
        return json_answer(200, {"type": DEFERRED_CHANNEL_MESSAGE})

    def refuse(self, request: ChannelRequest) -> HttpAnswer:
        return ephemeral("You are not allowed to use this app.")

    def too_many(self, request: ChannelRequest, retry_after_s: float) -> HttpAnswer:
        # Interactions are not redelivered: say so at once instead of failing the interaction.
        return ephemeral(f"Too many messages; try again in {max(1, round(retry_after_s))} s.")

    # -- push ------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.settings.api_base_url.rstrip('/')}/{path.lstrip('/')}"

    def _bot_headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bot {self.settings.bot_token.get_secret_value()}",
            "content-type": "application/json",
        }

    @staticmethod
    def _token_usable(addr: ReplyAddress, now: float) -> bool:
        token = addr.extra.get("interaction_token", "")
        try:
            received = float(addr.extra.get("received_at", ""))
        except ValueError:
            return False
        return bool(token) and now - received < TOKEN_LIFETIME_S - TOKEN_MARGIN_S

    async def _request(
        self,
        http: aiohttp.ClientSession,
        method: str,
        url: str,
        payload: object,
        headers: dict[str, str],
        timeout_s: float,
    ) -> HttpResult | ChannelAck:
        """One call; connection problems come back as a transient ack."""
        try:
            async with http.request(
                method,
                url,
                data=None if payload is None else json.dumps(payload).encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                content = await resp.content.read(1 << 20)
                return HttpResult(
                    resp.status, {k.lower(): v for k, v in resp.headers.items()}, content
                )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            return ChannelAck(mode=FailureMode.TRANSIENT, detail=type(exc).__name__)

    @staticmethod
    def _ack(result: HttpResult) -> ChannelAck:
        body: Any = result.json()
        body = body if isinstance(body, dict) else {}
        if 200 <= result.status < 300:
            return ChannelAck(
                mode=FailureMode.DELIVERED, platform_message_ids=[str(body.get("id", ""))]
            )
        code = body.get("code")
        detail = f"{result.status} {code}" if isinstance(code, int) else str(result.status)
        if result.status == 429:
            retry = body.get("retry_after")
            retry_after = (
                float(retry)
                if isinstance(retry, int | float) and not isinstance(retry, bool)
                else parse_retry_after(result.headers.get("retry-after"))
            )
            return ChannelAck(
                mode=FailureMode.RATE_LIMITED, retry_after_s=retry_after, detail=detail
            )
        if result.status == 403 and code in REJECTED_403_CODES:
            return ChannelAck(mode=FailureMode.REJECTED, detail=detail)
        return classify_status(result.status).model_copy(update={"detail": detail})

    @staticmethod
    def _token_expired(result: HttpResult) -> bool:
        body: Any = result.json()
        code = body.get("code") if isinstance(body, dict) else None
        return result.status in (401, 404) and code in EXPIRED_TOKEN_CODES

    async def _open_dm(
        self, http: aiohttp.ClientSession, user_id: str, timeout_s: float
    ) -> str | ChannelAck:
        """The DM channel with ``user_id`` (Discord returns the existing one if there is)."""
        result = await self._request(
            http,
            "POST",
            self._url("users/@me/channels"),
            {"recipient_id": user_id},
            self._bot_headers(),
            timeout_s,
        )
        if isinstance(result, ChannelAck):
            return result
        ack = self._ack(result)
        if not ack.ok:
            return ack
        body: Any = result.json()
        channel_id = str(body.get("id", "")) if isinstance(body, dict) else ""
        if not channel_id.isdigit():
            return ChannelAck(mode=FailureMode.TRANSIENT, detail="no DM channel in the answer")
        return channel_id

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        addr = push.address
        timeout_s = push.policy.timeout_s
        parts = split_text(push.text, MAX_TEXT, utf16_len)[push.skip_parts :]
        components = approval_components(push.text) if push.phase == "approval" else None
        route: Route = "followup" if self._token_usable(addr, time.time()) else "dm"
        original = bool(push.live_message) and push.skip_parts == 0
        dm_channel: str | None = None
        sent: list[str] = []
        index = 0
        while index < len(parts):
            payload: dict[str, Any] = {"content": parts[index], "allowed_mentions": {"parse": []}}
            if components is not None and index == len(parts) - 1:
                payload["components"] = components  # under the part that says how to answer
            method = "POST"
            if route == "followup":
                app, token = self.settings.application_id, addr.extra["interaction_token"]
                url = self._url(f"webhooks/{app}/{token}?wait=true")
                headers = {"content-type": "application/json"}  # the token is the credential
                if original and index == 0:  # the streamed original becomes the reply
                    method, url = "PATCH", self._url(f"webhooks/{app}/{token}/messages/@original")
            else:
                if dm_channel is None:
                    opened = await self._open_dm(http, addr.user_id, timeout_s)
                    if isinstance(opened, ChannelAck):
                        return opened.model_copy(update={"parts_delivered": len(sent)})
                    dm_channel = opened
                url = self._url(f"channels/{dm_channel}/messages")
                headers = self._bot_headers()
            result = await self._request(http, method, url, payload, headers, timeout_s)
            if isinstance(result, ChannelAck):
                return result.model_copy(update={"parts_delivered": len(sent)})
            if method == "PATCH" and _error_code(result) == UNKNOWN_MESSAGE:
                original = False  # deleted meanwhile: the reply is a followup after all
                continue
            if route == "followup" and self._token_expired(result):
                route = "dm"  # expired early (or revoked): the rest goes to the DM
                continue
            ack = self._ack(result)
            if not ack.ok:
                return ack.model_copy(update={"parts_delivered": len(sent)})
            sent += ack.platform_message_ids
            index += 1
        return ChannelAck(
            mode=FailureMode.DELIVERED, platform_message_ids=sent, parts_delivered=len(sent)
        )

    # -- progress --------------------------------------------------------------------------

    def streams_text(self, address: ReplyAddress) -> bool:
        # Only an interaction's own original (a deferred "thinking..."), never a pressed
        # message's, and only while its token is good.
        return (
            self.settings.stream_replies
            and address.extra.get(VIA) != "component"
            and self._token_usable(address, time.time())
        )

    async def progress(
        self,
        http: aiohttp.ClientSession,
        address: ReplyAddress,
        text_so_far: str | None,
        state: ProgressState,
        live: LiveReply,
    ) -> bool:
        """The text so far (its first message's worth) in place of "thinking...". Working and
        done need nothing: the deferral shows the first, the push completes the second; only
        an agent that failed after showing text removes it (no reply will complete it)."""
        if not self.streams_text(address):
            return True
        app, token = self.settings.application_id, address.extra["interaction_token"]
        original = self._url(f"webhooks/{app}/{token}/messages/@original")
        headers = {"content-type": "application/json"}
        if state is ProgressState.DONE and text_so_far is None and live.message is not None:
            gone = await self._request(http, "DELETE", original, None, headers, PROGRESS_TIMEOUT_S)
            return not isinstance(gone, ChannelAck) and 200 <= gone.status < 300
        if state is not ProgressState.STREAMING or not text_so_far:
            return True
        content = split_text(text_so_far, MAX_TEXT, utf16_len)[0]
        if content == live.shown:
            return True
        result = await self._request(
            http,
            "PATCH",
            original,
            {"content": content, "allowed_mentions": {"parse": []}},
            headers,
            PROGRESS_TIMEOUT_S,
        )
        if isinstance(result, ChannelAck) or not 200 <= result.status < 300:
            return False
        body: Any = result.json()
        live.message = str(body.get("id", "@original")) if isinstance(body, dict) else "@original"
        live.shown, live.frames = content, live.frames + 1
        return True

    # -- set-up ----------------------------------------------------------------------------

    async def register(self, http: aiohttp.ClientSession, url: str) -> tuple[bool, str]:
        """Overwrite the global slash commands, then set the Interactions Endpoint URL; Discord
        checks that URL (a PING and a bad signature) before it saves it, so the gateway must be
        reachable there."""
        app = self.settings.application_id
        steps: list[tuple[str, str, object, str]] = [
            ("PUT", f"applications/{app}/commands", COMMANDS, "commands"),
            ("PATCH", "applications/@me", {"interactions_endpoint_url": url}, "endpoint"),
        ]
        for method, path, payload, what in steps:
            result = await self._request(
                http, method, self._url(path), payload, self._bot_headers(), 30.0
            )
            if isinstance(result, ChannelAck):
                return False, f"{what}: {result.detail or 'unreachable'}"
            if not 200 <= result.status < 300:
                return False, f"{what}: {result.status} {_error_message(result)}"
        return True, f"{len(COMMANDS)} commands registered, interactions endpoint set"

    async def check_credentials(
        self, http: aiohttp.ClientSession, url: str, timeout_s: float
    ) -> tuple[bool, str, list[str]]:
        """``GET /applications/@me`` with the bot token (read-only): the token works and
        belongs to ``application_id``, the public key matches, the endpoint URL is ``url``."""
        try:
            async with http.get(
                self._url("applications/@me"),
                headers={"authorization": self._bot_headers()["authorization"]},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                result = HttpResult(resp.status, {}, await resp.content.read(1 << 20))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return False, f"unreachable ({type(exc).__name__})", []
        if not 200 <= result.status < 300:
            return False, f"GET /applications/@me: {result.status} {_error_message(result)}", []
        app: Any = result.json()
        app = app if isinstance(app, dict) else {}
        app_id = str(app.get("id", ""))
        if app_id != self.settings.application_id:
            return False, f"the bot token belongs to application {app_id}, not application_id", []
        if str(app.get("verify_key", "")).lower() != self.settings.public_key:
            return False, "public_key is not the application's (every interaction would be 401)", []
        warnings: list[str] = []
        endpoint = str(app.get("interactions_endpoint_url") or "")
        if not endpoint:
            warnings.append(
                "no interactions endpoint URL: run `switchboard channels register discord`"
            )
        elif endpoint != url:
            warnings.append(f"interactions endpoint is {endpoint}, expected {url}")
        return True, f"application {str(app.get('name', ''))[:60]} ({app_id})", warnings


def _error_code(result: HttpResult) -> int | None:
    body: Any = result.json()
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


def _error_message(result: HttpResult) -> str:
    """Discord's own words for a failed call: the message, and the first field error."""
    body: Any = result.json()
    if not isinstance(body, dict):
        return ""
    message = str(body.get("message", ""))[:200]
    errors = body.get("errors")
    while isinstance(errors, dict) and "_errors" not in errors and errors:
        errors = next(iter(errors.values()))
    if isinstance(errors, dict) and isinstance(errors.get("_errors"), list) and errors["_errors"]:
        first = errors["_errors"][0]
        if isinstance(first, dict):
            message += f": {str(first.get('message', ''))[:200]}"
    return message
