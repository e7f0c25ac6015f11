"""Slack Events API in, Web API ``chat.postMessage`` out (and, in threads, an
``assistant.threads.setStatus`` status line while the agent works).

Inbound ``POST /channels/slack`` is signed: ``X-Slack-Signature`` is ``v0=`` + hex HMAC-SHA256
of ``v0:{X-Slack-Request-Timestamp}:{body}`` with the signing secret, within five minutes.
The message key is ``{channel}.{ts}``: a message subscribed as both ``message.im`` and
``app_mention`` arrives twice with different event ids, and Slack's retries
(``X-Slack-Retry-Num``) repeat the same event; all of them are one run.

An approval prompt (``phase == "approval"``) is posted with Block Kit: its text in a section
and an actions block with Approve and Deny buttons (``action_id`` ``approve``/``deny``,
``value`` the code); ``text`` stays as the notification fallback. A press comes back from
Slack's interactivity request URL, which is this same endpoint: a form body whose ``payload``
field is the ``block_actions`` JSON, signed like events over the raw body. It becomes the
presser's ``/approve CODE`` (or ``/deny CODE``) in the channel (and thread) of the message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from pydantic import Field, SecretStr

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
    answers_request,
    json_answer,
)
from channels.chunking import send_parts, split_text
from channels.http_push import HttpResult, classify_status, parse_retry_after, post
from channels.inbound_body import BodyError, PlatformBody, parse_body
from hosting.models import ChannelRequest, PushRequest, ReplyAddress
from hosting.settings import require_secret

TOLERANCE_S = 300
MAX_TEXT = 4000
IGNORED = Answered(HttpAnswer(status=200))
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>\s*")
REJECTED_ERRORS = {
    "channel_not_found",
    "is_archived",
    "not_in_channel",
    "msg_too_long",
    "no_text",
    "user_not_found",
    "cannot_dm_bot",
    "restricted_action",
}
UNAUTHORIZED_ERRORS = {
    "invalid_auth",
    "token_revoked",
    "not_authed",
    "account_inactive",
    "missing_scope",
    "token_expired",
    "no_permission",
}
TRANSIENT_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
# The approval prompt's instruction (workflows/agent_loop.py), and what its buttons carry.
APPROVAL_CODE = re.compile(r"/approve\s+([A-Za-z0-9]{4,16})\s+or\s+/deny\s+\1\b")
BUTTON_ACTIONS = ("approve", "deny")
BUTTON_VALUE = re.compile(r"^[A-Za-z0-9]{4,16}$")
SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # Slack ids and timestamps, nothing else
MAX_SECTION = 3000  # a section block's text
FORM = "application/x-www-form-urlencoded"
# ReplyAddress.extra keys: the workspace (streams in channels name their recipient's), and of a
# button press the message that carried the buttons and its text (to show it without them).
TEAM_ID, BUTTONS_TS, BUTTONS_TEXT, PRESS = "team_id", "buttons_ts", "buttons_text", "press"
# chat.update refusals that mean "that message cannot take the reply": post it instead.
GONE_ERRORS = {"message_not_found", "cant_update_message", "edit_window_closed", "invalid_ts"}


class SlackEvent(PlatformBody):
    type: str
    user: str | None = Field(default=None, max_length=64)
    text: str | None = Field(default=None, max_length=40_000)
    ts: str | None = Field(default=None, max_length=64)
    thread_ts: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=64)
    channel_type: str | None = None
    subtype: str | None = None
    bot_id: str | None = None


class SlackEnvelope(PlatformBody):
    type: str
    team_id: str | None = Field(default=None, max_length=64)
    challenge: str | None = Field(default=None, max_length=200)
    event_id: str | None = None
    event: SlackEvent | None = None


class SlackId(PlatformBody):
    id: str = Field(max_length=64)


class SlackAction(PlatformBody):
    action_id: str = Field(default="", max_length=255)
    value: str | None = Field(default=None, max_length=2000)
    action_ts: str | None = Field(default=None, max_length=64)


class SlackActionMessage(PlatformBody):
    ts: str | None = Field(default=None, max_length=64)
    thread_ts: str | None = Field(default=None, max_length=64)
    text: str | None = Field(default=None, max_length=40_000)  # our prompt's fallback text


class SlackInteraction(PlatformBody):
    """The ``payload`` of an interactivity request (``block_actions`` is a button press)."""

    type: str
    user: SlackId | None = None
    channel: SlackId | None = None
    message: SlackActionMessage | None = None
    actions: list[SlackAction] = Field(default_factory=list, max_length=10)


def approval_blocks(text: str) -> list[dict[str, Any]] | None:
    """The prompt (already escaped) with Approve/Deny buttons, or None if it names no code."""
    match = APPROVAL_CODE.search(text)
    if match is None:
        return None
    code = match.group(1)
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_SECTION]}},
        {
            "type": "actions",
            "block_id": f"approval-{code}",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": code,
                },
                {
                    "type": "button",
                    "action_id": "deny",
                    "text": {"type": "plain_text", "text": "Deny"},
                    "style": "danger",
                    "value": code,
                },
            ],
        },
    ]


def escape(text: str) -> str:
    """Slack reads ``&``, ``<`` and ``>`` as markup: outgoing text escapes exactly these three."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return "v0=" + mac.hexdigest()


class SlackChannelSettings(LiveReplySettings):
    """``[channels.slack]``: the app's signing secret and bot token."""

    signing_secret: SecretStr = SecretStr("")
    bot_token: SecretStr = SecretStr("")
    api_base_url: str = "https://slack.com/api"
    stream_replies: bool = Field(
        default=True,
        description="in threads, stream the reply with chat.startStream while the agent writes",
    )


class SlackChannel(BaseChannel):
    name = "slack"
    progress_renew_s = 60.0  # Slack drops a status after two minutes without a message

    def __init__(self, *, settings: SlackChannelSettings) -> None:
        super().__init__(settings=settings)
        self.settings: SlackChannelSettings = settings
        self._secret = require_secret(
            settings.signing_secret, "channels.slack.signing_secret"
        ).encode()
        require_secret(settings.bot_token, "channels.slack.bot_token", "xoxb-...")
        self.progress_every_s = settings.progress_every_s

    def _verified(self, http: InboundHttp) -> bool:
        stamp = http.headers.get("X-Slack-Request-Timestamp", "")
        presented = http.headers.get("X-Slack-Signature", "")
        try:
            fresh = abs(http.received_at - int(stamp)) <= TOLERANCE_S
        except ValueError:
            return False
        expected = signature(self._secret, stamp, http.body)
        return hmac.compare_digest(presented.encode(), expected.encode()) and fresh

    async def receive(self, http: InboundHttp) -> InboundOutcome:
        if not self._verified(http):
            return Refused(401, "invalid signature")
        if FORM in http.headers.get("Content-Type", "").lower() or http.body.startswith(
            b"payload="
        ):
            return self._interaction(http)
        try:
            envelope = parse_body(SlackEnvelope, http.body)
        except BodyError as exc:
            return Refused(400, str(exc))
        if envelope.type == "url_verification":
            return Answered(json_answer(200, {"challenge": envelope.challenge or ""}))
        event = envelope.event
        if envelope.type != "event_callback" or event is None:
            return IGNORED  # app_rate_limited and other notices
        if (
            event.bot_id is not None  # bots, ours included: never answer ourselves
            or event.subtype is not None  # edits, joins, deletions: not user text
            or not (event.user and event.text and event.ts and event.channel)
        ):
            return IGNORED
        direct = event.channel_type == "im"
        in_channel_ok = self.settings.accept_in_group == "all"
        wanted = event.type == "app_mention" or (
            event.type == "message" and (direct or in_channel_ok)
        )
        if not wanted:
            return IGNORED
        text = unescape(_MENTION.sub("", event.text).strip())
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=f"{event.channel}.{event.ts}",
                user_id=event.user,
                conversation_id=event.channel,
                thread_id=event.thread_ts,
                is_direct=direct,
                text=text,
                reply_to=ReplyAddress(
                    channel=self.name,
                    user_id=event.user,
                    conversation_id=event.channel,
                    thread_id=event.thread_ts,
                    extra={TEAM_ID: envelope.team_id} if envelope.team_id else {},
                ),
            )
        )

    def _interaction(self, http: InboundHttp) -> InboundOutcome:
        """An interactivity request (signed like events, over the raw form body). Only a press
        of our Approve/Deny buttons becomes a message; everything else is acknowledged."""
        try:
            fields = parse_qs(http.body.decode("utf-8"), max_num_fields=20)
            payload = parse_body(SlackInteraction, fields["payload"][0].encode())
        except (UnicodeDecodeError, ValueError, KeyError, IndexError):
            return Refused(400, "interactivity body has no readable payload")
        action = next((a for a in payload.actions if a.action_id in BUTTON_ACTIONS), None)
        if (
            payload.type != "block_actions"
            or action is None
            or payload.user is None
            or payload.channel is None
            or not BUTTON_VALUE.match(action.value or "")
            or not SAFE_KEY.match(payload.channel.id)
            or not SAFE_KEY.match(action.action_ts or "")
        ):
            return IGNORED
        user, channel = payload.user.id, payload.channel.id
        shown = payload.message
        thread = shown.thread_ts if shown else None
        # A press has no message ts of its own: its action_ts, apart from message keys.
        key = f"{channel}.{action.action_ts}.{action.action_id}"
        extra = (
            {BUTTONS_TS: shown.ts, BUTTONS_TEXT: shown.text, PRESS: key}
            if shown and shown.ts and SAFE_KEY.match(shown.ts) and shown.text
            else {}
        )
        return Accepted(
            ChannelRequest(
                tenant=http.tenant,
                channel=self.name,
                message_key=key,
                user_id=user,
                conversation_id=channel,
                thread_id=thread,
                is_direct=channel.startswith("D"),
                text=f"/{action.action_id} {action.value}",
                reply_to=ReplyAddress(
                    channel=self.name,
                    user_id=user,
                    conversation_id=channel,
                    thread_id=thread,
                    extra=extra,
                ),
            )
        )

    # -- push ------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self.settings.bot_token.get_secret_value()}",
            "content-type": "application/json; charset=utf-8",
        }

    def _url(self, method: str) -> str:
        return f"{self.settings.api_base_url.rstrip('/')}/{method}"

    def _ack(self, result: HttpResult) -> tuple[ChannelAck, dict[str, Any]]:
        retry_after = parse_retry_after(result.headers.get("retry-after"))
        if result.status != 200:
            return classify_status(result.status, retry_after), {}
        body: Any = result.json()
        if not isinstance(body, dict):
            return ChannelAck(mode=FailureMode.TRANSIENT, detail="unreadable answer"), {}
        if body.get("ok"):
            return ChannelAck(
                mode=FailureMode.DELIVERED, platform_message_ids=[str(body.get("ts", ""))]
            ), body
        # Slack reports most errors as HTTP 200 with ok: false.
        error = str(body.get("error", "unknown"))
        if error == "ratelimited":
            return ChannelAck(
                mode=FailureMode.RATE_LIMITED, retry_after_s=retry_after, detail=error
            ), body
        if error in UNAUTHORIZED_ERRORS:
            return ChannelAck(mode=FailureMode.UNAUTHORIZED, detail=error), body
        if error in TRANSIENT_ERRORS:
            return ChannelAck(mode=FailureMode.TRANSIENT, detail=error), body
        return ChannelAck(mode=FailureMode.REJECTED, detail=error), body

    async def _call(
        self, http: aiohttp.ClientSession, method: str, payload: dict[str, Any], timeout_s: float
    ) -> tuple[ChannelAck, dict[str, Any]]:
        result = await post(
            http,
            self._url(method),
            body=json.dumps(payload).encode(),
            headers=self._headers(),
            timeout_s=timeout_s,
        )
        if isinstance(result, ChannelAck):
            return result, {}
        return self._ack(result)

    async def push(self, http: aiohttp.ClientSession, push: PushRequest) -> ChannelAck:
        addr = push.address
        channel = addr.conversation_id
        if channel[:1] in ("U", "W"):  # a user, not a conversation: open the DM first
            ack, body = await self._call(
                http, "conversations.open", {"users": channel}, push.policy.timeout_s
            )
            if not ack.ok:
                return ack
            channel = str((body.get("channel") or {}).get("id", ""))
        if push.skip_parts == 0 and answers_request(push, addr.extra.get(PRESS, "")):
            await self._clear_buttons(http, channel, addr)
        parts = split_text(escape(push.text), MAX_TEXT)

        async def send(index: int, part: str) -> ChannelAck:
            if push.live_message and index == 0:
                ack = await self._finish_stream(http, channel, push.live_message, part, push)
                if ack is not None:
                    return ack
            payload: dict[str, Any] = {"channel": channel, "text": part}
            if push.phase == "approval" and index == len(parts) - 1:
                blocks = approval_blocks(part)  # ``text`` stays: notifications and fallback
                if blocks is not None:
                    payload["blocks"] = blocks
            if addr.thread_id:
                payload["thread_ts"] = addr.thread_id
            ack, _ = await self._call(http, "chat.postMessage", payload, push.policy.timeout_s)
            return ack

        return await send_parts(parts, push.skip_parts, send)

    async def _finish_stream(
        self, http: aiohttp.ClientSession, channel: str, ts: str, text: str, push: PushRequest
    ) -> ChannelAck | None:
        """The reply was streamed into message ``ts``: stop the stream (a stopped or expired
        one refuses, which is fine) and make the message exactly the reply. None: that message
        is gone, so the reply is posted as usual."""
        stop = {"channel": channel, "ts": ts}
        await self._call(http, "chat.stopStream", stop, push.policy.timeout_s)
        update = {"channel": channel, "ts": ts, "text": text}
        ack, _ = await self._call(http, "chat.update", update, push.policy.timeout_s)
        if ack.mode is FailureMode.REJECTED and ack.detail in GONE_ERRORS:
            return None
        return ack

    async def _clear_buttons(
        self, http: aiohttp.ClientSession, channel: str, addr: ReplyAddress
    ) -> None:
        """Before answering a press, its message keeps the prompt and loses the buttons (best
        effort: a failure costs the buttons' removal, never the answer)."""
        ts, text = addr.extra.get(BUTTONS_TS), addr.extra.get(BUTTONS_TEXT)
        if not ts or not text:
            return
        section = {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_SECTION]}}
        update = {"channel": channel, "ts": ts, "text": text, "blocks": [section]}
        await self._call(http, "chat.update", update, PROGRESS_TIMEOUT_S)

    # -- progress --------------------------------------------------------------------------

    def streams_text(self, address: ReplyAddress) -> bool:
        # A native stream is a thread reply: top-level messages and DMs outside a thread get
        # nothing (a status line needs a thread too).
        return self.settings.stream_replies and bool(address.thread_id)

    async def progress(
        self,
        http: aiohttp.ClientSession,
        address: ReplyAddress,
        text_so_far: str | None,
        state: ProgressState,
        live: LiveReply,
    ) -> bool:
        """A status line under the thread while the agent works, then (``stream_replies``) the
        reply streamed into a message of its own, which the push completes. Slack clears the
        status when the reply is posted; after a stream, or when the run ends without a reply,
        it is cleared here (and a stream without a reply removed)."""
        if not address.thread_id:
            return True  # a status needs a thread; top-level replies show none
        if state is ProgressState.DONE:
            if text_so_far is not None and live.message is None:
                return True  # the push posts the reply, which ends the status
            if text_so_far is None and live.message is not None:
                return await self._drop_stream(http, address.conversation_id, live.message)
        elif text_so_far and self.streams_text(address):
            return await self._stream(http, address, text_so_far, live)
        # Done: cleared (a stream the push completes may not end the status by itself).
        status = "" if state is ProgressState.DONE else "is thinking…"
        payload = {
            "channel_id": address.conversation_id,
            "thread_ts": address.thread_id,
            "status": status,
        }
        ack, _ = await self._call(http, "assistant.threads.setStatus", payload, PROGRESS_TIMEOUT_S)
        return ack.ok

    async def _stream(
        self, http: aiohttp.ClientSession, address: ReplyAddress, text: str, live: LiveReply
    ) -> bool:
        """Start the stream with the text so far, or append what is new since the last frame."""
        new = text[len(live.shown) :] if text.startswith(live.shown) else ""
        if not new or len(text) > MAX_TEXT:
            return True  # nothing new; or past one message, where the push takes over
        channel = address.conversation_id
        if live.message is None:
            payload = {"channel": channel, "thread_ts": address.thread_id, "markdown_text": new}
            if TEAM_ID in address.extra:  # required in channels, harmless in DMs
                payload |= {
                    "recipient_team_id": address.extra[TEAM_ID],
                    "recipient_user_id": address.user_id,
                }
            ack, body = await self._call(http, "chat.startStream", payload, PROGRESS_TIMEOUT_S)
            if ack.ok and body.get("ts"):
                live.message = str(body["ts"])
        else:
            payload = {"channel": channel, "ts": live.message, "markdown_text": new}
            ack, _ = await self._call(http, "chat.appendStream", payload, PROGRESS_TIMEOUT_S)
        if ack.ok:
            live.shown, live.frames = text, live.frames + 1
        return ack.ok

    async def _drop_stream(self, http: aiohttp.ClientSession, channel: str, ts: str) -> bool:
        """The agent failed after streaming: no reply follows, so its partial message goes."""
        message = {"channel": channel, "ts": ts}
        await self._call(http, "chat.stopStream", message, PROGRESS_TIMEOUT_S)
        ack, _ = await self._call(http, "chat.delete", message, PROGRESS_TIMEOUT_S)
        return ack.ok

    async def check_credentials(
        self, http: aiohttp.ClientSession, url: str, timeout_s: float
    ) -> tuple[bool, str, list[str]]:
        """``auth.test`` with the bot token (read-only). Slack's request URL is app
        configuration the bot token cannot read, so ``url`` is not checked."""
        ack, body = await self._call(http, "auth.test", {}, timeout_s)
        if not ack.ok:
            return False, f"auth.test: {ack.mode.value} ({ack.detail or 'no detail'})", []
        warnings = [] if body.get("bot_id") else ["the token is not a bot token (xoxb-...)"]
        return True, f"auth.test: team {body.get('team', '?')} as {body.get('user', '?')}", warnings
